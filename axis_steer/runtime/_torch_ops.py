"""Loads the compiled torch operators and registers what torch needs in Python:
fake (meta) kernels for tracing and torch.compile, and autograd for the
out-of-place operators. Imported on first use by :mod:`axis_steer.runtime.ops`.

The operators live in ``torch.ops.axis_steer`` (schemas in
``csrc/torch/ops.cpp``). The in-place ones refuse to run on a tensor that
requires grad while grad mode is on (their autograd kernel is in C++ and
raises); use the out-of-place :func:`axis_steer.runtime.ops.apply` there.
"""

from __future__ import annotations

import torch

try:
    from axis_steer import _ops  # noqa: F401  (registers torch.ops.axis_steer.*)
except ImportError as exc:  # pragma: no cover - depends on how it was built
    raise ImportError(
        "axis_steer's torch operators are not built (axis_steer._ops is missing). They are "
        "built only when torch is importable at build time: reinstall with "
        "`pip install --no-build-isolation .` (or `-e .`) in an environment that has torch."
    ) from exc

from axis_steer.runtime.steps import CLAMP, SET

WITH_CUDA = bool(_ops.WITH_CUDA)
ops = torch.ops.axis_steer
#: ``apply_`` without the dispatcher (eager only, no autograd, plain tensors):
#: ``apply_direct_(h, dirs, ops_tuple, params, mask, p_in, p_out, fired, rec_offset[, gates,
#: gate_of[, latches]])``, latches a tuple of ``(params, state, ring, gate, dir, p)`` run first
#: (``latch_`` each) in the same call
apply_direct_ = _ops.apply_direct_


def _rows(h: torch.Tensor) -> torch.Size:
    return h.shape[:-1]


@torch.library.register_fake("axis_steer::project")
def _project_fake(h, u, mask=None):
    return h.new_empty(_rows(h), dtype=torch.float32)


@torch.library.register_fake("axis_steer::clamp_")
def _clamp_fake(h, u, lo, hi, mask=None, p_before=None, p_after=None, changed=None):
    return None


@torch.library.register_fake("axis_steer::set_projection_")
def _set_projection_fake(h, u, target, mask=None, p_before=None):
    return None


@torch.library.register_fake("axis_steer::steer_")
def _steer_fake(h, w, alpha, mask=None):
    return None


@torch.library.register_fake("axis_steer::apply_")
def _apply_inplace_fake(
    h, dirs, ops, params, mask=None, p_in=None, p_out=None, fired=None, rec_offset=None, gates=None, gate_of=None
):
    return None


@torch.library.register_fake("axis_steer::apply")
def _apply_fake(h, dirs, ops, params, mask=None, gates=None, gate_of=None, gate_offset=None):
    out = torch.empty(h.shape, dtype=h.dtype, device=h.device)
    changed = h.new_empty((len(ops), *_rows(h)), dtype=torch.bool)
    return out, changed


@torch.library.register_fake("axis_steer::latch_")
def _latch_fake(h, params, offset, state, ring, gate, dir=None, p=None, mask=None):
    return None


# ---- autograd ------------------------------------------------------------------


def _apply_setup(ctx, inputs, output):
    h, dirs, ops_, params = inputs[:4]
    _, changed = output
    if dirs.requires_grad or params.requires_grad:
        raise ValueError(
            "axis_steer.apply differentiates with respect to h only, but dirs or params "
            "require grad (detach them, or use axis_steer.runtime.reference.apply for full autograd)"
        )
    ctx.save_for_backward(dirs, changed)
    ctx.ops = list(ops_)
    ctx.h_dtype = h.dtype


def apply_backward_h(
    grad: torch.Tensor, dirs: torch.Tensor, ops_: list[int], changed: torch.Tensor
) -> torch.Tensor:
    """dL/dh of the fused program: through each clamp or set step that wrote
    a row, in reverse order, the gradient is mapped by ``I - u uᵀ``; steering
    and projection steps pass it unchanged. Float32 arithmetic for float32 and
    narrower gradients, float64 for float64."""
    work = grad.double() if grad.dtype == torch.float64 else grad.float()
    for k in reversed(range(len(ops_))):
        if ops_[k] not in (CLAMP, SET):
            continue
        u = dirs[k].to(work.dtype)
        coef = torch.where(changed[k], work @ u, torch.zeros((), dtype=work.dtype, device=work.device))
        work = work - coef.unsqueeze(-1) * u
    return work.to(grad.dtype)


def _apply_backward(ctx, grad_out, grad_changed):
    dirs, changed = ctx.saved_tensors
    # one entry per argument the caller passed, a list of Nones for the gates
    rest = [[None] * len(x) if isinstance(x, (list, tuple)) else None for x in ctx.needs_input_grad[1:]]
    return (apply_backward_h(grad_out, dirs, ctx.ops, changed), *rest)


torch.library.register_autograd("axis_steer::apply", _apply_backward, setup_context=_apply_setup)


def _project_setup(ctx, inputs, output):
    h, u, mask = inputs
    ctx.save_for_backward(h, u, mask if mask is not None else None)
    ctx.has_mask = mask is not None


def _project_backward(ctx, grad_p):
    h, u, mask = ctx.saved_tensors
    g = grad_p
    if ctx.has_mask:
        g = torch.where(mask.bool(), g, torch.zeros((), dtype=g.dtype, device=g.device))
    grad_h = grad_u = None
    if ctx.needs_input_grad[0]:
        grad_h = (g.unsqueeze(-1) * u).to(h.dtype)
    if ctx.needs_input_grad[1]:
        grad_u = (g.unsqueeze(-1) * h.float()).reshape(-1, h.shape[-1]).sum(0)
    return grad_h, grad_u, None


torch.library.register_autograd("axis_steer::project", _project_backward, setup_context=_project_setup)
