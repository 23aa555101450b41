"""Detection thresholds for drift policies (:mod:`axis_steer.runtime.policies`),
from a run's own conversations.

A latch (no release) ever latches on a conversation exactly when some run of
``k`` consecutive real tokens has a signal below the threshold: when the
threshold is above the conversation's *margin*,

    margin = min over runs of k consecutive signals of their max

(the signal: each token's projection at the detection layer, or with
``window=W`` the running mean of the last ``W``; :func:`latch_margins`). So
the fraction of conversations that would ever latch at threshold ``t`` is the
fraction of margins below ``t``, exactly, for every ``t`` at once. The
projections are those the latch sees during generation: every token of the
rendered conversation (system, user and assistant turns), through the core's
monitoring hooks (:func:`axis_steer.pipeline.project.project_conversations`).

:func:`calibrate_latch` proposes, for a detection layer, ``k`` and window,
the highest threshold at which at most ``max_rate`` of the default-Assistant
conversations would ever latch, and reports how many role conversations
would latch there (how much drift it catches), over a small grid of windows
and ``k`` too. :func:`axis_steer.pipeline.calibrate.calibrate` runs it and
writes it into the calibration report.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from axis_steer.pipeline.project import project_conversations
from axis_steer.runtime.checks import as_float, as_int, as_layer, as_positive_int
from axis_steer.runtime.hooks import Attachment

__all__ = ["LatchCalibration", "LatchChoice", "calibrate_latch", "latch_margins", "latch_rates", "propose_threshold"]

#: The windows and k the report tabulates.
GRID = ((1, 1), (1, 3), (4, 1), (4, 3), (8, 1), (8, 3), (16, 1), (16, 3))


def _signal(p: np.ndarray, window: int) -> np.ndarray:
    """The latch's signal per real token (NaN where it has none), as the core
    computes it: the token's projection, or the running float64 mean of the
    last ``window`` finite projections once that many were seen."""
    p = np.asarray(p, dtype=np.float64)
    if window == 1:
        return p
    out = np.full(p.shape, np.nan)
    fin = np.flatnonzero(np.isfinite(p))
    if fin.size >= window:
        csum = np.concatenate([[0.0], np.cumsum(p[fin])])
        out[fin[window - 1 :]] = (csum[window:] - csum[:-window]) / window
    return out


def latch_margins(projections: Sequence[np.ndarray], *, k: int, window: int) -> np.ndarray:
    """Per conversation (a ``(n_tokens,)`` array of detection projections of
    its real tokens, in order), the threshold above which a latch with ``k``
    and ``window`` latches on it: ``+inf`` never binds (no run of ``k``
    signals); a latch at threshold ``t`` latches iff ``margin < t``."""
    k = as_positive_int(k, "k")
    window = as_positive_int(window, "window")
    out = np.full(len(projections), np.inf)
    for c, p in enumerate(projections):
        s = _signal(p, window)
        if s.size < k:
            continue
        # runs of k consecutive tokens with a signal (NaN breaks a run)
        runs = np.lib.stride_tricks.sliding_window_view(s, k)
        ok = np.isfinite(runs).all(1)
        if ok.any():
            out[c] = float(runs[ok].max(1).min())
    return out


def latch_rates(margins: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """The fraction of conversations that latch at each threshold (float32, as
    the kernels hold it)."""
    m = np.asarray(margins, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float32).astype(np.float64)
    if m.size == 0:
        return np.full(t.shape, np.nan)
    return (m[None, :] < t[:, None]).mean(1)


def propose_threshold(margins: np.ndarray, max_rate: float) -> float:
    """The highest float32 threshold at which at most ``max_rate`` of the
    conversations latch (NaN when there are none)."""
    m = np.sort(np.asarray(margins, dtype=np.float64))
    if m.size == 0:
        return math.nan
    allowed = int(math.floor(max_rate * m.size + 1e-9))
    if allowed >= m.size or not math.isfinite(m[allowed]):
        finite = m[np.isfinite(m)]
        return float(np.float32(finite.max() + 1.0)) if finite.size else math.nan
    t = np.float32(m[allowed])
    if float(t) > m[allowed]:  # rounding up would let that conversation latch
        t = np.nextafter(t, np.float32(-np.inf))
    return float(t)


@dataclass
class LatchChoice:
    """One (window, k): the proposed threshold and what latches there."""

    window: int
    k: int
    threshold: float
    default_rate: float  #: fraction of default conversations that would ever latch
    role_rate: float  #: fraction of role conversations that would


@dataclass
class LatchCalibration:
    """Detection thresholds for a latch at ``layer`` (see the module docs):
    ``proposed`` for the asked ``window`` and ``k``, the curve of latch rates
    over ``thresholds`` for them, and ``grid`` (other windows and ``k``)."""

    layer: int
    window: int
    k: int
    max_rate: float
    n_default: int
    n_role: int
    proposed: LatchChoice
    thresholds: list[float] = field(default_factory=list)
    default_rate: list[float] = field(default_factory=list)
    role_rate: list[float] = field(default_factory=list)
    grid: list[LatchChoice] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["what"] = (
            "fraction of conversations a latch (no release) would ever latch on, at each detection threshold; "
            "proposed: the highest threshold with at most max_rate of the default conversations latching"
        )
        return d

    def __str__(self) -> str:
        p = self.proposed
        return (
            f"latch at layer {self.layer} (window {self.window}, k {self.k}): proposed threshold {p.threshold:.4g}, "
            f"where {p.default_rate:.1%} of {self.n_default} default conversations and {p.role_rate:.1%} of "
            f"{self.n_role} role conversations would latch (at most {self.max_rate:.0%} default allowed)"
        )

    def table(self) -> str:
        lines = [f"{'window':>6} {'k':>3} {'threshold':>10} {'default':>8} {'roles':>7}"]
        for c in self.grid:
            lines.append(f"{c.window:>6} {c.k:>3} {c.threshold:>10.4g} {c.default_rate:>8.1%} {c.role_rate:>7.1%}")
        return "\n".join(lines)


def _choice(default_p: Sequence[np.ndarray], role_p: Sequence[np.ndarray], window: int, k: int, max_rate: float) -> tuple:
    dm = latch_margins(default_p, k=k, window=window)
    rm = latch_margins(role_p, k=k, window=window)
    t = propose_threshold(dm, max_rate)
    rate = lambda m: float(latch_rates(m, [t])[0]) if math.isfinite(t) else math.nan  # noqa: E731
    return LatchChoice(window, k, t, rate(dm), rate(rm)), dm, rm


def calibrate_latch(
    model: Any,
    tokenizer: Any,
    axis: Any,
    layer: int,
    default_conversations: Sequence[Sequence[dict]],
    role_conversations: Sequence[Sequence[dict]] = (),
    *,
    window: int = 8,
    k: int = 3,
    max_rate: float = 0.02,
    batch_size: int = 8,
    max_length: int | None = None,
) -> LatchCalibration:
    """Detection thresholds for a latch at ``layer`` from the model's own
    default-Assistant conversations (which it should leave alone) and role
    conversations (drift it should catch): see the module docs."""
    att = Attachment(model, axis)
    layer = as_layer(layer, "latch layer", att.n_layers)
    window = as_int(window, "window", min=1)
    k = as_int(k, "k", min=1)
    max_rate = as_float(max_rate, "max_rate", min=0.0, max=1.0)
    if not default_conversations:
        raise ValueError("default_conversations: empty (expected the default-Assistant conversations)")

    def proj(convs: Sequence[Sequence[dict]]) -> list[np.ndarray]:
        if not convs:
            return []
        r = project_conversations(model, tokenizer, att, list(convs), [layer], batch_size=batch_size,
                                  max_length=max_length)
        return r.p_in[layer]

    default_p, role_p = proj(default_conversations), proj(role_conversations)
    proposed, dm, rm = _choice(default_p, role_p, window, k, max_rate)
    fin = dm[np.isfinite(dm)]
    lo, hi = (float(fin.min()) - 0.5, float(np.quantile(fin, 0.5))) if fin.size else (-1.0, 1.0)
    grid_t = [float(x) for x in np.linspace(lo, hi, 41).astype(np.float32)]
    if math.isfinite(proposed.threshold):
        grid_t = sorted(set(grid_t) | {proposed.threshold})
    return LatchCalibration(
        layer=layer,
        window=window,
        k=k,
        max_rate=max_rate,
        n_default=len(default_p),
        n_role=len(role_p),
        proposed=proposed,
        thresholds=grid_t,
        default_rate=latch_rates(dm, grid_t).tolist(),
        role_rate=latch_rates(rm, grid_t).tolist() if rm.size else [],
        grid=[_choice(default_p, role_p, w, kk, max_rate)[0] for w, kk in GRID],
    )
