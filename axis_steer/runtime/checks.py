"""The checks on the arguments every part of the runtime shares: capping
bounds and directions. One definition per rule, used by the NumPy and torch
paths of :mod:`~axis_steer.runtime.ops`, the hooks and the file formats, so
that they accept and refuse the same things and say so in the same words.

Works on Python numbers, NumPy arrays and torch tensors (imported only when
one is given).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

__all__ = ["check_bounds", "unit_vector"]

INF = math.inf


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _host_f64(v: Any) -> np.ndarray | None:
    """``v`` as a float64 NumPy array when it can be read without a device
    synchronisation (a number, a NumPy array, a CPU tensor); None otherwise."""
    if _is_tensor(v):
        if v.device.type != "cpu":
            return None
        return v.detach().double().numpy()
    return np.asarray(v, dtype=np.float64)


def _text(v: Any) -> str:
    """A value as the user wrote it: ``2`` for 2, ``2.0`` for 2.0, ``2.5`` for a 0-d array."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return repr(v)
    return f"{float(np.asarray(v if not _is_tensor(v) else v.item())):g}"


def check_bounds(lo: Any, hi: Any, where: str) -> None:
    """Capping bounds ``lo <= <h, u> <= hi``: each a number or per-row values.

    A NaN bound is an error (write ``-inf`` / ``+inf`` for "no bound on that
    side"), as are ``lo = +inf`` and ``hi = -inf`` (not bounds) and ``lo > hi``.
    Values on a device other than the CPU are left to the kernels (reading
    them would synchronise). ``where`` starts each message ("thresholds at
    layer 3", "steps[0]")."""
    vals = {}
    for name, v, bad, ok in (("lo", lo, INF, -INF), ("hi", hi, -INF, INF)):
        a = _host_f64(v)
        vals[name] = a
        if a is None:
            continue
        if np.isnan(a).any():
            raise ValueError(f"{where}: {name} is NaN (expected a finite bound, or {ok} for no bound on that side)")
        if (a == bad).any():
            raise ValueError(f"{where}: {name} = {bad} is not a bound (expected a finite bound, or {ok} for no bound on that side)")
    a, b = vals["lo"], vals["hi"]
    if a is not None and b is not None:
        over = a > b
        if over.any():
            if over.ndim == 0:
                raise ValueError(f"{where}: lo = {_text(lo)} > hi = {_text(hi)} (expected lo <= hi)")
            raise ValueError(f"{where}: some row has lo > hi (expected lo <= hi)")


def unit_vector(v: Any, what: str, hint: str = "") -> Any:
    """``v / ||v||`` as float32, the norm taken in float64: a torch tensor for
    a tensor (on its device), a NumPy array otherwise. Raises ValueError for
    a zero or non-finite vector, naming ``what`` (and adding ``hint``)."""
    if _is_tensor(v):
        import torch

        v64 = v.detach().to(torch.float64)
        norm = float(torch.linalg.vector_norm(v64))
    else:
        v64 = np.asarray(v, dtype=np.float64)
        norm = float(np.linalg.norm(v64))
    if not math.isfinite(norm) or norm == 0.0:
        raise ValueError(f"{what} has norm {norm} (expected a finite, non-zero vector to normalise{hint})")
    out = v64 / norm
    return out.to(torch.float32) if _is_tensor(v) else out.astype(np.float32)
