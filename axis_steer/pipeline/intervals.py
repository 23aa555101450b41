"""Bootstrap confidence intervals for per-item results: a mean, and the mean
difference of two conditions measured on the same items (paired).

The items (prompts, conversations) are resampled with replacement; the
interval is the percentile interval of the resampled means. Paired: both
conditions are resampled with the same indices, so what the items share (an
easy prompt is easy for both) cancels out of the difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from axis_steer.runtime.checks import as_float, as_int

__all__ = ["Interval", "bootstrap_mean", "paired_difference"]


@dataclass
class Interval:
    """A mean over ``n`` items and its bootstrap interval ``[lo, hi]`` at ``level``."""

    mean: float
    lo: float
    hi: float
    n: int
    level: float = 0.95

    def __str__(self) -> str:
        if self.n == 0:
            return "-"
        return f"{self.mean:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def _values(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{what}: shape {a.shape} (expected one value per item, a 1-d array)")
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: non-finite values at items {np.flatnonzero(~np.isfinite(a))[:5].tolist()} "
                         "(expected a finite result per item; drop the items without one)")
    return a


def bootstrap_mean(x: Any, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Interval:
    """The mean of ``x`` (one value per item) with its percentile bootstrap interval."""
    a = _values(x, "x")
    level = as_float(level, "level", min=0.0, max=1.0, min_open=True)
    n_boot = as_int(n_boot, "n_boot", min=1)
    if a.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level)
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(a.mean()), float(lo), float(hi), int(a.size), level)


def paired_difference(x: Any, y: Any, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Interval:
    """``mean(x - y)`` over items measured under two conditions, with its
    paired bootstrap interval (``x[i]`` and ``y[i]``: the same item)."""
    a, b = _values(x, "x"), _values(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"x and y: {a.size} and {b.size} items (expected the same items under two conditions)")
    return bootstrap_mean(a - b, level=level, n_boot=n_boot, seed=seed)
