"""Slow, obviously correct float64 versions of every axis_steer operation.

These are the oracle of the tests and a readable statement of what the fast
kernels compute. They accept NumPy arrays or torch tensors (returning the same
kind) and compute everything in float64; with torch tensors they are
differentiable, so autograd through them is the reference gradient.

Shapes: ``h`` is ``(..., d)``; a "row" is one vector along the last axis.
Per-row values (``lo``, ``hi``, ``target``, ``alpha``, ``mask``) broadcast
against ``h.shape[:-1]``. Rules shared with the kernels (``csrc/axis_steer.h``):

* ``clamp(p, lo, hi)``: ``t = p; if t < lo: t = lo; if t > hi: t = hi``; a NaN
  bound never fires, ±inf means "no bound".
* A row whose projection is not finite is never written, nor is a row whose
  target is not finite (a NaN or infinite target, ``lo = +inf``, ``hi = -inf``).
  The kernels' projection is float32, so a projection beyond the float32
  range counts as not finite here too.
* Updates never overflow on the way: the float64 arithmetic here gives the
  result the kernels compute without intermediate overflow; a result beyond
  the storage's range is an infinity once stored.
* A non-finite ``target`` or ``alpha``, or ``alpha == 0``, leaves the row as is.
* Masked rows (mask false) are untouched; their projections are NaN.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from axis_steer.runtime.steps import CLAMP, OP_NAMES, PROJECT, SET, STEER

__all__ = ["CLAMP", "OP_NAMES", "PROJECT", "SET", "STEER", "LatchResult", "Result", "apply", "clamp", "latch",
           "project", "reference_style_cap_hook", "set_projection", "steer"]


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


class _Namespace:
    """The handful of array functions the reference needs, for NumPy or torch."""

    def __init__(self, like: Any):
        self.torch = _is_torch(like)
        if self.torch:
            import torch

            self.lib = torch
            self.device = like.device
        else:
            self.lib = np
            self.device = None

    def f64(self, x: Any) -> Any:
        if self.torch:
            t = x if _is_torch(x) else self.lib.as_tensor(np.asarray(x, dtype=np.float64))
            return t.to(device=self.device, dtype=self.lib.float64)
        if _is_torch(x):
            x = x.detach().cpu().numpy()
        return np.asarray(x, dtype=np.float64)

    def as_bool(self, x: Any) -> Any:
        if self.torch:
            t = x if _is_torch(x) else self.lib.as_tensor(np.asarray(x, dtype=bool))
            return t.to(device=self.device, dtype=self.lib.bool)
        return np.asarray(x, dtype=bool)

    def where(self, c: Any, a: Any, b: Any) -> Any:
        return self.lib.where(c, a, b)

    def isfinite(self, x: Any) -> Any:
        return self.lib.isfinite(x)

    def isnan(self, x: Any) -> Any:
        return self.lib.isnan(x)

    def broadcast(self, x: Any, shape: tuple) -> Any:
        if self.torch:
            return x.expand(shape) if x.dim() else x.expand(shape)
        return np.broadcast_to(x, shape)

    def zeros_bool(self, shape: tuple) -> Any:
        if self.torch:
            return self.lib.zeros(shape, dtype=self.lib.bool, device=self.device)
        return np.zeros(shape, dtype=bool)


class Result(NamedTuple):
    """What :func:`apply` returns (all float64 / bool, rows = ``h.shape[:-1]``)."""

    out: Any  #: (..., d) the rows after every step
    p_in: Any  #: (...) projection on step 0's direction before any step
    p_out: Any  #: (...) the same after all steps
    fired: Any  #: (...) any clamp step wrote the row
    p_before: list  #: per step, (...) projection on its direction at its start
    p_after: list  #: per step, (...) the same at its end
    changed: list  #: per step, (...) the step wrote the row


def _step_ops(ops: Sequence[int | str]) -> list[int]:
    return [OP_NAMES[o] if isinstance(o, str) else int(o) for o in ops]


def apply(h: Any, steps: Sequence[tuple], mask: Any = None) -> Result:
    """Runs ``steps`` on every row of ``h`` in order, in float64.

    ``steps`` holds ``(op, dir, a, b)`` tuples: op is ``"project"``, ``"clamp"``
    (a = lo, b = hi), ``"set"`` (a = target) or ``"steer"`` (a = alpha; dir is
    the vector w, not normalised). ``dir`` is used as given: pass unit vectors
    for project/clamp/set, as the kernels require.
    """
    xp = _Namespace(h)
    x = xp.f64(h)
    rows = tuple(x.shape[:-1])
    nan = float("nan")
    f32_max = float(np.finfo(np.float32).max)  # the kernels project in float32
    active = xp.as_bool(True) if mask is None else xp.broadcast(xp.as_bool(mask), rows)
    active = xp.broadcast(active, rows)
    fired = xp.zeros_bool(rows)
    p_before, p_after, changed = [], [], []
    ops = _step_ops([s[0] for s in steps])
    dir0 = xp.f64(steps[0][1])
    p_in = (x * dir0).sum(-1)
    for op, (_, direction, a, b) in zip(ops, steps):
        u = xp.f64(direction)
        p = (x * u).sum(-1)
        if op == PROJECT:
            wrote = xp.zeros_bool(rows)
            new_x = x
        elif op == STEER:
            alpha = xp.broadcast(xp.f64(a), rows)
            wrote = active & xp.isfinite(alpha) & (alpha != 0)
            step = xp.where(wrote, alpha, 0.0)
            new_x = x + step[..., None] * u
        else:
            if op == CLAMP:
                lo = xp.broadcast(xp.f64(-np.inf if a is None else a), rows)
                hi = xp.broadcast(xp.f64(np.inf if b is None else b), rows)
                t = xp.where(p < lo, lo, p)
                t = xp.where(t > hi, hi, t)
            elif op == SET:
                target = xp.broadcast(xp.f64(a), rows)
                t = xp.where(xp.isfinite(target), target, p)
            else:
                raise ValueError(f"op {op!r} is not one of {sorted(OP_NAMES)}")
            p_ok = xp.isfinite(p) & (p <= f32_max) & (p >= -f32_max)
            wrote = active & p_ok & xp.isfinite(t) & (t != p)
            safe_t = xp.where(wrote, t, 0.0)
            delta = xp.where(wrote, safe_t - xp.where(xp.isfinite(p), p, 0.0), 0.0)
            new_x = x + delta[..., None] * u
            if op == CLAMP:
                fired = fired | wrote
        pa = (new_x * u).sum(-1)
        p_before.append(xp.where(active, p, nan))
        p_after.append(xp.where(active, pa, nan))
        changed.append(wrote)
        x = new_x
    p_out = (x * dir0).sum(-1)
    return Result(
        out=x,
        p_in=xp.where(active, p_in, nan),
        p_out=xp.where(active, p_out, nan),
        fired=fired,
        p_before=p_before,
        p_after=p_after,
        changed=changed,
    )


def project(h: Any, u: Any, mask: Any = None) -> Any:
    """``p = <h[r], u>`` in float64; NaN on masked rows."""
    return apply(h, [("project", u, None, None)], mask).p_before[0]


def clamp(h: Any, u: Any, lo: Any = -np.inf, hi: Any = np.inf, mask: Any = None) -> Result:
    """``h[r] + u (clamp(p, lo, hi) - p)``; see :class:`Result` for the fields."""
    return apply(h, [("clamp", u, lo, hi)], mask)


def set_projection(h: Any, u: Any, target: Any, mask: Any = None) -> Result:
    """``h[r] + u (target - p)``; ``target = 0`` ablates the direction."""
    return apply(h, [("set", u, target, None)], mask)


def steer(h: Any, w: Any, alpha: Any, mask: Any = None) -> Result:
    """``h[r] + alpha w``."""
    return apply(h, [("steer", w, alpha, None)], mask)


def reference_style_cap_hook(vectors: Sequence[tuple[Any, float]]):
    """A forward hook applying the released reference code's capping formula,
    literally, for comparisons and benchmarks: for each ``(v, cap)`` in order,
    in the model's dtype, ``h <- h - v̂ max(<h, v̂> - cap, 0)`` with an einsum
    projection, a clamp and an einsum outer product (several full-size
    temporaries, as in the reference). ``v`` is a ``(d,)`` tensor on the
    block's device."""
    import torch

    def hook(module, args, output):
        h = output if isinstance(output, torch.Tensor) else output[0]
        for v, cap in vectors:
            v_hat = (v / v.norm()).to(h.dtype)
            proj = torch.einsum("bsd,d->bs", h, v_hat)
            excess = (proj - cap).clamp(min=0)
            h = h - torch.einsum("bs,d->bsd", excess, v_hat)
        if isinstance(output, torch.Tensor):
            return h
        return (h, *output[1:])

    return hook


class LatchResult(NamedTuple):
    """What :func:`latch` returns, per batch row ``b`` and position ``t``."""

    gate: Any  #: (batch, T) bool: a gated intervention runs on the token
    latched: Any  #: (batch,) bool: latched after the last token
    latched_at: Any  #: (batch,) int64: position of the token that first latched, -1 if none
    count: Any  #: (batch,) int64: times latched


def latch(
    p: Any,
    mask: Any = None,
    *,
    threshold: float,
    k: int = 1,
    window: int = 1,
    release: float | None = None,
    release_k: int = 1,
    phases: str = "both",
    start: bool = False,
    calls: Sequence[int] | None = None,
) -> LatchResult:
    """The drift latch's state machine (``csrc/axis_steer.h``, "Drift latches"),
    in float64 Python, over sequences from their reset on.

    ``p``: ``(batch, T)`` detection projections (float32 values; NaN where
    the row holds NaN); ``mask``: ``(batch, T)``, False on padding; ``calls``:
    the number of positions each forward call brought (default one call of
    ``T``): a call of one position after the first is a decode step, any other
    a prompt, and ``phases`` (``"both"``, ``"prompt"``, ``"generated"``) says on
    which the gate may open. Per real token, in order: its gate is "latched
    before it" (and its phase open); then the signal ``s`` (``p``, or with
    ``window=W`` the mean of the last ``W`` finite values, a running float64
    sum ``(sum + x) - oldest``, once ``W`` were seen) advances the counters:
    ``run`` of ``s < threshold`` while not latched (latch at ``k``), ``up`` of
    ``s > release`` while latched (release at ``release_k``)."""
    x = np.asarray(p.detach().cpu() if _is_torch(p) else p, dtype=np.float64)
    batch, total = x.shape
    m = np.ones((batch, total), bool) if mask is None else np.asarray(mask.cpu() if _is_torch(mask) else mask, bool)
    calls = [total] if calls is None else list(calls)
    if sum(calls) != total or any(c < 1 for c in calls):
        raise ValueError(f"calls={calls}: expected positive lengths summing to {total}")
    decode = np.zeros(total, bool)
    at = 0
    for n in calls:
        decode[at : at + n] = n == 1 and at > 0
        at += n
    open_prompt, open_gen = {"both": (True, True), "prompt": (True, False), "generated": (False, True)}[phases]
    # the kernels hold the parameters in float32
    threshold = float(np.float32(threshold))
    rel = np.nan if release is None else float(np.float32(release))
    gate = np.zeros((batch, total), bool)
    latched = np.zeros(batch, bool)
    latched_at = np.full(batch, -1, np.int64)
    count = np.zeros(batch, np.int64)
    for b in range(batch):
        on, run, up, n_at, n_count = bool(start), 0, 0, -1, 0
        ring: list[float] = []
        total_sum = 0.0
        for t in range(total):
            if not m[b, t]:
                continue
            gate[b, t] = on and (open_gen if decode[t] else open_prompt)
            has, sig = False, 0.0
            v = float(x[b, t])
            if window == 1:
                has, sig = True, v
            elif np.isfinite(v):
                if len(ring) == window:
                    total_sum = (total_sum + v) - ring.pop(0)
                else:
                    total_sum = total_sum + v
                ring.append(v)
                has, sig = len(ring) == window, total_sum / window
            if not on:
                run = run + 1 if has and sig < threshold else 0
                if run >= k:
                    on, run, up, n_count = True, 0, 0, n_count + 1
                    n_at = t if n_at < 0 else n_at
            else:
                up = up + 1 if has and sig > rel else 0
                if up >= release_k:
                    on, run, up = False, 0, 0
        latched[b], latched_at[b], count[b] = on, n_at, n_count
    return LatchResult(gate, latched, latched_at, count)
