"""Uncertainty for paired comparisons: the same items measured two ways (plain
and with an intervention), a statistic of them, and a bootstrap interval over
the items.

The unit of resampling is the *item* (a question, a prompt, a conversation),
never the token: tokens of one reply are not independent, and resampling
items keeps each item's plain and intervened measurements together (a paired
bootstrap). Intervals are percentile intervals of ``n_boot`` resamples drawn
with a seeded generator, so a report is reproducible.

* :func:`bootstrap` -- the general form: columns of per-item values and a
  statistic computed from their (resampled) sums or means.
* :func:`mean_interval`, :func:`paired_difference`, :func:`ratio_change` --
  the three shapes the evaluation needs: a mean over items, the mean of
  per-item differences, and the relative change of a ratio of sums
  (perplexity from summed log-likelihoods and token counts).
* :class:`Interval` carries the estimate, the interval and the sample size and
  says in words whether the interval excludes a value (:meth:`Interval.verdict`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from axis_steer.runtime.checks import as_float, as_int

__all__ = ["Interval", "bootstrap", "mean_interval", "paired_difference", "ratio_change"]

#: resamples drawn by default; percentile ends at 95% move by well under a tenth of the width
N_BOOT = 2000


@dataclass(frozen=True)
class Interval:
    """A statistic of ``n`` items with its bootstrap interval ``[low, high]``
    at ``level`` (0.95 = 95%)."""

    estimate: float
    low: float
    high: float
    n: int
    level: float = 0.95
    n_boot: int = N_BOOT
    method: str = "paired bootstrap over items, percentile interval"

    def excludes(self, value: float = 0.0) -> bool:
        """Whether ``value`` lies outside the interval (the difference is
        distinguishable from it at this sample size)."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return False
        return value < self.low or value > self.high

    def degenerate(self) -> bool:
        """Every resample gave the same value (e.g. no item changed)."""
        return self.low == self.high

    def format(self, scale: float = 1.0, digits: int = 2, unit: str = "", signed: bool = True) -> str:
        """``"+0.30% [-0.10, +0.80]"`` with values times ``scale``."""
        if not math.isfinite(self.estimate):
            return "n/a"
        f = f"{{:{'+' if signed else ''}.{digits}f}}"
        return (
            f"{f.format(self.estimate * scale)}{unit} [{f.format(self.low * scale)}, "
            f"{f.format(self.high * scale)}]"
        )

    def verdict(
        self,
        what: str,
        *,
        scale: float = 1.0,
        digits: int = 2,
        unit: str = "",
        null: float = 0.0,
        null_text: str = "zero",
        signed: bool = True,
    ) -> str:
        """A plain sentence: ``"capping changes perplexity by +0.30% [-0.10,
        +0.80] (95% interval, n=40): not distinguishable from zero at n=40"``."""
        level = f"{100 * self.level:g}% interval"
        head = f"{what} {self.format(scale, digits, unit, signed)} ({level}, n={self.n})"
        if self.n == 0 or not math.isfinite(self.estimate):
            return f"{what}: no items"
        if self.degenerate() and self.low == null:
            return f"{head}: identical on every item (exactly {null_text})"
        if self.excludes(null):
            side = "above" if self.low > null else "below"
            return f"{head}: distinguishable from {null_text} at n={self.n} ({side} it)"
        return f"{head}: not distinguishable from {null_text} at n={self.n}"

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        """``"0.338 [0.310, 0.367]"``; ``"-"`` with no items."""
        if self.n == 0:
            return "-"
        return self.format(digits=3, signed=False)


def _resample_index(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap(
    columns: Mapping[str, Sequence[float]],
    statistic: Callable[[Mapping[str, np.ndarray]], np.ndarray | float],
    *,
    n_boot: int = N_BOOT,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """The statistic of per-item ``columns`` with a percentile interval.

    ``columns`` are equal-length per-item values (one entry per item).
    ``statistic`` receives the columns as float64 arrays whose *last* axis runs
    over items -- ``(n,)`` for the estimate, ``(n_boot, n)`` for the resamples
    -- and returns one value per leading index (reduce with ``axis=-1``).
    Items are resampled with replacement, all columns with the same indices.
    """
    level = as_float(level, "level", min=0.0, max=1.0, min_open=True, max_open=True,
                     expected="a fraction in (0, 1), e.g. 0.95")
    n_boot = as_int(n_boot, "n_boot", min=1)
    cols = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
    sizes = {k: v.shape for k, v in cols.items()}
    if not cols or len({s for s in sizes.values()}) != 1 or len(next(iter(sizes.values()))) != 1:
        raise ValueError(f"columns: {sizes} (expected one-dimensional columns of equal length, one value per item)")
    for k, v in cols.items():
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            raise ValueError(f"{k}: non-finite values at items {bad[:5].tolist()} "
                             "(expected a finite result per item; drop the items without one)")
    n = len(next(iter(cols.values())))
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level, n_boot)
    est = float(np.asarray(statistic(cols)))
    idx = _resample_index(n, n_boot, seed)
    boot = np.asarray(statistic({k: v[idx] for k, v in cols.items()}), dtype=np.float64).reshape(n_boot)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return Interval(est, math.nan, math.nan, n, level, n_boot)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return Interval(est, float(lo), float(hi), n, level, n_boot)


def mean_interval(x: Sequence[float], **kw) -> Interval:
    """The mean of per-item values, with its interval."""
    return bootstrap({"x": x}, lambda c: c["x"].mean(-1), **kw)


def paired_difference(plain: Sequence[float], intervened: Sequence[float], **kw) -> Interval:
    """``mean(intervened - plain)`` over items (e.g. accuracy with minus
    without caps, 0/1 per question), with its paired interval."""
    a, b = np.asarray(plain, dtype=np.float64), np.asarray(intervened, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"plain has {a.shape} values, intervened {b.shape} (expected one of each per item)")
    return bootstrap({"intervened - plain": b - a}, lambda c: c["intervened - plain"].mean(-1), **kw)


def ratio_change(
    num_plain: Sequence[float],
    num_intervened: Sequence[float],
    den: Sequence[float],
    *,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    **kw,
) -> Interval:
    """The relative change ``g(Σ num_i / Σ den) / g(Σ num_p / Σ den) - 1`` over
    items, with its paired interval; ``g`` is ``transform`` (identity by
    default). Perplexity: ``num`` = summed negative log-likelihood of an item's
    tokens, ``den`` = its token count, ``transform=np.exp``."""
    g = transform or (lambda v: v)

    def stat(c: Mapping[str, np.ndarray]) -> np.ndarray:
        d = c["den"].sum(-1)
        return g(c["num_intervened"].sum(-1) / d) / g(c["num_plain"].sum(-1) / d) - 1.0

    return bootstrap({"num_plain": num_plain, "num_intervened": num_intervened, "den": den}, stat, **kw)
