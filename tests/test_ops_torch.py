"""The torch operators against the float64 reference, over dtype x shape x row
layout x bounds, plus their edge cases, opcheck, gradients and torch.compile."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from axis_steer.runtime import ops as O  # noqa: E402
from axis_steer.runtime import reference as R  # noqa: E402
from axis_steer.runtime._torch_ops import apply_backward_h  # noqa: E402

from helpers import (  # noqa: E402
    DTYPES,
    LAYOUTS,
    assert_proj_close,
    bounds_for,
    check_clamp_rows,
    make_rows,
    proj_tol,
    row_tol,
    torch_to_f64,
    unit_vector,
)

OPS = torch.ops.axis_steer
N_ROWS = (0, 1, 3, 257)
DIMS = (1, 7, 64, 4095, 4096, 8192)
BOUNDS = ("floor", "ceiling", "band", "equal", "per_row")
TDTYPE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def f32(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bounds", BOUNDS)
def test_clamp_grid(dtype, layout, bounds):
    rng = np.random.default_rng(hash((dtype, layout, bounds)) % 2**32)
    for n in N_ROWS:
        for d in DIMS:
            if n * d > 257 * 4096 and dtype != "bfloat16":
                continue  # the largest shapes once per bounds/layout is enough
            vals = rng.standard_normal((n, d)) * rng.uniform(0.1, 3.0)
            u = unit_vector(rng, d)
            h = make_rows(vals, layout, dtype, xp="torch")
            h64 = torch_to_f64(h)
            p_ref = R.project(h64, u.astype(np.float64))
            lo, hi = bounds_for(bounds, p_ref, rng)
            # in place, with every optional output
            pb = torch.empty(n, dtype=torch.float32)
            pa = torch.empty(n, dtype=torch.float32)
            ch = torch.empty(n, dtype=torch.bool)
            out_of_place = O.clamp(h, f32(u), f32(lo), f32(hi))
            before = h.clone()
            OPS.clamp_(h, f32(u), f32(lo), f32(hi), None, pb, pa, ch)
            out64 = torch_to_f64(h)
            check_clamp_rows(h64, out64, u, lo, hi, dtype, changed=ch.numpy())
            assert_proj_close(pb.numpy(), p_ref, h64, u.astype(np.float64))
            assert_proj_close(pa.numpy(), R.project(out64, u.astype(np.float64)), out64, u.astype(np.float64))
            # untouched rows are bit-for-bit the input
            assert torch.equal(h[~ch].view(torch.int16 if dtype != "float32" else torch.int32),
                               before[~ch].view(torch.int16 if dtype != "float32" else torch.int32))
            # out of place gives the same bits
            assert torch.equal(out_of_place, h), (n, d)
            # project agrees with the reference
            assert_proj_close(OPS.project(before, f32(u)).numpy(), p_ref, h64, u.astype(np.float64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_steer_and_set_projection_grid(dtype, layout):
    rng = np.random.default_rng(7)
    for n in N_ROWS:
        for d in (1, 7, 64, 4095):
            vals = rng.standard_normal((n, d))
            u = unit_vector(rng, d)
            w = (rng.standard_normal(d) * 0.3).astype(np.float32)
            h = make_rows(vals, layout, dtype, xp="torch")
            h64 = torch_to_f64(h)
            alpha = (rng.standard_normal(n) if n else np.zeros(0)).astype(np.float32)
            OPS.steer_(h, f32(w), f32(alpha))
            ref = R.steer(h64, w.astype(np.float64), alpha.astype(np.float64))
            tol = row_tol(ref.out, h64, w.astype(np.float64), np.zeros(n), dtype)
            assert np.all(np.abs(torch_to_f64(h) - ref.out) <= tol)
            # set projection to a per-row target
            h = make_rows(vals, layout, dtype, xp="torch")
            target = (rng.standard_normal(n) if n else np.zeros(0)).astype(np.float32)
            pb = torch.empty(n)
            OPS.set_projection_(h, f32(u), f32(target), None, pb)
            ref = R.set_projection(h64, u.astype(np.float64), target.astype(np.float64))
            tol = row_tol(ref.out, h64, u.astype(np.float64), proj_tol(h64, u.astype(np.float64)), dtype)
            assert np.all(np.abs(torch_to_f64(h) - ref.out) <= tol)
            assert_proj_close(pb.numpy(), ref.p_before[0], h64, u.astype(np.float64))


def test_batch_seq_rows_and_per_sequence_bounds():
    """(batch, seq, d) with a bound per sequence (batch, 1) and a mask."""
    rng = np.random.default_rng(3)
    b, s, d = 3, 5, 32
    vals = rng.standard_normal((b, s, d))
    u = unit_vector(rng, d)
    lo = np.array([[0.5], [-10.0], [0.0]], dtype=np.float32)
    mask = np.ones((b, s), dtype=bool)
    mask[0, :2] = False  # left padding of sequence 0
    h = torch.as_tensor(vals, dtype=torch.float32)
    h64 = vals.astype(np.float32).astype(np.float64)
    pb, pa, ch = torch.empty(b, s), torch.empty(b, s), torch.empty(b, s, dtype=torch.bool)
    OPS.clamp_(h, f32(u), f32(lo), f32(np.inf), torch.as_tensor(mask), pb, pa, ch)
    check_clamp_rows(h64, torch_to_f64(h), u, lo, np.inf, "float32", mask=mask, changed=ch.numpy())
    assert torch.isnan(pb[0, :2]).all() and torch.isnan(pa[0, :2]).all() and not ch[0, :2].any()
    assert np.array_equal(torch_to_f64(h)[0, :2], h64[0, :2])
    assert not ch[1].any()  # the -10 floor never fires
    assert (pa[ch] >= torch.as_tensor(lo).expand(b, s)[ch] - 1e-5).all()


def test_fused_program_matches_sequential_reference():
    """Several directions on one layer apply in order, each seeing the last."""
    rng = np.random.default_rng(11)
    for dtype in DTYPES:
        b, s, d = 2, 9, 96
        vals = rng.standard_normal((b, s, d)) * 2
        u1, u2, u3 = (unit_vector(rng, d) for _ in range(3))
        w = (rng.standard_normal(d) * 0.2).astype(np.float32)
        steps = [
            O.Step.clamp(u1, -0.3, np.inf),
            O.Step.steer(w, 0.7),
            O.Step.clamp(u2, -np.inf, 0.2),
            O.Step.set(u3, 0.0),
        ]
        h = torch.as_tensor(vals, dtype=TDTYPE[dtype])
        h64 = torch_to_f64(h)
        out, changed = OPS.apply(h, *O._program_t(h, steps)[0:3])
        # the reference, step by step, taking the kernel's decision on rows
        # whose projection is within rounding of a bound
        x = h64.copy()
        for k, st in enumerate(steps):
            ref = R.apply(x, [tuple(st)])
            if st.op == "clamp":
                tp = proj_tol(x, np.asarray(st.dir, np.float64))
                p = ref.p_before[0]
                amb = (np.abs(p - st.a) <= tp) | (np.abs(p - st.b) <= tp)
                assert np.all((changed[k].numpy() == ref.changed[0]) | amb)
            x = np.where(changed[k].numpy()[..., None] | (st.op == "steer"), ref.out, x)
        tol = 8 * row_tol(x, h64, np.abs(u1) + np.abs(u2) + np.abs(u3) + np.abs(w), np.abs(x).sum(-1) * 1e-5, dtype)
        assert np.all(np.abs(torch_to_f64(out) - x) <= tol), dtype
        # in place with a record equals out of place bit for bit
        h2 = h.clone()
        _, rec = O.apply_(h2, steps, record=True)
        assert torch.equal(h2, out)
        assert torch.equal(rec.fired, changed[0] | changed[2])
        assert_proj_close(rec.p_in.numpy(), R.project(h64, u1.astype(np.float64)), h64, u1.astype(np.float64))
        o64 = torch_to_f64(out)
        assert_proj_close(rec.p_out.numpy(), R.project(o64, u1.astype(np.float64)), o64, u1.astype(np.float64))


# ---- edge cases ----------------------------------------------------------------------


def test_nan_and_inf_rows_are_never_written():
    d = 16
    u = torch.zeros(d)
    u[0] = 1.0
    h = torch.ones(4, d)
    h[0, 3] = float("nan")
    h[1, 0] = float("inf")
    h[2, 5] = float("-inf")
    before = h.clone()
    pb, pa, ch = torch.empty(4), torch.empty(4), torch.empty(4, dtype=torch.bool)
    OPS.clamp_(h, u, torch.tensor(5.0), torch.tensor(math.inf), None, pb, pa, ch)
    assert ch.tolist() == [False, False, False, True]
    assert torch.equal(h[:3].isnan(), before[:3].isnan())
    assert torch.equal(torch.nan_to_num(h[:3]), torch.nan_to_num(before[:3]))
    assert math.isnan(pb[0]) and pb[1] == math.inf and math.isnan(pb[2])  # -inf * 0 = nan
    assert h[3, 0] == 5.0
    # set projection and steering with NaN or inf values leave rows as they are
    h = torch.ones(2, d)
    OPS.set_projection_(h, u, torch.tensor([float("nan"), float("inf")]))
    OPS.steer_(h, u, torch.tensor([float("nan"), 0.0]))
    assert torch.equal(h, torch.ones(2, d))


def test_nan_bound_never_fires_and_open_bounds():
    u = torch.tensor([1.0, 0.0])
    h = torch.tensor([[-3.0, 1.0], [3.0, 1.0]])
    before = h.clone()
    OPS.clamp_(h, u, torch.tensor(float("nan")), torch.tensor(float("nan")))
    assert torch.equal(h, before)
    OPS.clamp_(h, u, torch.tensor(-math.inf), torch.tensor(math.inf))
    assert torch.equal(h, before)
    OPS.clamp_(h, u, torch.tensor(0.0), torch.tensor(0.0))  # lo == hi pins the projection
    assert torch.equal(h[:, 0], torch.zeros(2))


def test_empty_inputs():
    u = torch.tensor([1.0, 0.0, 0.0])
    for shape in ((0, 3), (2, 0, 3), (0, 0, 3)):
        h = torch.empty(shape)
        OPS.clamp_(h, u, torch.tensor(0.0), torch.tensor(1.0))
        assert OPS.project(h, u).shape == shape[:-1]
        out, changed = OPS.apply(h, u[None], [1], torch.tensor([[0.0, 1.0]]))
        assert out.shape == shape and changed.shape == (1, *shape[:-1])


@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda h, u: OPS.clamp_(h, u * 0, torch.tensor(0.0), torch.tensor(1.0)), ValueError, "zero vector"),
        (lambda h, u: OPS.clamp_(h, u * 2, torch.tensor(0.0), torch.tensor(1.0)), ValueError, "unit vector"),
        (lambda h, u: OPS.clamp_(h, u * float("nan"), torch.tensor(0.0), torch.tensor(1.0)), ValueError, "finite"),
        (lambda h, u: OPS.clamp_(h, u[:-1], torch.tensor(0.0), torch.tensor(1.0)), ValueError, "hidden size"),
        (lambda h, u: OPS.clamp_(h, u, torch.tensor(2.0), torch.tensor(1.0)), ValueError, "lo <= hi"),
        (lambda h, u: OPS.clamp_(h, u.double(), torch.tensor(0.0), torch.tensor(1.0)), TypeError, "float32"),
        (lambda h, u: OPS.clamp_(h.double(), u, torch.tensor(0.0), torch.tensor(1.0)), TypeError, "float32"),
        (lambda h, u: OPS.clamp_(h, u, torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0)), TypeError, "lo"),
        (lambda h, u: OPS.clamp_(h, u, torch.zeros(5), torch.tensor(1.0)), ValueError, "broadcast"),
        (lambda h, u: OPS.clamp_(h.t(), u[:3], torch.tensor(0.0), torch.tensor(1.0)), ValueError, "contiguous"),
        (lambda h, u: OPS.project(h, u, torch.ones(3, dtype=torch.float32)), TypeError, "mask"),
        (lambda h, u: OPS.apply_(h, u[None], [7], torch.zeros(1, 2)), ValueError, r"ops\[0\] = 7"),
        (lambda h, u: OPS.apply_(h, u[None], [1, 1], torch.zeros(2, 2)), ValueError, "dirs"),
        (lambda h, u: OPS.apply_(h, u[None], [1], torch.zeros(1, 3)), ValueError, "params"),
        (lambda h, u: OPS.steer_(h, u, torch.tensor(1.0), torch.ones(2, dtype=torch.bool)), ValueError, "mask"),
    ],
)
def test_bad_arguments_raise_clear_errors(make, exc, words):
    h = torch.randn(3, 4)
    u = torch.tensor([1.0, 0.0, 0.0, 0.0])
    before = h.clone()
    with pytest.raises(exc, match=words):
        make(h, u)
    assert torch.equal(h, before)  # nothing written on error


def test_overlapping_outputs_are_rejected():
    h = torch.randn(4, 8)
    u = torch.zeros(8)
    u[0] = 1
    buf = torch.empty(5)
    with pytest.raises(ValueError, match="overlap"):
        OPS.clamp_(h, u, torch.tensor(0.0), torch.tensor(1.0), None, buf[:4], buf[1:5])
    with pytest.raises(ValueError, match="overlap"):
        # an output inside h's memory
        OPS.clamp_(h, u, torch.tensor(0.0), torch.tensor(1.0), None, h[:, 0])
    # overlapping rows of h itself
    flat = torch.randn(20)
    rows = flat.as_strided((3, 8), (4, 1))
    with pytest.raises(ValueError, match="overlap"):
        OPS.clamp_(rows, u, torch.tensor(0.0), torch.tensor(1.0))


def test_in_place_refuses_tensors_that_require_grad():
    h = torch.randn(2, 4, requires_grad=True)
    u = torch.tensor([1.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="requires grad"):
        OPS.clamp_(h * 1, u, torch.tensor(0.0), torch.tensor(1.0))
    with torch.no_grad():
        x = h * 1
        OPS.clamp_(x, u, torch.tensor(0.0), torch.tensor(1.0))


def test_in_place_bumps_the_version_counter():
    h = torch.randn(2, 4)
    v = h._version
    OPS.clamp_(h, torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor(0.0), torch.tensor(1.0))
    assert h._version > v


# ---- opcheck, gradients, compile -------------------------------------------------------


def _samples():
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        h = torch.randn(2, 3, 16, generator=g).to(dtype)
        u = torch.randn(16, generator=g)
        u = u / u.norm()
        lo, hi = torch.tensor(-0.2), torch.tensor(0.3)
        # masked rows report NaN projections, which opcheck's comparisons
        # (assert_close without equal_nan) reject: projections use an all-true
        # mask, the masked-row case runs on ops whose outputs are not NaN
        mask = torch.tensor([[True, True, False], [True, True, True]])
        full = torch.ones(2, 3, dtype=torch.bool)
        rows = (2, 3)
        yield OPS.project.default, (h, u, full)
        yield OPS.clamp_.default, (h.clone(), u, lo, hi, full, torch.empty(rows), torch.empty(rows),
                                   torch.empty(rows, dtype=torch.bool))
        yield OPS.set_projection_.default, (h.clone(), u, torch.zeros(2, 1), None, torch.empty(rows))
        yield OPS.steer_.default, (h.clone(), u * 3, torch.tensor(0.5), mask)
        dirs = torch.stack([u, torch.roll(u, 1)])
        params = torch.tensor([[-0.2, 0.3], [0.1, 0.0]])
        yield OPS.apply_.default, (h.clone(), dirs, [1, 3], params, full, torch.empty(rows), torch.empty(rows),
                                   torch.empty(rows, dtype=torch.bool))
        yield OPS.apply.default, (h, dirs, [1, 3], params, mask)


@pytest.mark.parametrize("i", range(12))
def test_opcheck(i):
    op, args = list(_samples())[i]
    torch.library.opcheck(op, args)


def test_opcheck_out_of_place_with_grad():
    h = torch.randn(2, 3, 16, requires_grad=True)
    u = torch.randn(16)
    u = u / u.norm()
    torch.library.opcheck(OPS.apply.default, (h, u[None], [1], torch.tensor([[0.1, 0.4]]), None))
    torch.library.opcheck(OPS.project.default, (h, u, None))


class _RefWithOpBackward(torch.autograd.Function):
    """float64 reference forward, the operator's backward formula."""

    @staticmethod
    def forward(ctx, h, dirs, ops, params):
        steps = [(op, dirs[k], params[k, 0], params[k, 1]) for k, op in enumerate(ops)]
        res = R.apply(h, steps)
        ctx.save_for_backward(dirs, torch.stack(res.changed))
        ctx.ops = ops
        return res.out

    @staticmethod
    def backward(ctx, g):
        dirs, changed = ctx.saved_tensors
        return apply_backward_h(g, dirs, ctx.ops, changed), None, None, None


def test_gradcheck_of_the_backward_formula_in_float64():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(4, 5, 12, dtype=torch.float64, generator=g, requires_grad=True)
    u1 = torch.randn(12, dtype=torch.float64, generator=g)
    u2 = torch.randn(12, dtype=torch.float64, generator=g)
    dirs = torch.stack([u1 / u1.norm(), u2 / u2.norm(), u1 * 0.3])
    params = torch.tensor([[0.2, math.inf], [-math.inf, 0.1], [0.5, 0.0]], dtype=torch.float64)
    ops = [1, 2, 3]
    assert torch.autograd.gradcheck(lambda x: _RefWithOpBackward.apply(x, dirs, ops, params), (h,))
    # and it equals autograd through the reference itself: I - u u^T on changed rows
    out = R.apply(h, [(op, dirs[k], params[k, 0], params[k, 1]) for k, op in enumerate(ops)]).out
    (gr,) = torch.autograd.grad(out.square().sum(), h)
    out2 = _RefWithOpBackward.apply(h, dirs, ops, params)
    (go,) = torch.autograd.grad(out2.square().sum(), h)
    torch.testing.assert_close(go, gr)


def test_operator_gradient_matches_reference_autograd():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(3, 7, 64, generator=g)
    u = torch.randn(64, generator=g)
    u = u / u.norm()
    w = torch.randn(64, generator=g) * 0.1
    steps = [O.Step.clamp(u, 0.1, math.inf), O.Step.steer(w, 2.0), O.Step.set(torch.roll(u, 3) / torch.roll(u, 3).norm(), 0.0)]
    x = h.clone().requires_grad_()
    out = O.apply(x, steps)
    weights = torch.randn(out.shape, generator=g)
    (out * weights).sum().backward()
    xr = h.double().requires_grad_()
    ref = R.apply(xr, [(s.op, torch.as_tensor(s.dir).double(), s.a, s.b) for s in steps]).out
    (ref * weights.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), xr.grad, atol=1e-5, rtol=1e-5)
    # project: d p / d h = u
    x = h.clone().requires_grad_()
    O.project(x, u).sum().backward()
    torch.testing.assert_close(x.grad, u.expand_as(x))


def test_out_of_place_rejects_grad_on_parameters():
    h = torch.randn(2, 8, requires_grad=True)
    u = torch.zeros(8)
    u[0] = 1
    with pytest.raises(ValueError, match="with respect to h only"):
        OPS.apply(h, u[None].requires_grad_(), [1], torch.tensor([[0.0, 1.0]]))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph_matches_eager(backend):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(3)
    u = torch.randn(32, generator=g)
    u = u / u.norm()
    w = torch.randn(32, generator=g)
    dirs = torch.stack([u, w])
    params = torch.tensor([[0.25, math.inf], [0.5, 0.0]])
    lo, hi = torch.tensor(0.1), torch.tensor(math.inf)

    def f(h, record):
        x = h * 1.5
        OPS.clamp_(x, u, lo, hi)
        p = OPS.project(x, u)
        y, _ = OPS.apply(x, dirs, [1, 3], params)
        OPS.apply_(y, dirs, [1, 3], params, None, record[0], record[1], None)
        return y + p.unsqueeze(-1)

    compiled = torch.compile(f, fullgraph=True, backend=backend)
    h = torch.randn(2, 5, 32, generator=g)
    rec_e = torch.empty(2, 2, 5)
    rec_c = torch.empty(2, 2, 5)
    eager = f(h, rec_e)
    got = compiled(h, rec_c)
    assert torch.equal(eager, got)
    assert torch.equal(rec_e, rec_c)


def test_steering_keeps_nan_and_inf_in_bfloat16_rows():
    """Steering writes every row; a NaN (any bfloat16 payload) or an infinity
    in it must survive the rounding of the store."""
    raw = [0x7F81, 0xFFC0, 0x7FC0, 0x7F80, 0xFF80, 0x3F80]
    bits = torch.tensor([b - 0x10000 if b >= 0x8000 else b for b in raw], dtype=torch.int16)
    h = bits.view(torch.bfloat16).reshape(1, 6).repeat(3, 1).contiguous()
    w = torch.full((6,), 0.25)
    OPS.steer_(h, w, torch.tensor(1.5))
    out = h.float()
    assert torch.isnan(out[:, :3]).all()
    assert (out[:, 3] == math.inf).all() and (out[:, 4] == -math.inf).all()
    assert (out[:, 5] == 1.375).all()


# ---- devices, float32 edges and sizes at the operators ---------------------------------


def _every_tensor_argument():
    """(op name, build(h, dev) -> args) for each operator, each tensor on `dev`."""
    u = torch.tensor([1.0, 0.0, 0.0, 0.0])

    def t(x, dev):
        return x.to(dev)

    return {
        "project": lambda h, d: [(h, t(u, d["u"]), t(torch.ones(3, dtype=torch.bool), d["mask"]))],
        "clamp_": lambda h, d: [(h, t(u, d["u"]), t(torch.tensor(0.0), d["lo"]), t(torch.tensor(1.0), d["hi"]),
                                 t(torch.ones(3, dtype=torch.bool), d["mask"]), t(torch.empty(3), d["p_before"]),
                                 t(torch.empty(3), d["p_after"]), t(torch.empty(3, dtype=torch.bool), d["changed"]))],
        "set_projection_": lambda h, d: [(h, t(u, d["u"]), t(torch.tensor(0.0), d["target"]),
                                          t(torch.ones(3, dtype=torch.bool), d["mask"]),
                                          t(torch.empty(3), d["p_before"]))],
        "steer_": lambda h, d: [(h, t(u, d["w"]), t(torch.tensor(1.0), d["alpha"]),
                                 t(torch.ones(3, dtype=torch.bool), d["mask"]))],
        "apply_": lambda h, d: [(h, t(u[None], d["dirs"]), [1], t(torch.tensor([[0.0, 1.0]]), d["params"]),
                                 t(torch.ones(3, dtype=torch.bool), d["mask"]), t(torch.empty(3), d["p_in"]),
                                 t(torch.empty(3), d["p_out"]), t(torch.empty(3, dtype=torch.bool), d["fired"]),
                                 t(torch.zeros(1, dtype=torch.long), d["rec_offset"]))],
        "apply": lambda h, d: [(h, t(u[None], d["dirs"]), [1], t(torch.tensor([[0.0, 1.0]]), d["params"]),
                                t(torch.ones(3, dtype=torch.bool), d["mask"]))],
    }


TENSOR_ARGS = {
    "project": ["u", "mask"],
    "clamp_": ["u", "lo", "hi", "mask", "p_before", "p_after", "changed"],
    "set_projection_": ["u", "target", "mask", "p_before"],
    "steer_": ["w", "alpha", "mask"],
    "apply_": ["dirs", "params", "mask", "p_in", "p_out", "fired", "rec_offset"],
    "apply": ["dirs", "params", "mask"],
}


@pytest.mark.parametrize("op, arg", [(op, a) for op, args in TENSOR_ARGS.items() for a in args])
def test_an_argument_on_another_device_is_refused(op, arg):
    """A tensor on `meta` beside a CPU h would make the dispatcher run the shape-only
    fake kernel (uninitialised results, nothing written): refused, naming it."""
    h = torch.randn(3, 4)
    before = h.clone()
    devs = {a: "cpu" for a in TENSOR_ARGS[op]}
    devs[arg] = "meta"
    (args,) = _every_tensor_argument()[op](h, devs)
    with pytest.raises(ValueError, match=rf"axis_steer::{op}: {arg} is on meta but h is on cpu \(expected"):
        getattr(OPS, op)(*args)
    assert torch.equal(h, before)
    # every tensor on meta is shape inference, and stays allowed
    (args,) = _every_tensor_argument()[op](h.to("meta"), {a: "meta" for a in TENSOR_ARGS[op]})
    getattr(OPS, op)(*args)
    # and every tensor on the CPU runs
    (args,) = _every_tensor_argument()[op](h.clone(), {a: "cpu" for a in TENSOR_ARGS[op]})
    getattr(OPS, op)(*args)


def test_meta_h_with_cpu_arguments_is_refused():
    u = torch.tensor([1.0, 0.0])
    with pytest.raises(ValueError, match=r"u is on cpu but h is on meta .*every argument on meta"):
        OPS.project(torch.empty(3, 2, device="meta"), u)


def test_updates_whose_intermediate_overflows_stay_finite():
    u = torch.tensor([1.0, 0.0, 0.0, 0.0])
    for dtype in (torch.float32, torch.bfloat16):
        h = torch.zeros(2, 4, dtype=dtype)
        h[0, 0] = -2e38
        want = R.clamp(h.double(), u.double(), 2e38).out
        got = h.clone()
        OPS.clamp_(got, u, torch.tensor(2e38), torch.tensor(math.inf))
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), want, rtol=2.0**-7, atol=0)
        got = h.clone()
        O.set_projection_(got, u, 2e38)
        assert torch.isfinite(got).all() and abs(float(got[0, 0]) - 2e38) <= 2e38 * 2.0**-7
        out = O.apply(h, [O.Step.clamp(u, 2e38), O.Step.steer(torch.tensor([-2e38, 0, 0, 1.0]), 2.0)])
        assert torch.isfinite(out).all() and abs(float(out[0, 0]) + 2e38) <= 2e38 * 2.0**-7


def test_names_and_values_in_operator_messages():
    h = torch.randn(3, 4)
    u = torch.tensor([1.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"params\[1, 0\] = 2 > params\[1, 1\] = 1 \(expected lo <= hi"):
        OPS.apply_(h, torch.stack([u, u]), [0, 1], torch.tensor([[0.0, 0.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match=r"dirs\[0\] has norm 2"):
        OPS.apply(h, 2 * u[None], [1], torch.tensor([[0.0, 1.0]]))
    # a mask holds 0 and 1 (checked on the CPU; the CUDA kernels run nonzero bytes)
    with pytest.raises(ValueError, match=r"mask = 2 at row \(0, 1\) \(expected 0 or 1"):
        OPS.steer_(h, u, torch.tensor(1.0), torch.tensor([1, 2, 0], dtype=torch.uint8))


def test_record_offsets_anywhere_in_int64():
    """Columns outside [0, capacity) are not written, and offset + row is never formed
    (a signed overflow in the kernel for offsets near INT64_MAX)."""
    h = torch.randn(1, 3, 4)
    u = torch.tensor([1.0, 0.0, 0.0, 0.0])
    for off in (2**63 - 2, 2**63 - 1, -(2**63), -(2**63) + 1):
        p_in = torch.full((1, 5), -7.0)
        OPS.apply_(h, u[None], [0], torch.zeros(1, 2), None, p_in, None, None, torch.tensor([off]))
        assert torch.equal(p_in, torch.full((1, 5), -7.0))
