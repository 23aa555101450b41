"""Tests of axis_steer._C, the CPython/NumPy module over the C core.

What is checked here: argument handling (shapes, dtypes, strides, broadcasting,
outputs, masks), the exception types and messages, the numbers against the
float64 oracle in axis_steer.runtime.reference, bfloat16 both ways (uint16 bits with
dtype="bfloat16", and ml_dtypes when installed), that the GIL is released, and
that reference counts and memory stay flat over many calls, failing ones
included. The core's own arithmetic is tested in C (csrc/tests/test_core.c).
"""

from __future__ import annotations

import gc
import sys
import threading

import numpy as np
import pytest

from axis_steer import _C
from axis_steer.errors import AxisSteerError
from axis_steer.runtime import reference as ref

from helpers import DTYPES, STORE_TOL, from_storage, proj_tol, to_storage, unit_vector

# ---- helpers -------------------------------------------------------------------


def make_h(rng, shape, dtype, scale=1.0):
    """(array to pass, the dtype= argument, its values as float64)."""
    x = (scale * rng.standard_normal(shape)).astype(np.float32)
    if dtype == "float32":
        return x, None, x.astype(np.float64)
    if dtype == "float16":
        h = x.astype(np.float16)
        return h, None, h.astype(np.float64)
    bits = to_storage(x, "bfloat16").reshape(shape)
    return bits, "bfloat16", from_storage(bits, "bfloat16")


def assert_rows_close(got64, want64, dtype, x0=None):
    rel, floor = STORE_TOL[dtype]
    scale = np.abs(want64) + (0 if x0 is None else np.abs(x0))
    err = np.abs(got64 - want64)
    bad = err > rel * scale + floor
    assert not bad.any(), (
        f"{bad.sum()} elements off: worst {err[bad].max()} at {np.argwhere(bad)[:3]}"
    )


# ---- constants and documentation -----------------------------------------------


def test_constants():
    assert _C.MAX_STEPS == 16
    assert _C.PARALLEL_MIN_ELEMS == 65536
    assert _C.UNIT_TOL == pytest.approx(1e-3)
    assert isinstance(_C.default_threads(), int) and _C.default_threads() >= 1


def test_docstrings_state_shapes():
    assert "(batch, seq, d)" in _C.__doc__
    for name in ["project", "clamp_", "set_projection_", "steer_", "apply_"]:
        doc = getattr(_C, name).__doc__
        assert doc.startswith(name + "("), name
        assert "h.shape[:-1]" in doc, name
    assert "threads" in _C.default_threads.__doc__


# ---- numbers against the float64 reference ------------------------------------------------

SHAPES = [(48,), (9, 48), (3, 5, 48)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_project_matches_reference(dtype, shape):
    rng = np.random.default_rng(1)
    h, dt, h64 = make_h(rng, shape, dtype)
    u = unit_vector(rng, shape[-1])
    p = _C.project(h, u, dtype=dt)
    assert p.dtype == np.float32 and p.shape == shape[:-1]
    want = ref.project(h64, u)
    assert np.all(np.abs(p - want) <= proj_tol(h64, u))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_clamp_matches_reference(dtype, shape):
    rng = np.random.default_rng(2)
    h, dt, h64 = make_h(rng, shape, dtype)
    u = unit_vector(rng, shape[-1])
    rows = shape[:-1]
    lo = (rng.standard_normal(rows) * 0.5 - 0.3).astype(np.float32)
    hi = (lo + np.abs(rng.standard_normal(rows)) + 0.05).astype(np.float32)
    pb, pa = np.empty(rows, np.float32), np.empty(rows, np.float32)
    ch = np.empty(rows, bool)
    h0 = h.copy()
    _C.clamp_(h, u, lo, hi, p_before=pb, p_after=pa, changed=ch, dtype=dt)
    r = ref.clamp(h64, u, lo, hi)
    assert np.all(np.abs(pb - r.p_before[0]) <= proj_tol(h64, u))
    np.testing.assert_array_equal(ch, r.changed[0])
    # rows inside the bounds are bit-for-bit the same; the others match the formula
    inside = ~np.asarray(r.changed[0])
    np.testing.assert_array_equal(h0[inside], h[inside])
    assert_rows_close(from_storage(h, dtype), r.out, dtype, h64)
    # p_after is the projection of what was stored
    np.testing.assert_array_equal(pa, _C.project(h, u, dtype=dt))


@pytest.mark.parametrize("dtype", DTYPES)
def test_set_projection_matches_reference(dtype):
    rng = np.random.default_rng(3)
    h, dt, h64 = make_h(rng, (4, 6, 40), dtype)
    u = unit_vector(rng, 40)
    target = rng.standard_normal((4, 1)).astype(np.float32)
    pb = np.empty((4, 6), np.float32)
    _C.set_projection_(h, u, target, p_before=pb, dtype=dt)
    r = ref.set_projection(h64, u, target)
    assert np.all(np.abs(pb - r.p_before[0]) <= proj_tol(h64, u))
    assert_rows_close(from_storage(h, dtype), r.out, dtype, h64)
    # ablation: target 0 leaves (almost) nothing along u
    _C.set_projection_(h, u, 0.0, dtype=dt)
    assert np.abs(_C.project(h, u, dtype=dt)).max() < 40 * STORE_TOL[dtype][0] * 4


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_steer_is_bit_exact_with_numpy(dtype):
    """h + alpha * w in float32, rounded once to the storage dtype: the same
    bits as NumPy's float32 arithmetic followed by astype."""
    rng = np.random.default_rng(4)
    h, dt, _ = make_h(rng, (7, 33), dtype)
    w = rng.standard_normal(33).astype(np.float32)
    alpha = rng.standard_normal((7,)).astype(np.float32)
    want = (h.astype(np.float32) + alpha[:, None] * w).astype(h.dtype)
    _C.steer_(h, w, alpha, dtype=dt)
    np.testing.assert_array_equal(h.view(np.uint8), want.view(np.uint8))


def test_bfloat16_bits_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 70)).astype(np.float32)
    w = rng.standard_normal(70).astype(np.float32)
    t = torch.from_numpy(x).bfloat16()
    want = (t.float() + 0.37 * torch.from_numpy(w)).bfloat16()
    bits = t.view(torch.int16).numpy().view(np.uint16).copy()
    _C.steer_(bits, w, np.float32(0.37), dtype="bfloat16")
    np.testing.assert_array_equal(bits, want.view(torch.int16).numpy().view(np.uint16))
    # and our own rounding helper agrees with torch on the input
    np.testing.assert_array_equal(to_storage(x, "bfloat16"), t.view(torch.int16).numpy().view(np.uint16))


def test_bfloat16_needs_dtype_for_uint16():
    h = np.zeros((2, 8), np.uint16)
    u = np.eye(8, dtype=np.float32)[0]
    with pytest.raises(TypeError, match=r'uint16.*dtype="bfloat16"'):
        _C.project(h, u)
    with pytest.raises(TypeError, match=r'uint16 is not a float type.*dtype="bfloat16"'):
        _C.project(h, u, dtype="float16")
    assert _C.project(h, u, dtype="bfloat16").shape == (2,)
    # dtype= also asserts float dtypes, and accepts NumPy dtype objects
    h32 = np.ones((2, 8), np.float32)
    _C.project(h32, u, dtype="float32")
    _C.project(h32, u, dtype=np.float32)
    with pytest.raises(TypeError, match='dtype="bfloat16" does not match h'):
        _C.project(h32, u, dtype="bfloat16")
    with pytest.raises(TypeError, match="dtype = 'float64' is not supported"):
        _C.project(h32, u, dtype="float64")


def test_ml_dtypes_bfloat16_by_name():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 24)).astype(np.float32)
    h = x.astype(ml_dtypes.bfloat16)
    u = unit_vector(rng, 24)
    p = _C.project(h, u)
    h64 = h.astype(np.float64)
    assert np.all(np.abs(p - h64 @ u) <= proj_tol(h64, u))
    bits = h.view(np.uint16).copy()
    _C.clamp_(h, u, 0.2)
    _C.clamp_(bits, u, 0.2, dtype="bfloat16")
    np.testing.assert_array_equal(h.view(np.uint16), bits)


def test_apply_matches_one_call_per_step():
    rng = np.random.default_rng(7)
    shape, d = (3, 10, 32), 32
    h = rng.standard_normal(shape).astype(np.float32)
    u1, u2 = unit_vector(rng, d), unit_vector(rng, d)
    w = (0.1 * rng.standard_normal(d)).astype(np.float32)
    lo = rng.standard_normal((3, 10)).astype(np.float32) * 0.5 - 0.2
    hi = lo + 0.6
    target = np.float32(0.25)
    alpha = rng.standard_normal((10,)).astype(np.float32)
    params = np.zeros((4, 2, 3, 10), np.float32)
    params[0, 0], params[0, 1] = lo, hi
    params[1, 0] = target
    params[2, 0] = alpha
    params[3, 0], params[3, 1] = -0.1, np.inf
    dirs = np.stack([u1, u2, w, u1])
    seq = h.copy()
    p_in_want = _C.project(seq, u1)
    ch0, ch3 = np.empty((3, 10), bool), np.empty((3, 10), bool)
    _C.clamp_(seq, u1, lo, hi, changed=ch0)
    _C.set_projection_(seq, u2, target)
    _C.steer_(seq, w, alpha)
    _C.clamp_(seq, u1, -0.1, changed=ch3)
    p_out_want = _C.project(seq, u1)
    for ops in (["clamp", "set", "steer", "clamp"], [1, 2, 3, 1], np.array([1, 2, 3, 1])):
        got = h.copy()
        p_in, p_out = np.empty((3, 10), np.float32), np.empty((3, 10), np.float32)
        fired = np.empty((3, 10), bool)
        _C.apply_(got, dirs, ops, params, p_in=p_in, p_out=p_out, fired=fired)
        np.testing.assert_array_equal(got, seq)
        np.testing.assert_array_equal(p_in, p_in_want)
        np.testing.assert_array_equal(p_out, p_out_want)
        np.testing.assert_array_equal(fired, ch0 | ch3)
    # the float64 oracle agrees
    r = ref.apply(
        h.astype(np.float64),
        [
            ("clamp", u1, lo, hi),
            ("set", u2, 0.25, None),
            ("steer", w, alpha, None),
            ("clamp", u1, -0.1, np.inf),
        ],
    )
    assert_rows_close(seq.astype(np.float64), r.out, "float32", h.astype(np.float64))
    np.testing.assert_array_equal(fired, r.fired)


def test_apply_broadcast_params_and_project_step():
    rng = np.random.default_rng(8)
    h = rng.standard_normal((5, 16)).astype(np.float32)
    u = unit_vector(rng, 16)
    h0 = h.copy()
    params = np.array([[[0.0], [0.0]], [[-0.1], [0.1]]], np.float32)  # (K=2, 2, 1)
    p_in = np.empty(5, np.float32)
    _C.apply_(h, np.stack([u, u]), ["project", "clamp"], params, p_in=p_in)
    np.testing.assert_array_equal(p_in, _C.project(h0, u))
    assert np.all(np.abs(_C.project(h, u)) <= 0.1 + 1e-6)
    # a list of lists converts; float64 dirs convert
    _C.apply_(h, [u.astype(np.float64)], ["clamp"], [[0.0, 1.0]])


# ---- broadcasting and layouts ---------------------------------------------------


def test_per_row_values_broadcast():
    rng = np.random.default_rng(9)
    h = rng.standard_normal((4, 6, 20)).astype(np.float32)
    u = unit_vector(rng, 20)
    cases = [
        (np.float32(-0.1), 0.3),
        (rng.standard_normal((4, 1)).astype(np.float32) - 1.0, np.inf),  # per sequence
        (-np.inf, (rng.random(6) + 0.1).astype(np.float64)),  # per position, float64
        ([-0.5] * 6, [0.5] * 6),  # lists
        (np.array(-1, np.int64), np.array(1, np.int32)),  # integer arrays
        (rng.standard_normal((4, 6)).astype(np.float32) - 2.0, None),
    ]
    for lo, hi in cases:
        got = h.copy()
        _C.clamp_(got, u, lo, hi)
        r = ref.clamp(h.astype(np.float64), u, lo, np.inf if hi is None else hi)
        assert_rows_close(got.astype(np.float64), r.out, "float32", h.astype(np.float64))
        inside = ~np.asarray(r.changed[0])
        np.testing.assert_array_equal(got[inside], h[inside])


def test_per_row_values_errors():
    h = np.ones((4, 6, 8), np.float32)
    u = np.eye(8, dtype=np.float32)[0]
    with pytest.raises(ValueError, match=r"lo: shape \(5,\) does not broadcast .* \(4, 6\)"):
        _C.clamp_(h, u, np.zeros(5))
    with pytest.raises(ValueError, match=r"hi: shape \(2, 4, 6\)"):
        _C.clamp_(h, u, 0.0, np.zeros((2, 4, 6)))
    with pytest.raises(TypeError, match="target: dtype complex128"):
        _C.set_projection_(h, u, np.zeros(6, complex))
    with pytest.raises(TypeError, match="alpha"):
        _C.steer_(h, u, "1.0")
    with pytest.raises(TypeError, match="bool"):
        _C.steer_(h, u, True)
    with pytest.raises(TypeError, match="alpha.*None"):
        _C.steer_(h, u, None)
    with pytest.raises(ValueError, match="float32 range"):
        _C.clamp_(h, u, 1e39)


def test_strided_rows_and_untouched_padding():
    rng = np.random.default_rng(10)
    big = rng.standard_normal((3, 7, 40)).astype(np.float32)
    before = big.copy()
    h = big[:, 1:6, :32]  # padded rows, strided outer and inner
    u = unit_vector(rng, 32)
    want = ref.clamp(h.astype(np.float64), u, 0.2).out
    _C.clamp_(h, u, 0.2)
    assert_rows_close(h.astype(np.float64), want, "float32", before[:, 1:6, :32].astype(np.float64))
    np.testing.assert_array_equal(big[:, :, 32:], before[:, :, 32:])
    np.testing.assert_array_equal(big[:, 0], before[:, 0])
    np.testing.assert_array_equal(big[:, 6], before[:, 6])
    # seq-major memory seen as (batch, seq, d): outer stride < inner stride
    mem = rng.standard_normal((6, 2, 16)).astype(np.float32)
    hb = mem.transpose(1, 0, 2)
    v = unit_vector(rng, 16)
    np.testing.assert_allclose(_C.project(hb, v), hb.astype(np.float64) @ v, atol=1e-5)
    _C.set_projection_(hb, v, 0.0)
    assert np.abs(hb.astype(np.float64) @ v).max() < 1e-5
    # a misaligned (but last-axis contiguous) float32 view
    raw = np.zeros(4 * 5 * 16 + 1, np.uint8)
    hm = raw[1:].view(np.float32).reshape(5, 16)
    assert not hm.flags.aligned
    hm[:] = rng.standard_normal((5, 16))
    np.testing.assert_allclose(_C.project(hm, v), hm.astype(np.float64) @ v, atol=1e-5)
    _C.clamp_(hm, v, 0.5)
    assert np.all(_C.project(hm, v) >= 0.5 - 1e-5)
    # an (n, d) output view with strides
    out = np.full((5, 3), 7.0, np.float32)
    res = _C.project(hm, v, out=out[:, 1])
    assert res.base is out
    np.testing.assert_array_equal(out[:, [0, 2]], 7.0)


def test_layout_errors():
    u = np.eye(8, dtype=np.float32)[0]
    h = np.ones((4, 16), np.float32)
    with pytest.raises(ValueError, match=r"last axis .*np\.ascontiguousarray\(h\)"):
        _C.project(h[:, ::2], u)
    with pytest.raises(ValueError, match="non-negative multiple"):
        _C.clamp_(np.ones((4, 8), np.float32)[::-1], u, 0.0)
    with pytest.raises(ValueError, match="dimensions"):
        _C.project(np.ones((2, 2, 2, 8), np.float32), u)
    with pytest.raises(ValueError, match="dimensions"):
        _C.project(np.array(1.0, np.float32), u)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        _C.project([[1.0] * 8], u)
    with pytest.raises(ValueError, match="d >= 1"):
        _C.project(np.ones((3, 0), np.float32), np.ones(0, np.float32))
    # rows that overlap each other (a sliding window view)
    base = np.arange(20, dtype=np.float32)
    win = np.lib.stride_tricks.as_strided(base, shape=(5, 8), strides=(8, 4))
    with pytest.raises(ValueError, match="h: row stride 2 .* overlap"):
        _C.steer_(win, u, 1.0)


def test_empty_h():
    u = np.eye(8, dtype=np.float32)[0]
    for shape in [(0, 8), (2, 0, 8), (0, 3, 8)]:
        h = np.empty(shape, np.float32)
        assert _C.project(h, u).shape == shape[:-1]
        _C.clamp_(h, u, 0.0, p_before=np.empty(shape[:-1], np.float32))
        _C.set_projection_(h, u, 0.0)
        _C.steer_(h, u, 1.0)
        _C.apply_(h, u[None], ["clamp"], np.zeros((1, 2), np.float32))
    # the direction is still checked
    with pytest.raises(ValueError, match="norm"):
        _C.project(np.empty((0, 8), np.float32), 2 * u)


# ---- dtypes and directions -----------------------------------------------------


def test_h_dtype_errors():
    u = np.eye(8, dtype=np.float32)[0]
    with pytest.raises(
        TypeError, match=r"h: dtype float64 is not supported .*astype\(np.float32\)"
    ):
        _C.project(np.ones((2, 8)), u)
    with pytest.raises(TypeError, match="h: dtype int32"):
        _C.clamp_(np.ones((2, 8), np.int32), u, 0.0)
    with pytest.raises(TypeError, match="byte order"):
        _C.project(np.ones((2, 8), ">f4"), u)


def test_direction_errors():
    h = np.ones((3, 8), np.float32)
    u = np.eye(8, dtype=np.float32)[1]
    with pytest.raises(ValueError, match=r"u: shape \(7,\) \(expected \(8,\)"):
        _C.project(h, u[:7])
    with pytest.raises(ValueError, match=r"u: shape \(1, 8\)"):
        _C.clamp_(h, u[None], 0.0)
    with pytest.raises(TypeError, match="u: dtype float16"):
        _C.project(h, u.astype(np.float16))
    with pytest.raises(TypeError, match="w: dtype int64"):
        _C.steer_(h, np.ones(8, np.int64), 1.0)
    with pytest.raises(ValueError, match="u has norm 0 .*zero vector has no direction"):
        _C.clamp_(h, np.zeros(8, np.float32), 0.0)
    bad = u.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match=r"u\[3\] = nan"):
        _C.set_projection_(h, bad, 0.0)
    with pytest.raises(ValueError, match=r"w\[3\] = nan"):
        _C.steer_(h, bad, 1.0)
    with pytest.raises(ValueError, match="u has norm 2 .*unit vector"):
        _C.project(h, 2 * u)
    # float64 and lists are converted; a steering vector need not be unit
    _C.project(h, u.astype(np.float64))
    _C.project(h, [0.0, 1.0] + [0.0] * 6)
    _C.steer_(h, 3 * u, 0.5)
    assert np.all(h[:, 1] == 2.5)
    # a strided direction is copied, not rejected
    _C.project(h, np.repeat(u, 2)[::2])


def test_lo_greater_than_hi():
    h = np.ones((4, 8), np.float32)
    u = np.eye(8, dtype=np.float32)[0]
    with pytest.raises(ValueError, match=r"lo = 2 > hi = 1 \(expected lo <= hi"):
        _C.clamp_(h, u, 2.0, 1.0)
    lo = np.zeros(4, np.float32)
    lo[2] = 5.0
    with pytest.raises(ValueError, match=r"lo = 5 > hi = 1 at row \(0, 2\)"):
        _C.clamp_(h, u, lo, 1.0)
    h0 = h.copy()
    _C.clamp_(h, u, lo, 1.0, mask=np.array([1, 1, 0, 1], bool))  # masked row not read
    np.testing.assert_array_equal(h[2], h0[2])
    # NaN in an array bound is no bound for that row
    _C.clamp_(h, u, np.full(4, np.nan, np.float32), np.array(np.nan, np.float32))
    np.testing.assert_array_equal(h, h0)
    # a NaN scalar bound is refused, whatever the scalar's type (as axis_steer.ops does)
    for nan in (np.nan, np.float32("nan"), np.float64("nan"), np.float16("nan")):
        with pytest.raises(ValueError, match="lo = .*nan.*expected a finite bound, or -inf"):
            _C.clamp_(h, u, nan)
        with pytest.raises(ValueError, match="hi = .*nan.*expected a finite bound, or inf"):
            _C.clamp_(h, u, 0.0, nan)
    # and so is a scalar bound that could never fire
    with pytest.raises(ValueError, match=r"lo = .*inf.*expected a finite bound"):
        _C.clamp_(h, u, np.float32(np.inf))
    with pytest.raises(ValueError, match=r"hi = .*inf.*expected a finite bound"):
        _C.clamp_(h, u, None, -np.inf)
    np.testing.assert_array_equal(h, h0)


# ---- outputs, masks, overlaps ----------------------------------------------------


def test_output_errors():
    h = np.ones((4, 8), np.float32)
    u = np.eye(8, dtype=np.float32)[0]
    with pytest.raises(TypeError, match="p_before: dtype float64"):
        _C.clamp_(h, u, p_before=np.empty(4))
    with pytest.raises(TypeError, match="changed: dtype float32"):
        _C.clamp_(h, u, changed=np.empty(4, np.float32))
    with pytest.raises(
        ValueError, match=r"p_after: shape \(4, 1\) \(expected exactly h.shape\[:-1\] = \(4,\)\)"
    ):
        _C.clamp_(h, u, p_after=np.empty((4, 1), np.float32))
    ro = np.empty(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        _C.project(h, u, out=ro)
    with pytest.raises(TypeError, match="p_in: expected a numpy.ndarray"):
        _C.apply_(h, u[None], [0], np.zeros((1, 2)), p_in=[0.0] * 4)
    shared = np.lib.stride_tricks.as_strided(np.empty(1, np.float32), shape=(4,), strides=(0,))
    with pytest.raises(ValueError, match="share one element"):
        _C.clamp_(h, u, p_before=shared)
    with pytest.raises(ValueError, match="non-negative strides"):
        _C.project(h, u, out=np.empty(4, np.float32)[::-1])
    # uint8 flags are accepted like bool
    ch = np.empty(4, np.uint8)
    _C.clamp_(h, u, 2.0, changed=ch)
    assert ch.tolist() == [1, 1, 1, 1]


def test_overlap_errors_name_the_argument():
    rng = np.random.default_rng(11)
    h = rng.standard_normal((4, 8)).astype(np.float32)
    u = unit_vector(rng, 8)
    p = np.empty(4, np.float32)
    with pytest.raises(ValueError, match="outputs p_before and p_after overlap"):
        _C.clamp_(h, u, 0.0, p_before=p, p_after=p)
    with pytest.raises(ValueError, match="p_before overlaps the memory of h"):
        _C.clamp_(h, u, 0.0, p_before=h[:, 0])
    with pytest.raises(ValueError, match="out overlaps the memory of h"):
        _C.project(h, u, out=h[:, 3])
    h2 = rng.standard_normal((8, 8)).astype(np.float32)
    h2[0] = u
    with pytest.raises(ValueError, match="u overlaps the memory of h"):
        _C.clamp_(h2, h2[0], 0.0)
    lo = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="p_after overlaps the memory of lo"):
        _C.clamp_(h, u, lo, p_after=lo)
    with pytest.raises(ValueError, match="lo overlaps the memory of h"):
        _C.clamp_(h, u, h[:, 1])
    m = np.ones(4, np.uint8)
    with pytest.raises(ValueError, match="changed overlaps the memory of mask"):
        _C.clamp_(h, u, 0.0, mask=m, changed=m)
    pin = np.empty(4, np.float32)
    with pytest.raises(ValueError, match="outputs p_in and p_out overlap"):
        _C.apply_(h, u[None], ["clamp"], np.zeros((1, 2)), p_in=pin, p_out=pin)
    params = np.zeros((1, 2, 4), np.float32)
    with pytest.raises(ValueError, match="p_out overlaps the memory of params"):
        _C.apply_(h, u[None], ["clamp"], params, p_out=params[0, 0])


def test_read_only_h():
    h = np.ones((3, 8), np.float32)
    h.flags.writeable = False
    u = np.eye(8, dtype=np.float32)[0]
    for call in (
        lambda: _C.clamp_(h, u, 0.0),
        lambda: _C.set_projection_(h, u, 0.0),
        lambda: _C.steer_(h, u, 1.0),
        lambda: _C.apply_(h, u[None], ["set"], np.zeros((1, 2))),
    ):
        with pytest.raises(ValueError, match=r"h is read-only .*h\.copy\(\)"):
            call()
    assert _C.project(h, u).tolist() == [1.0, 1.0, 1.0]  # reading is fine


def test_mask():
    rng = np.random.default_rng(12)
    h = rng.standard_normal((3, 5, 16)).astype(np.float32)
    u = unit_vector(rng, 16)
    mask = rng.random((3, 5)) > 0.3
    for m in (mask, mask.astype(np.uint8)):
        got = h.copy()
        pb, ch = np.empty((3, 5), np.float32), np.empty((3, 5), bool)
        _C.clamp_(got, u, 1.0, mask=m, p_before=pb, changed=ch)
        np.testing.assert_array_equal(got[~mask], h[~mask])
        assert np.isnan(pb[~mask]).all() and not ch[~mask].any()
        r = ref.clamp(h.astype(np.float64), u, 1.0, mask=mask)
        assert_rows_close(got.astype(np.float64), r.out, "float32", h.astype(np.float64))
    # per sequence (broadcast)
    got = h.copy()
    _C.steer_(got, u, 2.0, mask=np.array([[True], [False], [True]]))
    np.testing.assert_array_equal(got[1], h[1])
    assert not np.array_equal(got[0], h[0])
    p = _C.project(h, u, mask=[True, False, True, True, True])
    assert np.isnan(p[:, 1]).all() and not np.isnan(p[:, 0]).any()
    with pytest.raises(TypeError, match="mask: dtype int64"):
        _C.project(h, u, mask=np.ones((3, 5), np.int64))
    # a mask means 0 or 1: a float mask, or uint8 values other than 0 and 1, are refused
    # (0.5 or 7 read as "true" would be a guess); nothing is written
    with pytest.raises(TypeError, match="mask: dtype float64 is not supported"):
        _C.steer_(h.copy(), u, 1.0, mask=np.full((3, 5), 0.5))
    bad = mask.astype(np.uint8)
    bad[1, 2] = 7
    got = h.copy()
    with pytest.raises(ValueError, match=r"mask = 7 at row \(1, 2\) \(expected 0 or 1"):
        _C.steer_(got, u, 1.0, mask=bad)
    np.testing.assert_array_equal(got, h)
    with pytest.raises(ValueError, match=r"mask: shape \(4,\) does not broadcast"):
        _C.project(h, u, mask=np.ones(4, bool))


def test_nan_rows_are_left_alone():
    rng = np.random.default_rng(13)
    h = rng.standard_normal((4, 12)).astype(np.float32)
    h[1, 3] = np.nan
    h[2, 0] = np.inf
    u = unit_vector(rng, 12)
    h0 = h.copy()
    ch = np.empty(4, bool)
    pb = np.empty(4, np.float32)
    _C.clamp_(h, u, 10.0, p_before=pb, changed=ch)
    np.testing.assert_array_equal(h[1:3].view(np.uint32), h0[1:3].view(np.uint32))
    assert ch.tolist() == [True, False, False, True]
    assert np.isnan(pb[1]) and not np.isfinite(pb[2])
    h = h0.copy()
    _C.set_projection_(h, u, np.array([np.nan, 0.0, 0.0, np.inf], np.float32))
    np.testing.assert_array_equal(h[[0, 1, 2, 3]].view(np.uint32), h0.view(np.uint32))


# ---- apply_ arguments --------------------------------------------------------------


def test_apply_errors():
    h = np.ones((4, 8), np.float32)
    u = np.eye(8, dtype=np.float32)
    p2 = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"ops\[1\] = 'cap' is not an op"):
        _C.apply_(h, u[:2], ["clamp", "cap"], p2)
    with pytest.raises(ValueError, match=r"ops\[0\] = 7 is not an op"):
        _C.apply_(h, u[:1], [7], p2[:1])
    with pytest.raises(TypeError, match="single op write"):
        _C.apply_(h, u[:1], "clamp", p2[:1])
    with pytest.raises(TypeError, match=r"ops\[0\]"):
        _C.apply_(h, u[:1], [1.5], p2[:1])
    with pytest.raises(ValueError, match="0 ops given"):
        _C.apply_(h, u[:0], [], np.zeros((0, 2)))
    with pytest.raises(ValueError, match="17 ops given"):
        _C.apply_(h, np.tile(u[:1], (17, 1)), [0] * 17, np.zeros((17, 2)))
    _C.apply_(h, np.tile(u[:1], (16, 1)), [0] * 16, np.zeros((16, 2)))
    with pytest.raises(ValueError, match=r"dirs: shape \(3, 8\) \(expected \(K, d\) = \(2, 8\)"):
        _C.apply_(h, u[:3], [1, 1], p2)
    with pytest.raises(TypeError, match="dirs: dtype int64"):
        _C.apply_(h, np.eye(8, dtype=np.int64)[:2], [1, 1], p2)
    with pytest.raises(ValueError, match=r"params: shape \(2, 3\) \(expected \(K, 2, \*B\)"):
        _C.apply_(h, u[:2], [1, 1], np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"params\[k, i\]: shape \(5,\) does not broadcast"):
        _C.apply_(h, u[:2], [1, 1], np.zeros((2, 2, 5)))
    params = np.array([[-np.inf, np.inf], [3.0, 1.0]], np.float32)
    with pytest.raises(ValueError, match=r"params\[1, 0\] = 3 > params\[1, 1\] = 1"):
        _C.apply_(h, u[:2], ["clamp", "clamp"], params)
    with pytest.raises(ValueError, match=r"dirs\[1\] has norm 3"):
        _C.apply_(h, np.stack([u[0], 3 * u[1]]), ["clamp", "set"], p2)
    # a steer step takes any vector, and reads params[k, 1] never
    _C.apply_(
        h, np.stack([u[0], 3 * u[1]]), ["clamp", "steer"], np.array([[0, 9], [1, -9]], np.float32)
    )
    assert h[0, 1] == 4.0


# ---- threads and the GIL -------------------------------------------------------------


def test_thread_count_does_not_change_bits():
    rng = np.random.default_rng(14)
    h = rng.standard_normal((2, 300, 256)).astype(np.float32)  # above PARALLEL_MIN_ELEMS
    u = unit_vector(rng, 256)
    outs = []
    for threads in (1, 2, 4):
        g = h.copy()
        pa = np.empty((2, 300), np.float32)
        _C.clamp_(g, u, -0.2, 0.3, p_after=pa, threads=threads)
        outs.append((g, pa))
    for g, pa in outs[1:]:
        np.testing.assert_array_equal(g, outs[0][0])
        np.testing.assert_array_equal(pa, outs[0][1])


def test_gil_is_released_two_threads():
    """Two Python threads run large kernels at once and both finish (no
    deadlock), while the main thread keeps running Python code."""
    rng = np.random.default_rng(15)
    hs = [rng.standard_normal((512, 512)).astype(np.float32) for _ in range(2)]
    u = unit_vector(rng, 512)
    done, errors = [], []

    def work(h):
        try:
            for _ in range(30):
                _C.clamp_(h, u, -0.5, 0.5, threads=1)
                _C.steer_(h, u, 0.01, threads=1)
            done.append(1)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(h,)) for h in hs]
    for t in ts:
        t.start()
    ticks = 0
    while any(t.is_alive() for t in ts) and ticks < 10**7:
        ticks += 1
    for t in ts:
        t.join(timeout=60)
    assert not errors and len(done) == 2
    assert all(not t.is_alive() for t in ts)


def test_gil_is_released_during_the_kernel():
    """While one thread is inside a long kernel (tens of ms), the main thread
    keeps running Python: its loop leaves no gap longer than half the call.
    Holding the GIL would leave one gap as long as the kernel."""
    import time

    rng = np.random.default_rng(17)
    h = rng.standard_normal((2048, 1024)).astype(np.float16)  # float16 is the slow path
    dirs = rng.standard_normal((8, 1024))
    dirs = (dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).astype(np.float32)
    params = np.zeros((8, 2), np.float32)
    window = []
    started = threading.Event()

    def work():
        started.set()
        time.sleep(0.01)  # let the main loop get going
        t0 = time.perf_counter()
        _C.apply_(h, dirs, ["set"] * 8, params, threads=1)
        window.append((t0, time.perf_counter()))

    t = threading.Thread(target=work)
    stamps = []
    t.start()
    started.wait()
    while t.is_alive():
        stamps.append(time.perf_counter())
    t.join()
    ((a, b),) = window
    inside = np.array([a] + [x for x in stamps if a < x < b] + [b])
    assert b - a > 0.005, "kernel too short to tell"
    assert np.diff(inside).max() < 0.5 * (b - a), (
        f"the main thread stalled {np.diff(inside).max() * 1e3:.1f} ms of a "
        f"{(b - a) * 1e3:.1f} ms kernel call"
    )


# ---- reference counts and leaks --------------------------------------------------------


def _calls(h, u, lo, pb, ch, mask, dirs, params, bad_u, long_u):
    """One round of 14 calls, 8 of them failing."""
    _C.project(h, u)
    _C.project(h, u, out=pb, mask=mask)
    _C.clamp_(h, u, lo, 1.0, p_before=pb, changed=ch)
    _C.set_projection_(h, u, 0.0)
    _C.steer_(h, u, lo)
    _C.apply_(h, dirs, ["clamp", "steer"], params)
    for bad in (
        lambda: _C.clamp_(h, u, 2.0, 1.0),  # core error
        lambda: _C.project(h, bad_u),  # direction shape
        lambda: _C.project(h, long_u),  # core error after `out` was made
        lambda: _C.project(h, u, out=ch),  # out dtype
        lambda: _C.clamp_(h, u, lo, p_before=pb, p_after=pb),  # overlap
        lambda: _C.apply_(h, dirs, ["clamp", "nope"], params),  # ops
        lambda: _C.steer_(h, u, np.zeros(3)),  # broadcast
        lambda: _C.project(h.astype(np.float16), u, dtype="bfloat16"),  # dtype
    ):
        try:
            bad()
        except (TypeError, ValueError):
            pass


def _fixture():
    rng = np.random.default_rng(16)
    h = rng.standard_normal((6, 16)).astype(np.float32)
    u = unit_vector(rng, 16)
    return dict(
        h=h,
        u=u,
        lo=np.full(6, -0.1, np.float32),
        pb=np.empty(6, np.float32),
        ch=np.empty(6, bool),
        mask=np.ones(6, bool),
        dirs=np.stack([u, u]),
        params=np.zeros((2, 2, 6), np.float32),
        bad_u=u[:5],
        long_u=2 * u,
    )


def test_reference_counts_are_exact():
    args = _fixture()
    for _ in range(10):
        _calls(**args)
    gc.collect()
    before = {k: sys.getrefcount(v) for k, v in args.items()}
    for _ in range(1000):
        _calls(**args)
    gc.collect()
    after = {k: sys.getrefcount(v) for k, v in args.items()}
    assert before == after
    out = np.empty(6, np.float32)
    n = sys.getrefcount(out)
    assert _C.project(args["h"], args["u"], out=out) is out
    assert sys.getrefcount(out) == n


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_no_memory_growth_over_many_calls():
    """14 calls a round (8 failing), 100k calls in all: a leak of a small
    object per call would add megabytes."""
    args = _fixture()
    for _ in range(500):
        _calls(**args)
    gc.collect()
    rss0 = _rss_bytes()
    for _ in range(100_000 // 14):
        _calls(**args)
    gc.collect()
    grown = _rss_bytes() - rss0
    assert grown < 2 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 100k calls"


def test_no_python_allocations_survive_calls():
    """tracemalloc sees every Python object and NumPy buffer: after a warm-up,
    2,000 rounds (28k calls, 16k failing) must leave nothing behind."""
    import tracemalloc

    args = _fixture()
    for _ in range(200):
        _calls(**args)
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(50):
            _calls(**args)
        gc.collect()
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(2000):
            _calls(**args)
        gc.collect()
        now, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert now - base < 32 * 1024, f"{now - base} bytes still allocated after 28k calls"


def test_axis_steer_error_is_the_core_failure_class():
    assert issubclass(AxisSteerError, RuntimeError)
    assert AxisSteerError.__doc__


# ---- edges of float32, and arguments whose type would change their meaning ---------


def test_updates_whose_intermediate_overflows_stay_finite():
    """t - p = 4e38 overflows float32 although the answer (2e38) fits: the row gets the
    answer, as the float64 reference says, and no inf or NaN spreads into it."""
    u = np.eye(4, dtype=np.float32)[0]
    u68 = np.array([0.6, 0.8, 0, 0], np.float32)
    h = np.zeros((3, 4), np.float32)
    h[0, 0] = -2e38
    h[1, :2] = [1.2e38, 1.6e38]  # <h, u68> = 2e38
    h[2, :2] = [3e38, 3e38]  # <h, u68> overflows float32: not finite, never written
    cases = [
        (lambda x: _C.clamp_(x, u, 2e38), ref.clamp(h.astype(np.float64), u, 2e38)),
        (lambda x: _C.set_projection_(x, u, 2e38), ref.set_projection(h.astype(np.float64), u, 2e38)),
        (lambda x: _C.clamp_(x, u68, None, -2e38), ref.clamp(h.astype(np.float64), u68, -np.inf, -2e38)),
    ]
    for run, want in cases:
        got = h.copy()
        run(got)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got.astype(np.float64), want.out, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(got[2], h[2])
    # steering: alpha * w[0] = 6e38 overflows, h + alpha w = 3e38 fits
    got = np.array([[-3e38, 0.0, 0.0, 0.0]], np.float32)
    _C.steer_(got, np.array([2e38, 0.0, 1.0, 0.0], np.float32), 3.0)
    np.testing.assert_allclose(got, [[3e38, 0.0, 3.0, 0.0]], rtol=1e-6)
    # in bfloat16 storage too (same range as float32)
    bits = to_storage(h[:1], "bfloat16")
    _C.clamp_(bits, u, 2e38, dtype="bfloat16")
    np.testing.assert_allclose(from_storage(bits, "bfloat16")[0], [2e38, 0, 0, 0], rtol=2.0**-8)


def test_value_arguments_refuse_what_would_change_their_meaning():
    h = np.ones((4, 8), np.float32)
    u = np.eye(8, dtype=np.float32)[0]
    h0 = h.copy()
    # finite values that float32 would turn into infinities (a floor that never fires)
    for big in (1e39, np.float64(1e39), 10**39, -(10**400)):
        with pytest.raises(ValueError, match=r"lo = .* is beyond the float32 range"):
            _C.clamp_(h, u, big)
    with pytest.raises(ValueError, match=r"lo: the value 1e\+39 at index \(2,\) is beyond the float32 range"):
        _C.clamp_(h, u, np.array([0.0, 1.0, 1e39, 2.0]))
    with pytest.raises(ValueError, match=r"params: the value -1e\+39 at index \(0, 0\) is beyond"):
        _C.apply_(h, u[None], ["steer"], np.array([[-1e39, 0.0]]))
    ok = h.copy()
    _C.clamp_(ok, u, np.array([-np.inf, 0.0, 1.0, 2.0]))  # infinities stay what they are
    assert ok[:, 0].tolist() == [1.0, 1.0, 1.0, 2.0]
    # bools and complex numbers are not bounds, targets or coefficients
    for flag in (True, np.True_, np.array(True)):
        with pytest.raises(TypeError, match="bool"):
            _C.steer_(h, u, flag)
    for z in (1j, np.complex64(1 + 1j), np.array([1j] * 4)):
        with pytest.raises(TypeError, match="complex"):
            _C.set_projection_(h, u, z)
    with pytest.raises(TypeError, match="u: dtype complex64 is not supported"):
        _C.project(h, u.astype(np.complex64))
    np.testing.assert_array_equal(h, h0)


def test_threads_must_be_an_int():
    h = np.ones((2, 8), np.float32)
    u = np.eye(8, dtype=np.float32)[0]
    for bad in ("x", 2.0, None, True):
        with pytest.raises(TypeError, match=r"threads = .* \(expected an int"):
            _C.project(h, u, threads=bad)
    with pytest.raises(ValueError, match=r"threads = 1099511627776 is out of range"):
        _C.clamp_(h, u, 0.0, threads=2**40)
    assert _C.project(h, u, threads=np.int64(2)).tolist() == [1.0, 1.0]
