"""The paper's phenomena on the built-in persona model, end to end (``run_demo(quick=True)``).

One pass of the whole job: the axis from the model's own judged responses, checked on
held-out questions; steering both ways; caps calibrated with the paper's recipe, compared
with no caps on drifting conversations, role prompts and default prompts; the capability
cost. Thresholds are the project's claims for this model (see its model card)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from axis_steer.personas.demo import auc, run_demo


def test_auc_counts_pairs_and_ties_half():
    assert auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auc([1.0], [2.0]) == 0.0
    assert auc([1.0, 2.0], [1.0]) == 0.75  # one tie (half) and one win
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 50), rng.normal(0, 1, 70)
    # the rank-sum (Mann-Whitney) form
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]))) + 1
    u = ranks[:50].sum() - 50 * 51 / 2
    assert auc(pos, neg) == pytest.approx(u / (50 * 70))
    assert np.isnan(auc([], [1.0]))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_demo(out, quick=True)


def test_axis_separates_default_from_roles_on_heldout_questions(demo):
    assert demo.auc >= 0.95
    assert demo.cos_pc1 >= 0.7


def test_steering_moves_style_both_ways(demo):
    st = demo.steering
    # away from the Assistant: role vocabulary appears in default-prompted replies
    assert st["default_role_rate"]["away"] > st["default_role_rate"]["plain"] + 0.05
    assert st["default_in_role"]["away"] > st["default_in_role"]["plain"]
    # toward it: role style fades under role system prompts
    assert st["role_adherence"]["toward"] < st["role_adherence"]["plain"] - 0.3


def test_caps_reduce_role_style_and_drift(demo):
    rr = demo.role_prompt_rate
    assert rr["capped"] < rr["uncapped"] - 0.1
    da = demo.drift_role_rate_all
    assert da["capped"] < da["uncapped"]
    # the caps hold the drifting conversations' projection up after the first turn
    pu, pc = demo.drift_projection["uncapped"], demo.drift_projection["capped"]
    assert all(c > u for c, u in zip(pc[1:], pu[1:]))
    assert min(pc) > min(pu) + 0.5


def test_caps_leave_default_replies_and_capability_almost_unchanged(demo):
    ds = demo.default_assistant_style
    assert ds["capped"] >= ds["uncapped"] - 0.1
    assert abs(demo.ppl_change) <= 0.01
    assert demo.kl_mean < 0.01
    assert demo.agreement >= 0.5
    assert 0.0 < demo.fire_rate < 0.5


def test_the_latch_leaves_default_prompts_alone_and_catches_drift(demo):
    lt, c = demo.latch, demo.comparison
    # the calibration's proposal: no more than 2% of default conversations, most role conversations
    assert lt["default_rate"] <= 0.02 and lt["role_rate"] >= 0.5
    # on default prompts the latched caps touch far fewer tokens and replies than always-on caps
    assert c["fired"]["latched"][0] < 0.25 * c["fired"]["always-on"][0]
    assert c["changed"]["latched"][0] < c["changed"]["always-on"][0]
    assert c["fired"]["no caps"] == [0.0, 0.0, 0.0] and c["changed"]["no caps"][0] == 0.0
    # on drift conversations the latched caps still hold some of the persona
    assert c["drift"]["latched"][0] < c["drift"]["no caps"][0]
    for name in ("fired", "changed", "drift"):
        for m, lo, hi in c[name].values():
            assert lo <= m <= hi


def test_a_folder_from_other_settings_is_refused(demo):
    # checked before anything is loaded or written
    with pytest.raises(ValueError, match="other settings"):
        run_demo(demo.out, quick=False)
    assert json.loads((demo.out / "demo_settings.json").read_text())["quick"] is True


def test_outputs_written(demo):
    for name in (
        "axis.safetensors",
        "drift.png",
        "summary.json",
        "steering_examples.json",
        "drift_examples.json",
        "plots/variance_explained.png",
        "calibration/capping_config.pt",
        "eval/report.json",
        "comparison.json",
    ):
        assert (demo.out / name).is_file(), name
    summary = json.loads((demo.out / "summary.json").read_text())
    assert summary["layer"] == demo.layer
    assert len(demo.lines()) >= 7
