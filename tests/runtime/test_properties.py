"""Property-based tests (hypothesis): for every operation, random shapes,
dtypes, row layouts, values (NaN and Inf included), bounds and masks; the
NumPy path and the torch path must agree bit for bit, and both must agree with
the float64 reference within the tolerances of tests/helpers.py.

At least 1,000 generated cases per operation (the "ci" profile below)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from axis_steer import _C
from axis_steer.runtime import reference as R

from helpers import (
    DTYPES,
    LAYOUTS,
    assert_proj_close,
    check_clamp_rows,
    from_storage,
    make_rows,
    proj_tol,
    row_tol,
    to_torch,
)

torch = pytest.importorskip("torch")
import axis_steer.runtime._torch_ops  # noqa: E402,F401

OPS = torch.ops.axis_steer
settings.register_profile(
    "ci", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile("ci")
torch.set_num_threads(1)

BOUND = st.one_of(
    st.floats(-3, 3, width=32),
    st.sampled_from([-math.inf, math.inf, math.nan, 0.0]),
)


@st.composite
def cases(draw, with_specials=True):
    dtype = draw(st.sampled_from(DTYPES))
    layout = draw(st.sampled_from(LAYOUTS))
    three = draw(st.booleans())
    if three:
        shape = (draw(st.integers(0, 3)), draw(st.integers(0, 5)))
    else:
        shape = (draw(st.integers(0, 9)),)
    d = draw(st.integers(1, 70))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-3, 0.1, 1.0, 30.0]))
    vals = rng.standard_normal((*shape, d)) * scale
    if with_specials and vals.size and draw(st.booleans()):
        flat = vals.reshape(-1)
        for _ in range(draw(st.integers(1, 3))):
            flat[rng.integers(0, flat.size)] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    u = rng.standard_normal(d)
    u = (u / np.linalg.norm(u)).astype(np.float32)
    if abs(float(np.linalg.norm(u.astype(np.float64))) - 1) > 1e-4:  # d = 1 rounding corner
        u = np.sign(u).astype(np.float32)
    mask = None
    if draw(st.booleans()) and math.prod(shape):
        mask = rng.random(shape) < 0.7
    return dtype, layout, vals, u, mask, rng


def both_paths(vals, dtype, layout):
    """The same stored rows twice: a NumPy array and a torch tensor."""
    h_np = make_rows(vals, layout, dtype)
    h_t = to_torch(make_rows(vals, layout, dtype), dtype)
    return h_np, h_t


def np_dtype_arg(dtype):
    return "bfloat16" if dtype == "bfloat16" else None


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint8)


def t_bits(t, dtype):
    return bits(t.view(torch.int16).numpy() if dtype != "float32" else t.view(torch.int32).numpy())


def mask_t(mask):
    return None if mask is None else torch.as_tensor(mask)


@given(cases())
def test_project(c):
    dtype, layout, vals, u, mask, _ = c
    h_np, h_t = both_paths(vals, dtype, layout)
    p_np = _C.project(h_np, u, mask=mask, dtype=np_dtype_arg(dtype))
    p_t = OPS.project(h_t, torch.as_tensor(u), mask_t(mask)).numpy()
    assert np.array_equal(bits(p_np), bits(p_t))
    h64 = from_storage(h_np, dtype)
    assert_proj_close(p_np, R.project(h64, u.astype(np.float64), mask), h64, u.astype(np.float64))


@given(cases(), BOUND, BOUND)
def test_clamp(c, lo, hi):
    dtype, layout, vals, u, mask, _ = c
    if lo > hi:
        lo, hi = hi, lo
    h_np, h_t = both_paths(vals, dtype, layout)
    h64 = from_storage(h_np, dtype)
    rows = h64.shape[:-1]
    outs_np = [np.empty(rows, np.float32), np.empty(rows, np.float32), np.empty(rows, bool)]
    outs_t = [torch.empty(rows), torch.empty(rows), torch.empty(rows, dtype=torch.bool)]
    # 0-d arrays, as the torch path's 0-dim tensors: array bounds may hold NaN or the
    # never-firing infinities (a scalar one of those is refused)
    lo_a, hi_a = np.array(lo, np.float32), np.array(hi, np.float32)
    _C.clamp_(h_np, u, lo_a, hi_a, mask=mask, p_before=outs_np[0], p_after=outs_np[1], changed=outs_np[2],
              dtype=np_dtype_arg(dtype))
    OPS.clamp_(h_t, torch.as_tensor(u), torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32),
               mask_t(mask), *outs_t)
    assert np.array_equal(bits(h_np), t_bits(h_t, dtype))
    for a, b in zip(outs_np, outs_t):
        assert np.array_equal(bits(a), bits(b.numpy()))
    out64 = from_storage(h_np, dtype)
    check_clamp_rows(h64, out64, u, np.float32(lo), np.float32(hi), dtype, mask, outs_np[2])
    # the NaN policy: rows holding NaN/Inf are never written
    bad = ~np.isfinite(h64).all(-1)
    assert not outs_np[2][bad].any()
    same = (out64[bad] == h64[bad]) | (np.isnan(out64[bad]) & np.isnan(h64[bad]))
    assert same.all()


@given(cases(with_specials=False), st.floats(-2, 2, width=32))
def test_set_projection(c, target):
    dtype, layout, vals, u, mask, rng = c
    per_row = rng.standard_normal(vals.shape[:-1]).astype(np.float32) if rng.random() < 0.5 else np.float32(target)
    h_np, h_t = both_paths(vals, dtype, layout)
    h64 = from_storage(h_np, dtype)
    _C.set_projection_(h_np, u, per_row, mask=mask, dtype=np_dtype_arg(dtype))
    OPS.set_projection_(h_t, torch.as_tensor(u), torch.as_tensor(per_row), mask_t(mask))
    assert np.array_equal(bits(h_np), t_bits(h_t, dtype))
    ref = R.set_projection(h64, u.astype(np.float64), per_row.astype(np.float64), mask)
    tol = row_tol(ref.out, h64, u.astype(np.float64), proj_tol(h64, u.astype(np.float64)), dtype)
    assert np.all(np.abs(from_storage(h_np, dtype) - ref.out) <= tol)


@given(cases(with_specials=False), st.floats(-3, 3, width=32))
def test_steer(c, alpha):
    dtype, layout, vals, u, mask, rng = c
    w = (rng.standard_normal(u.shape[0]) * rng.choice([0.01, 1.0, 10.0])).astype(np.float32)
    h_np, h_t = both_paths(vals, dtype, layout)
    h64 = from_storage(h_np, dtype)
    _C.steer_(h_np, w, alpha, mask=mask, dtype=np_dtype_arg(dtype))
    OPS.steer_(h_t, torch.as_tensor(w), torch.tensor(alpha, dtype=torch.float32), mask_t(mask))
    assert np.array_equal(bits(h_np), t_bits(h_t, dtype))
    ref = R.steer(h64, w.astype(np.float64), np.float64(np.float32(alpha)), mask)
    tol = row_tol(ref.out, h64, w.astype(np.float64), np.zeros(h64.shape[:-1]), dtype)
    assert np.all(np.abs(from_storage(h_np, dtype) - ref.out) <= tol)
    if alpha == 0:
        assert np.array_equal(from_storage(h_np, dtype), h64)


@given(cases(with_specials=False), st.lists(st.sampled_from(["project", "clamp", "set", "steer"]), min_size=1, max_size=4))
def test_fused_program(c, kinds):
    """A fused program equals its steps applied one at a time (bit for bit,
    same kernel), on both paths, and its record matches the steps' outputs."""
    dtype, layout, vals, u, mask, rng = c
    d = u.shape[0]
    dirs, params = [], []
    for kind in kinds:
        v = rng.standard_normal(d)
        v = (v / np.linalg.norm(v)).astype(np.float32)
        if kind == "steer":
            v = v * np.float32(rng.uniform(0.1, 2))
        dirs.append(v)
        a, b = sorted(rng.uniform(-1, 1, 2).astype(np.float32))
        params.append((a, b if kind == "clamp" else 0.0))
    codes = [R.OP_NAMES[k] for k in kinds]
    dirs_a = np.stack(dirs).astype(np.float32)
    params_a = np.array(params, dtype=np.float32)
    h_np, h_t = both_paths(vals, dtype, layout)
    rows = vals.shape[:-1]
    rec_np = [np.empty(rows, np.float32), np.empty(rows, np.float32), np.empty(rows, bool)]
    _C.apply_(h_np, dirs_a, codes, params_a, mask=mask, p_in=rec_np[0], p_out=rec_np[1], fired=rec_np[2],
              dtype=np_dtype_arg(dtype))
    rec_t = [torch.empty(rows), torch.empty(rows), torch.empty(rows, dtype=torch.bool)]
    OPS.apply_(h_t, torch.as_tensor(dirs_a), codes, torch.as_tensor(params_a), mask_t(mask), *rec_t)
    assert np.array_equal(bits(h_np), t_bits(h_t, dtype))
    for a, b in zip(rec_np, rec_t):
        assert np.array_equal(bits(a), bits(b.numpy()))
    # one step at a time
    step_h = make_rows(vals, layout, dtype)
    fired = np.zeros(rows, bool)
    first = np.empty(rows, np.float32)
    for k, code in enumerate(codes):
        ch = np.empty(rows, bool)
        if code == R.CLAMP:
            _C.clamp_(step_h, dirs_a[k], params_a[k, 0], params_a[k, 1], mask=mask, changed=ch,
                      p_before=first if k == 0 else None, dtype=np_dtype_arg(dtype))
            fired |= ch
        elif code == R.SET:
            _C.set_projection_(step_h, dirs_a[k], params_a[k, 0], mask=mask, p_before=first if k == 0 else None,
                               dtype=np_dtype_arg(dtype))
        elif code == R.STEER:
            _C.steer_(step_h, dirs_a[k], params_a[k, 0], mask=mask, dtype=np_dtype_arg(dtype))
        elif k == 0:
            first[...] = _C.project(step_h, dirs_a[k], mask=mask, dtype=np_dtype_arg(dtype))
    assert np.array_equal(bits(step_h), bits(h_np))
    assert np.array_equal(rec_np[2], fired)
    if codes[0] != R.STEER:
        assert np.array_equal(bits(rec_np[0]), bits(first))
