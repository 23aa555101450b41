"""Shared test helpers: the tolerances of every comparison with the float64
reference (stated here once), input builders for the layout grid, and the
checkers that compare a kernel's result with :mod:`axis_steer.runtime.reference`.

Tolerance model. A projection is a float32 dot product of ``d`` terms summed
in 16 lanes, so its error is at most about ``(d / 16 + 8) * eps32 * sum|h_j u_j|``
(we allow 4x that). A written row is ``h + u * delta`` with ``delta`` carrying
the projection's error, computed in float32 and rounded once to the storage
dtype: per element ``|u_j| * tol_p + half an ulp of the result + 2 eps32 |h_j|``.
Rows whose projection is within ``tol_p`` of a bound may go either way; the
checkers accept both outcomes there.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from axis_steer.runtime import reference as R

EPS32 = 2.0**-24  # half an ulp of 1.0 in float32 (unit roundoff)
#: unit roundoff of each storage dtype (half an ulp at 1.0)
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
#: smallest positive subnormal: absolute floor of the rounding error
TINY = {"float32": 2.0**-149, "float16": 2.0**-24, "bfloat16": 2.0**-133}
DTYPES = ("float32", "float16", "bfloat16")
#: worst relative error of one rounding store (an ulp at 1.0) and an absolute
#: floor, per dtype: the tolerance of a value written once from float32
STORE_TOL = {dt: (2.0 * UNIT_ROUNDOFF[dt], floor) for dt, floor in zip(DTYPES, (1e-6, 1e-3, 1e-2))}


def proj_tol(h64: np.ndarray, u64: np.ndarray) -> np.ndarray:
    """Allowed |p - p_ref| per row for rows ``h64`` (float64 of the stored values):
    the one bound on every float32 dot product the core computes, CPU or CUDA."""
    return dot_tol(np.abs(h64 * u64).sum(-1), h64.shape[-1])


def dot_tol(mag: np.ndarray, d: int) -> np.ndarray:
    """:func:`proj_tol` from ``mag`` = sum_j |h_j u_j| per row, for length-``d`` rows."""
    return 4.0 * (d / 16.0 + 8.0) * EPS32 * mag + 1e-30


def row_tol(out64: np.ndarray, h64: np.ndarray, u64: np.ndarray, tol_p: np.ndarray, dtype: str) -> np.ndarray:
    """Allowed per-element error of a row written as ``h + u * delta``."""
    return (
        np.abs(u64) * tol_p[..., None]
        + UNIT_ROUNDOFF[dtype] * np.abs(out64) * 1.0001
        + 2.0 * EPS32 * (np.abs(h64) + np.abs(out64))
        + TINY[dtype]
    )


# ---- dtype conversions for NumPy (bfloat16 as raw uint16 bits) ----------------------


def to_storage(x: np.ndarray, dtype: str) -> np.ndarray:
    """float array -> storage array (float32 / float16 / uint16 bfloat16 bits), RNE."""
    x = np.asarray(x, dtype=np.float32)
    if dtype == "float32":
        return x.copy()
    if dtype == "float16":
        return x.astype(np.float16)
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def from_storage(x: np.ndarray, dtype: str) -> np.ndarray:
    """storage array -> float64."""
    if dtype == "bfloat16":
        return (x.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return x.astype(np.float64)


def storage_np_dtype(dtype: str):
    return {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}[dtype]


# ---- layouts ------------------------------------------------------------------------

LAYOUTS = ("contiguous", "padded", "sliced", "misaligned")


def make_rows(values: np.ndarray, layout: str, dtype: str, xp: str = "numpy"):
    """Places float values (n, d) or (b, s, d) in storage of the given layout.

    contiguous: plain; padded: row stride d + 5; sliced: every other row of a
    larger array; misaligned: the data starts one element into its buffer.
    Returns an array (NumPy storage array, or torch tensor when xp="torch")
    whose last axis is contiguous.
    """
    st = to_storage(values, dtype)
    shape = st.shape
    d = shape[-1]
    lead = shape[:-1]
    if layout == "contiguous":
        out = np.ascontiguousarray(st)
    elif layout == "padded":
        buf = np.zeros((*lead, d + 5), dtype=st.dtype)
        buf[..., :d] = st
        out = buf[..., :d]
    elif layout == "sliced":
        if len(lead) == 0:
            return make_rows(values, "contiguous", dtype, xp)
        buf = np.zeros((*lead[:-1], 2 * lead[-1], d), dtype=st.dtype)
        buf[..., ::2, :] = st
        out = buf[..., ::2, :]
    elif layout == "misaligned":
        flat = np.zeros(st.size + 1, dtype=st.dtype)
        flat[1:] = st.reshape(-1)
        out = flat[1:].reshape(shape)
    else:
        raise ValueError(layout)
    if xp == "numpy":
        return out
    return to_torch(out, dtype)


def to_torch(st: np.ndarray, dtype: str):
    """Storage array -> torch tensor with the same strides and alignment,
    sharing its memory (bfloat16 from the raw uint16 bits)."""
    import torch

    t = torch.from_numpy(st)
    if dtype == "bfloat16":
        t = t.view(torch.bfloat16)
    return t


def torch_to_f64(t) -> np.ndarray:
    import torch

    return t.detach().to(torch.float64).cpu().numpy()


# ---- checkers -------------------------------------------------------------------------


def stable_seed(*parts: object) -> int:
    """A seed named by ``parts`` that is the same in every process (``hash`` of
    a string is not: it changes with PYTHONHASHSEED)."""
    return zlib.crc32(repr(parts).encode())


def unit_vector(rng: np.random.Generator, d: int) -> np.ndarray:
    v = rng.standard_normal(d)
    return (v / np.linalg.norm(v)).astype(np.float32)


def check_clamp_rows(
    h64: np.ndarray,
    out64: np.ndarray,
    u: np.ndarray,
    lo: float | np.ndarray,
    hi: float | np.ndarray,
    dtype: str,
    mask: np.ndarray | None = None,
    changed: np.ndarray | None = None,
) -> None:
    """``out64`` is a correct clamp of ``h64`` (both float64 of stored values)."""
    u64 = u.astype(np.float64)
    ref = R.clamp(h64, u64, lo, hi, mask)
    tol_p = proj_tol(h64, u64)
    p = ref.p_before[0]
    rows = h64.shape[:-1]
    lo_b = np.broadcast_to(np.asarray(lo, dtype=np.float64), rows)
    hi_b = np.broadcast_to(np.asarray(hi, dtype=np.float64), rows)
    with np.errstate(invalid="ignore"):
        ambiguous = (np.abs(p - lo_b) <= tol_p) | (np.abs(p - hi_b) <= tol_p)
    unchanged_rows = np.all(out64 == h64, axis=-1) | np.all(np.isnan(out64) == np.isnan(h64), axis=-1) & np.all(
        (out64 == h64) | np.isnan(h64), axis=-1
    )
    expect_changed = ref.changed[0]
    tol = row_tol(ref.out, h64, u64, tol_p, dtype)
    close = np.all(np.abs(out64 - ref.out) <= tol, axis=-1)
    ok = np.where(expect_changed, close, unchanged_rows)
    ok = ok | (ambiguous & (close | unchanged_rows))
    if not np.all(ok):
        bad = np.argwhere(~ok)[0]
        idx = tuple(bad)
        err = np.abs(out64[idx] - ref.out[idx]).max()
        raise AssertionError(
            f"row {idx}: expected {'changed' if expect_changed[idx] else 'unchanged'}, p_ref={p[idx]!r}, "
            f"max err {err!r} vs tol {tol[idx].max()!r}"
        )
    if changed is not None:
        agree = (changed == expect_changed) | ambiguous
        assert np.all(agree), f"changed flags differ at {np.argwhere(~agree)[:5].tolist()}"


def assert_proj_close(p: np.ndarray, p_ref: np.ndarray, h64: np.ndarray, u64: np.ndarray) -> None:
    tol = proj_tol(h64, u64)
    both_nan = np.isnan(p) & np.isnan(p_ref)
    same_inf = np.isinf(p_ref) & (p == p_ref)
    with np.errstate(invalid="ignore"):
        ok = both_nan | same_inf | (np.abs(p - p_ref) <= tol)
    if not np.all(ok):
        idx = tuple(np.argwhere(~ok)[0])
        raise AssertionError(f"projection at {idx}: {p[idx]!r} vs reference {p_ref[idx]!r} (tol {tol[idx]!r})")


def finite_or_nan_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def isclose_scalar(a: float, b: float, tol: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def bounds_for(kind: str, p: np.ndarray, rng: np.random.Generator):
    """(lo, hi) as float32 arrays broadcastable to the rows, from projections."""
    finite = p[np.isfinite(p)]
    q = (lambda x: float(np.quantile(finite, x))) if finite.size else (lambda x: 0.0)
    if kind == "floor":
        return np.float32(q(0.5)), np.float32(np.inf)
    if kind == "ceiling":
        return np.float32(-np.inf), np.float32(q(0.5))
    if kind == "band":
        return np.float32(q(0.25)), np.float32(q(0.75))
    if kind == "equal":
        return np.float32(q(0.5)), np.float32(q(0.5))
    lo = (rng.standard_normal(p.shape) * 0.5).astype(np.float32)
    return lo, np.full(p.shape, np.inf, dtype=np.float32)


# ---- devices ----------------------------------------------------------------------------


def have_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def cuda_only(test):
    """A CUDA-only test: marked ``cuda`` (``pytest -m cuda`` selects every
    CUDA case), skipped without a GPU, and with one it requires axis_steer's
    CUDA kernels (the ``cuda_kernels`` fixture)."""
    for mark in (pytest.mark.cuda, pytest.mark.skipif(not have_gpu(), reason="no CUDA device"),
                 pytest.mark.usefixtures("cuda_kernels")):
        test = mark(test)
    return test
