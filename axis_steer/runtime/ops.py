"""The operations on hidden states: project, clamp (activation capping), set
projection / ablate, steer, and several of them fused in one pass.

Every function takes NumPy arrays or torch tensors and runs the same C core
(``csrc/axis_steer.h``): NumPy arrays through :mod:`axis_steer._C`, tensors
through the torch operators ``torch.ops.axis_steer.*`` (CPU, or CUDA when
built with it). Functions ending in ``_`` work in place and return ``h``; the
others return a new array and, for torch tensors, are differentiable with
respect to ``h``.

Shapes and units
----------------
``h`` is ``(d,)``, ``(n, d)`` or ``(batch, seq, d)``, float32, float16 or
bfloat16 (for NumPy, bfloat16 is a uint16 array of the raw bits passed with
``dtype="bfloat16"``, or an ``ml_dtypes.bfloat16`` array). Directions are
float32 vectors of length ``d``; projections are float32 in the units of
``h``: ``p = <h, u>`` with ``u`` of unit norm (``u`` is checked, not
normalised: divide by the norm yourself, or use :func:`unit`). Per-row values
(``lo``, ``hi``, ``target``, ``alpha``) and ``mask`` are scalars or arrays
broadcastable to ``h.shape[:-1]``: per sequence is ``(batch, 1)``.

Rules (the full statement is in ``csrc/axis_steer.h``): rows already inside
``[lo, hi]`` stay bit-for-bit unchanged; ±inf means "no bound"; a row holding
NaN or Inf is never written (its projection is reported as is); masked rows
are neither read nor written and report NaN.

Arguments are checked here, the same way for arrays and tensors
(:mod:`axis_steer.runtime.checks`): directions are float32 or float64 vectors
(not integer, bool or complex); ``lo``, ``hi``, ``target`` and ``alpha`` are
numbers or arrays of numbers, never bools or strings, never NaN (a bound is
``±inf`` for "none"), never beyond the float32 range, and ``target`` and
``alpha`` are finite; a mask is bool or integer 0 / 1 (not a float). The
operators themselves follow the C core's rules (a NaN bound never fires
there); values of tensors on a GPU are left to them.

For hot loops call the operators directly (``torch.ops.axis_steer.clamp_``
with float32 tensors for the bounds): these wrappers convert Python floats to
tensors on every call.
"""

from __future__ import annotations

import math
import sys
from typing import Any, NamedTuple, Sequence

import numpy as np

from axis_steer import _C
from axis_steer.runtime.checks import (
    as_direction,
    as_flag,
    as_mask,
    as_real,
    as_threads,
    check_bounds,
    show,
    unit_vector,
)
from axis_steer.runtime.steps import STEER, Step, normalize_steps

__all__ = [
    "Step",
    "ClampStats",
    "Record",
    "unit",
    "project",
    "clamp_",
    "clamp",
    "set_projection_",
    "set_projection",
    "ablate_",
    "ablate",
    "steer_",
    "steer",
    "apply_",
    "apply",
]

INF = math.inf


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _numpy_threads(h: Any, dtype: Any, threads: Any, what: str) -> int | None:
    """The thread count for a NumPy ``h`` (checked), or None for a torch tensor
    ``h``: ``dtype`` and ``threads`` are options of the NumPy path only, and an
    error for a tensor (a tensor's dtype is its own, and torch runs the
    kernels on its own threads)."""
    if not _is_tensor(h):
        return as_threads(threads, f"{what}: threads")
    if dtype is not None:
        raise TypeError(f"{what}: dtype={dtype!r} applies to NumPy arrays only (a tensor's dtype is h.dtype)")
    if threads not in (0, None):
        raise TypeError(f"{what}: threads={threads!r} applies to NumPy arrays only (torch picks its threads)")
    return None


def _torch_ops():
    from axis_steer.runtime import _torch_ops

    return _torch_ops


class ClampStats(NamedTuple):
    """Per-row results of a clamp: projections before and after (float32) and
    whether the row was written (bool), all shaped ``h.shape[:-1]``."""

    p_before: Any
    p_after: Any
    changed: Any


class Record(NamedTuple):
    """What a fused program records about step 0's direction, per row:
    projection before any step, after all steps, and whether a clamp fired."""

    p_in: Any
    p_out: Any
    fired: Any


def unit(v: Any) -> Any:
    """``v / ||v||`` in float32 (NumPy or torch). Raises ValueError for a zero
    or non-finite vector."""
    return unit_vector(v, "v")


# ---- argument conversion (checks: axis_steer.runtime.checks) ----------------------------


def _hidden(h: Any) -> int | None:
    """``d`` of ``h`` when it has one (the op itself refuses a bad ``h``)."""
    shape = getattr(h, "shape", None)
    return int(shape[-1]) if shape is not None and len(shape) >= 1 else None


def _on_h(h: Any, t: Any, name: str) -> Any:
    """Tensor ``t`` moved to ``h``'s device; a meta tensor beside real data has no values to move."""
    if t.device != h.device and t.device.type == "meta":
        raise ValueError(f"{name}: a meta tensor but h is on {h.device} (expected a tensor with data, on {h.device})")
    return t.to(h.device)


def _dir_t(h: Any, v: Any, name: str, check_unit: bool) -> Any:
    import torch

    v = as_direction(v, name, _hidden(h))
    v = _on_h(h, v if isinstance(v, torch.Tensor) else torch.from_numpy(v), name).contiguous()
    if check_unit and v.is_cuda:
        # the CUDA kernels cannot check device data; the CPU core checks itself
        norm = float(torch.linalg.vector_norm(v.double()))
        if not math.isfinite(norm) or abs(norm - 1.0) > _C.UNIT_TOL:
            raise ValueError(f"{name} has norm {norm:.6g} (expected a unit vector: divide it by its norm)")
    return v


def _val_t(h: Any, x: Any, name: str) -> Any:
    """A value :func:`as_real` returned, as a float32 tensor on ``h``'s device."""
    import torch

    if isinstance(x, torch.Tensor):
        return _on_h(h, x, name)
    return torch.as_tensor(x, dtype=torch.float32, device=h.device)


def _mask_t(h: Any, mask: Any) -> Any:
    import torch

    mask = as_mask(mask)
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        return torch.as_tensor(mask, dtype=torch.bool, device=h.device)
    return _on_h(h, mask, "mask")


def _dir_np(h: Any, v: Any, name: str) -> Any:
    return as_direction(_host(v), name, _hidden(h))


def _val_np(x: Any) -> Any:
    """A value :func:`as_real` returned, for the NumPy module."""
    return _host(x)


def _mask_np(mask: Any) -> Any:
    return _host(as_mask(mask))


def _host(x: Any) -> Any:
    return x.detach().cpu().numpy() if _is_tensor(x) else x


def _rows(shapes: list, broadcast: Any) -> Any:
    try:
        return broadcast(*shapes)
    except (ValueError, RuntimeError):
        shown = ", ".join(str(tuple(s)) for s in shapes)
        raise ValueError(
            f"steps: per-row values of shapes {shown} do not broadcast together (expected shapes "
            "broadcastable to one another and to h.shape[:-1])"
        ) from None


def _program_t(h: Any, steps: Sequence[Step]) -> tuple:
    """Packs steps into the operator's (dirs (K, d), ops, params (K, 2, ...))."""
    import torch

    norm = normalize_steps(steps)
    dirs = torch.stack([_dir_t(h, d, f"steps[{k}].dir", c != STEER) for k, (c, d, _, _) in enumerate(norm)])
    vals = [(_val_t(h, a, f"steps[{k}].a"), _val_t(h, b, f"steps[{k}].b")) for k, (_, _, a, b) in enumerate(norm)]
    rows = _rows([v.shape for pair in vals for v in pair], torch.broadcast_shapes)
    params = torch.stack([torch.stack([a.expand(rows), b.expand(rows)]) for a, b in vals]).contiguous()
    return dirs, [c for c, _, _, _ in norm], params


def _program_np(h: Any, steps: Sequence[Step]) -> tuple:
    norm = normalize_steps(steps)
    dirs = np.stack([_dir_np(h, d, f"steps[{k}].dir") for k, (_, d, _, _) in enumerate(norm)])
    vals = [(np.asarray(_val_np(a), np.float32), np.asarray(_val_np(b), np.float32)) for _, _, a, b in norm]
    rows = _rows([v.shape for pair in vals for v in pair], np.broadcast_shapes)
    packed = np.stack([np.stack([np.broadcast_to(a, rows), np.broadcast_to(b, rows)]) for a, b in vals])
    return dirs, [c for c, _, _, _ in norm], np.ascontiguousarray(packed, dtype=np.float32)


def _row_outputs(h: Any, kind: type) -> Any:
    """Per-row outputs for ``h``: two float32 arrays and a bool one, shaped
    ``h.shape[:-1]``, as ``kind`` (:class:`ClampStats` or :class:`Record`);
    tensors on ``h``'s device for a tensor, NumPy arrays otherwise."""
    if _is_tensor(h):
        import torch

        rows, dev = h.shape[:-1], h.device
        return kind(
            torch.empty(rows, dtype=torch.float32, device=dev),
            torch.empty(rows, dtype=torch.float32, device=dev),
            torch.empty(rows, dtype=torch.bool, device=dev),
        )
    rows = tuple(np.shape(h)[:-1])
    return kind(np.empty(rows, np.float32), np.empty(rows, np.float32), np.empty(rows, bool))


# ---- the operations ----------------------------------------------------------------


def project(h: Any, u: Any, *, mask: Any = None, dtype: str | None = None, threads: int = 0) -> Any:
    """``p[r] = <h[r], u>`` in float32, shaped ``h.shape[:-1]`` (NaN on masked rows).

    ``dtype`` and ``threads`` apply to NumPy input only (see module docs)."""
    threads = _numpy_threads(h, dtype, threads, "project")
    if threads is None:
        return _torch_ops().ops.project(h, _dir_t(h, u, "u", True), _mask_t(h, mask))
    return _C.project(h, _dir_np(h, u, "u"), mask=_mask_np(mask), dtype=dtype, threads=threads)


def clamp_(
    h: Any,
    u: Any,
    lo: Any = -INF,
    hi: Any = INF,
    *,
    mask: Any = None,
    return_stats: bool = False,
    dtype: str | None = None,
    threads: int = 0,
) -> Any:
    """Activation capping in place: ``h[r] += u (clamp(<h[r], u>, lo, hi) - <h[r], u>)``.

    ``hi = inf`` is a floor (the paper's cap), ``lo = -inf`` a ceiling (the
    reference code's form), both a band. Returns ``h``, or ``(h, ClampStats)``
    with ``return_stats=True``."""
    threads = _numpy_threads(h, dtype, threads, "clamp_")
    lo, hi = check_bounds(lo, hi, "clamp_")
    return_stats = as_flag(return_stats, "clamp_: return_stats")
    stats = _row_outputs(h, ClampStats) if return_stats else None
    if threads is None:
        to = _torch_ops()
        to.ops.clamp_(
            h,
            _dir_t(h, u, "u", True),
            _val_t(h, lo, "lo"),
            _val_t(h, hi, "hi"),
            _mask_t(h, mask),
            *(stats if stats is not None else (None, None, None)),
        )
        return (h, stats) if return_stats else h
    _C.clamp_(
        h,
        _dir_np(h, u, "u"),
        _val_np(lo),
        _val_np(hi),
        mask=_mask_np(mask),
        p_before=None if stats is None else stats.p_before,
        p_after=None if stats is None else stats.p_after,
        changed=None if stats is None else stats.changed,
        dtype=dtype,
        threads=threads,
    )
    return (h, stats) if return_stats else h


def set_projection_(
    h: Any, u: Any, target: Any, *, mask: Any = None, dtype: str | None = None, threads: int = 0
) -> Any:
    """In place: ``h[r] += u (target - <h[r], u>)`` (``target`` finite). Returns ``h``."""
    threads = _numpy_threads(h, dtype, threads, "set_projection_")
    target = as_real(target, "target", finite=True)
    if threads is None:
        to = _torch_ops()
        to.ops.set_projection_(h, _dir_t(h, u, "u", True), _val_t(h, target, "target"), _mask_t(h, mask))
        return h
    _C.set_projection_(h, _dir_np(h, u, "u"), _val_np(target), mask=_mask_np(mask), dtype=dtype, threads=threads)
    return h


def ablate_(h: Any, u: Any, *, mask: Any = None, dtype: str | None = None, threads: int = 0) -> Any:
    """Directional ablation in place: removes the component of ``h`` along ``u``."""
    return set_projection_(h, u, 0.0, mask=mask, dtype=dtype, threads=threads)


def steer_(
    h: Any, w: Any, alpha: Any, *, mask: Any = None, dtype: str | None = None, threads: int = 0
) -> Any:
    """In place: ``h[r] += alpha w``, ``w`` any vector (not normalised), ``alpha``
    finite. Returns ``h``."""
    threads = _numpy_threads(h, dtype, threads, "steer_")
    alpha = as_real(alpha, "alpha", finite=True)
    if threads is None:
        to = _torch_ops()
        to.ops.steer_(h, _dir_t(h, w, "w", False), _val_t(h, alpha, "alpha"), _mask_t(h, mask))
        return h
    _C.steer_(h, _dir_np(h, w, "w"), _val_np(alpha), mask=_mask_np(mask), dtype=dtype, threads=threads)
    return h


def apply_(
    h: Any,
    steps: Sequence[Step],
    *,
    mask: Any = None,
    record: bool = False,
    dtype: str | None = None,
    threads: int = 0,
) -> Any:
    """Runs ``steps`` on every row in one pass, in order, each step seeing the
    result of the previous one (how a reference capping config's several
    vectors on one layer apply). Returns ``h``, or ``(h, Record)`` with
    ``record=True`` (projections on step 0's direction before and after, and
    whether any clamp fired)."""
    threads = _numpy_threads(h, dtype, threads, "apply_")
    record = as_flag(record, "apply_: record")
    if threads is None:
        to = _torch_ops()
        dirs, codes, params = _program_t(h, steps)
        mask = _mask_t(h, mask)
        rec = _row_outputs(h, Record) if record else None
        to.ops.apply_(h, dirs, codes, params, mask, *(rec if rec else (None, None, None)))
        return (h, rec) if record else h
    dirs, codes, params = _program_np(h, steps)
    mask = _mask_np(mask)
    rec = _row_outputs(h, Record) if record else None
    _C.apply_(
        h,
        dirs,
        codes,
        params,
        mask=mask,
        p_in=None if rec is None else rec.p_in,
        p_out=None if rec is None else rec.p_out,
        fired=None if rec is None else rec.fired,
        dtype=dtype,
        threads=threads,
    )
    return (h, rec) if record else h


def apply(h: Any, steps: Sequence[Step], *, mask: Any = None, dtype: str | None = None, threads: int = 0) -> Any:
    """Out-of-place :func:`apply_`. For torch tensors the result is
    differentiable with respect to ``h`` (a clamp or set step that wrote a row
    maps the gradient through ``I - u uᵀ``); directions and parameters are
    treated as constants and must not require grad."""
    if _numpy_threads(h, dtype, threads, "apply") is None:
        to = _torch_ops()
        dirs, codes, params = _program_t(h, steps)
        out, _ = to.ops.apply(h, dirs, codes, params, _mask_t(h, mask))
        return out
    if not isinstance(h, np.ndarray):
        raise TypeError(f"apply: h = {show(h)} is a {type(h).__name__} (expected a NumPy array or a torch tensor)")
    out = np.array(h, copy=True, order="C")
    return apply_(out, steps, mask=mask, dtype=dtype, threads=threads)


def clamp(h: Any, u: Any, lo: Any = -INF, hi: Any = INF, *, mask: Any = None, **kw: Any) -> Any:
    """Out-of-place :func:`clamp_` (differentiable with respect to ``h`` for tensors)."""
    return apply(h, [Step.clamp(u, lo, hi)], mask=mask, **kw)


def set_projection(h: Any, u: Any, target: Any, *, mask: Any = None, **kw: Any) -> Any:
    """Out-of-place :func:`set_projection_`."""
    return apply(h, [Step.set(u, target)], mask=mask, **kw)


def ablate(h: Any, u: Any, *, mask: Any = None, **kw: Any) -> Any:
    """Out-of-place :func:`ablate_`."""
    return apply(h, [Step.set(u, 0.0)], mask=mask, **kw)


def steer(h: Any, w: Any, alpha: Any, *, mask: Any = None, **kw: Any) -> Any:
    """Out-of-place :func:`steer_`."""
    return apply(h, [Step.steer(w, alpha)], mask=mask, **kw)
