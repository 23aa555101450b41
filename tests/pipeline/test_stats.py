"""The bootstrap intervals of axis_steer.pipeline.stats against distributions whose
answers are known: coverage of the true value, width against the normal-theory
width, pairing, ratios of sums, degenerate samples and the verdict sentences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from axis_steer.pipeline.stats import (
    Interval,
    bootstrap,
    mean_interval,
    paired_difference,
    ratio_change,
)


def test_the_interval_covers_a_known_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    trials = 300
    for t in range(trials):
        x = rng.normal(2.0, 1.0, size=60)
        iv = mean_interval(x, n_boot=500, seed=t)
        hits += iv.low <= 2.0 <= iv.high
    # percentile intervals undercover slightly at n=60 (about 94%); 300 trials: sd ~1.4 points
    assert 0.89 <= hits / trials <= 0.98


def test_the_width_matches_the_normal_theory_width():
    x = np.random.default_rng(2).exponential(1.0, size=400)
    iv = mean_interval(x, n_boot=4000)
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert iv.estimate == pytest.approx(x.mean())
    assert (iv.high - iv.low) == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_pairing_removes_the_shared_item_effect():
    rng = np.random.default_rng(3)
    item = rng.normal(0, 5, size=200)  # large between-item spread, shared by both
    plain = item + rng.normal(0, 0.1, size=200)
    capped = item + 0.05 + rng.normal(0, 0.1, size=200)
    iv = paired_difference(plain, capped)
    assert iv.estimate == pytest.approx(0.05, abs=0.02)
    assert iv.high - iv.low < 0.06  # an unpaired interval would be ~100x wider
    assert iv.excludes(0.0)


def test_a_zero_difference_is_not_distinguishable_from_zero():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 2, size=100).astype(float)
    flip = rng.random(100) < 0.1
    b = np.where(flip, 1 - a, a)  # 10% of answers flip, in both directions
    iv = paired_difference(a, b, seed=7)
    assert iv.low < 0 < iv.high or iv.estimate == 0
    assert "not distinguishable from zero at n=100" in iv.verdict("capping changes accuracy by")


def test_identical_items_give_a_degenerate_interval_and_say_so():
    iv = paired_difference([1, 0, 1, 1], [1, 0, 1, 1])
    assert (iv.estimate, iv.low, iv.high) == (0.0, 0.0, 0.0)
    assert iv.degenerate() and not iv.excludes(0.0)
    assert "identical on every item" in iv.verdict("change")


def test_ratio_change_is_the_perplexity_ratio_and_resamples_whole_items():
    rng = np.random.default_rng(5)
    tokens = rng.integers(5, 50, size=80).astype(float)
    nll_p = tokens * 2.0 + rng.normal(0, 1, size=80)
    nll_i = nll_p + tokens * 0.01  # +0.01 nats per token: perplexity x e^0.01
    iv = ratio_change(nll_p, nll_i, tokens, transform=np.exp)
    assert iv.estimate == pytest.approx(math.exp(0.01) - 1, rel=1e-9)
    assert iv.low == pytest.approx(iv.high, rel=1e-6)  # the shift is the same on every item
    noisy = nll_i + rng.normal(0, 1, size=80)
    iv2 = ratio_change(nll_p, noisy, tokens, transform=np.exp)
    assert iv2.low < math.exp(0.01) - 1 < iv2.high


def test_seeded_and_reproducible():
    x = np.arange(30.0)
    assert mean_interval(x, seed=3) == mean_interval(x, seed=3)
    assert mean_interval(x, seed=3) != mean_interval(x, seed=4)


def test_bootstrap_checks_its_columns():
    with pytest.raises(ValueError, match="equal length"):
        bootstrap({"a": [1, 2], "b": [1]}, lambda c: c["a"].mean(-1))
    with pytest.raises(ValueError, match="level"):
        mean_interval([1.0], level=95)
    with pytest.raises(ValueError, match="one of each per item"):
        paired_difference([1, 2], [1])
    with pytest.raises(ValueError, match="level"):
        mean_interval([1.0], level=0.0)
    with pytest.raises(ValueError, match=r"level = 1\.0 is outside \(0, 1\)"):
        mean_interval([1.0], level=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        mean_interval([1.0], n_boot=0)
    with pytest.raises(ValueError, match="x: non-finite values at items \\[1\\]"):
        mean_interval([1.0, math.nan])
    with pytest.raises(ValueError, match="intervened - plain: non-finite values at items \\[1\\]"):
        paired_difference([1.0, math.inf], [1.0, 2.0])
    with pytest.raises(ValueError, match="one-dimensional"):
        mean_interval([[1.0, 2.0]])
    empty = mean_interval([])
    assert str(empty) == "-"
    assert empty.n == 0 and math.isnan(empty.estimate)
    assert "no items" in empty.verdict("x")


def test_verdict_wording_and_format():
    iv = Interval(0.003, -0.001, 0.008, 40)
    assert str(iv) == "0.003 [-0.001, 0.008]"
    assert iv.format(100, 1, "%") == "+0.3% [-0.1, +0.8]"
    s = iv.verdict("capping changes perplexity by", scale=100, digits=1, unit="%")
    assert s == "capping changes perplexity by +0.3% [-0.1, +0.8] (95% interval, n=40): not distinguishable from zero at n=40"
    up = Interval(0.02, 0.01, 0.03, 50)
    assert up.verdict("d").endswith("distinguishable from zero at n=50 (above it)")
    assert Interval(0.9, 0.8, 0.95, 10).verdict("agreement", null=1.0, null_text="100%", signed=False).endswith(
        "distinguishable from 100% at n=10 (below it)"
    )
