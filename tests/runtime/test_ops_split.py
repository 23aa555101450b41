"""The split-row operator ``axis_steer::apply_split_`` (rows held as h + r, the
residual stream of serving engines): bit for bit the program of ``apply_`` on
the materialised sum, over dtype x rows x d x parameters per row or through an
index; the float64 reference; the written rows' form (r = new row, h = -0.0);
errors; opcheck; torch.compile; and, where a GPU is present, CUDA against CPU."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from axis_steer.runtime import ops as O  # noqa: E402
from axis_steer.runtime import reference as R  # noqa: E402

from helpers import assert_proj_close, unit_vector  # noqa: E402

OPS = torch.ops.axis_steer
TDTYPE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
INT = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(INT[t.dtype])


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bits, or both NaN (a NaN's payload depends on how a sum was
    vectorised, and is not part of the contract)."""
    if not a.is_floating_point():
        return torch.equal(a, b)
    return bool(torch.all((bits(a) == bits(b)) | (torch.isnan(a) & torch.isnan(b))))


def _case(rng, n, d, dtype, n_entries=4):
    """h, r (r padded: its own row stride), a 3-step program and its tables,
    the index, and the same parameters expanded per row."""
    h = torch.as_tensor(rng.standard_normal((n, d)), dtype=dtype)
    r_full = torch.as_tensor(rng.standard_normal((n, d + 3)) * 3, dtype=dtype)
    r = r_full[:, :d]
    if n > 2:
        h[1] = -r[1]  # the stream is exactly zero there
        r[2] = 0.0
        h[n // 2, d // 2] = float("nan")
    u1 = unit_vector(rng, d)
    w = (rng.standard_normal(d) * 0.3).astype(np.float32)
    lo = (rng.standard_normal(n_entries) - 1).astype(np.float32)
    hi = lo + np.abs(rng.standard_normal(n_entries)).astype(np.float32) * 2
    alpha = rng.standard_normal(n_entries).astype(np.float32)
    floor = (rng.standard_normal(n_entries) * 0.5).astype(np.float32)
    lo[1], hi[1], floor[1] = -np.inf, np.inf, -np.inf  # entry 1: no bounds
    alpha[2 % n_entries] = 0.0
    index = torch.as_tensor(rng.integers(0, n_entries, size=n), dtype=torch.int64)
    tables = [O.Step.clamp(u1, lo, hi), O.Step.steer(w, alpha), O.Step.clamp(u1, floor)]
    ix = index.numpy()
    per_row = [O.Step.clamp(u1, lo[ix], hi[ix]), O.Step.steer(w, alpha[ix]), O.Step.clamp(u1, floor[ix])]
    return h, r, tables, per_row, index


@pytest.mark.parametrize("dtype", list(TDTYPE))
@pytest.mark.parametrize("n", [0, 1, 3, 257])
@pytest.mark.parametrize("d", [1, 7, 64, 4096])
@pytest.mark.parametrize("through_index", [False, True])
def test_split_rows_equal_the_program_on_the_sum(dtype, n, d, through_index):
    rng = np.random.default_rng(n * 1000 + d)
    h, r, tables, per_row, index = _case(rng, n, d, TDTYPE[dtype])
    s = h + r  # torch's sum in the storage dtype: what the engine's next layer computes
    h0, r0 = h.clone(), r.clone()
    mask = torch.ones(n, dtype=torch.bool)
    if n > 4:
        mask[4] = False
    want, want_rec = O.apply_(s.clone(), per_row, mask=mask, record=True)
    if through_index:
        _, _, rec = O.apply_split_(h, r, tables, index=index, mask=mask, record=True)
    else:
        _, _, rec = O.apply_split_(h, r, per_row, mask=mask, record=True)
    for got_t, want_t in zip(rec, want_rec):
        assert same(got_t, want_t)
    wrote = ~torch.all((bits(want) == bits(s)) | torch.isnan(s), dim=-1)
    wrote |= ~(torch.all(bits(h) == bits(h0), dim=-1) & torch.all(bits(r) == bits(r0), dim=-1))
    neg_zero = bits(torch.full((1,), -0.0, dtype=h.dtype))
    for i in range(n):
        if wrote[i]:
            assert same(r[i], want[i]), i
            assert torch.all(bits(h[i]) == neg_zero), i
        else:
            assert torch.equal(bits(h[i]), bits(h0[i])) and torch.equal(bits(r[i]), bits(r0[i])), i
    # the sum the next layer computes is the program's result, bit for bit
    assert same(h + r, want)
    if n >= 8:
        assert int(wrote.sum()) > 0


def test_split_rows_against_the_float64_reference():
    rng = np.random.default_rng(5)
    h, r, tables, _, index = _case(rng, 300, 96, torch.float32)
    h64, r64 = h.double().numpy(), r.double().numpy()
    ref = R.apply_split(h64, r64, [tuple(s) for s in tables], index=index.numpy())
    _, _, rec = O.apply_split_(h, r, tables, index=index, record=True)
    s64 = h64 + r64
    u1 = np.asarray(tables[0].dir, np.float64)
    ok = np.isfinite(ref.p_in)
    assert_proj_close(rec.p_in.numpy()[ok], ref.p_in[ok], s64[ok], u1)
    out = (h + r).double().numpy()
    finite = np.isfinite(out).all(-1)
    assert np.abs(out[finite] - ref.out[finite]).max() <= 1e-4 * max(1.0, np.abs(ref.out[finite]).max())
    # a floor at entry k: every capped row ends at or above its floor
    floor = np.asarray(tables[2].a, np.float64)[index.numpy()]
    p_end = out @ u1
    sel = finite & np.isfinite(floor)
    assert np.all(p_end[sel] >= floor[sel] - 1e-4)


def test_batch_seq_rows_with_per_sequence_tables():
    """(batch, seq, d) with an index into per-batch-row tables."""
    rng = np.random.default_rng(2)
    h = torch.randn(2, 5, 16, dtype=torch.bfloat16)
    r = torch.randn(2, 5, 16, dtype=torch.bfloat16)
    u = torch.as_tensor(unit_vector(rng, 16))
    lo = torch.tensor([[0.5, -np.inf, 2.0], [-np.inf, 1.0, -1.0]])
    index = torch.randint(0, 3, (2, 5))
    s = h + r
    want = O.apply_(s.clone(), [O.Step.clamp(u, torch.gather(lo, 1, index))])
    O.apply_split_(h, r, [O.Step.clamp(u, lo)], index=index)
    assert torch.equal(bits(h + r), bits(want))


@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda h, r, u: (h, r.float(), u), TypeError, "r: dtype Float but h is BFloat16"),
        (lambda h, r, u: (h, r[:3], u), ValueError, "r: shape"),
        (lambda h, r, u: (h, h, u), ValueError, "r overlaps the memory of h"),
    ],
)
def test_split_bad_rows_raise_clear_errors(make, exc, words):
    h = torch.randn(4, 8, dtype=torch.bfloat16)
    r = torch.randn(4, 8, dtype=torch.bfloat16)
    u = torch.zeros(8)
    u[0] = 1
    h_, r_, u_ = make(h, r, u)
    with pytest.raises(exc, match=words):
        O.apply_split_(h_, r_, [O.Step.clamp(u_, 0.0)])


def test_split_bad_index_raises_clear_errors():
    h, r = torch.randn(4, 8), torch.randn(4, 8)
    h0, r0 = h.clone(), r.clone()
    u = torch.zeros(8)
    u[0] = 1
    lo = torch.tensor([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"index = 3 at row \(0, 2\) \(expected 0 <= index < 3"):
        O.apply_split_(h, r, [O.Step.clamp(u, lo)], index=torch.tensor([0, 1, 3, 2]))
    assert torch.equal(h, h0) and torch.equal(r, r0)
    with pytest.raises(TypeError, match="index: dtype torch.int32"):
        O.apply_split_(h, r, [O.Step.clamp(u, lo)], index=torch.tensor([0, 1, 2, 2], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"index: shape \[2\] \(expected exactly the rows of h"):
        O.apply_split_(h, r, [O.Step.clamp(u, lo)], index=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        O.apply_split_(h.numpy(), r, [O.Step.clamp(u, lo)])
    with pytest.raises(ValueError, match="r is on meta but h is on cpu"):
        OPS.apply_split_(h, r.to("meta"), u[None], [1], torch.tensor([[0.0, 1.0]]))


def _split_args(dtype):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(6, 16, generator=g).to(dtype)
    r = torch.randn(6, 16, generator=g).to(dtype)
    u = torch.randn(16, generator=g)
    u = u / u.norm()
    dirs = torch.stack([u, torch.roll(u, 1)])
    params = torch.tensor([[[-0.2, 5.0, float("nan")], [0.3, 6.0, float("nan")]], [[0.1, 0.0, 2.0], [0.0, 0.0, 0.0]]])
    index = torch.tensor([0, 1, 2, 0, 1, 2])
    rows = (6,)
    return (h, r, dirs, [1, 3], params, index, None, torch.empty(rows), torch.empty(rows),
            torch.empty(rows, dtype=torch.bool))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_split_opcheck(dtype):
    torch.library.opcheck(OPS.apply_split_.default, _split_args(dtype))


def test_split_under_torch_compile_fullgraph():
    """How a serving engine calls it: inside a compiled graph, from buffers."""
    args = _split_args(torch.float32)

    def f(h, r, dirs, params, index, p_in, p_out, fired):
        OPS.apply_split_(h, r, dirs, [1, 3], params, index, None, p_in, p_out, fired)
        return h + r

    h, r, dirs, _, params, index, _, p_in, p_out, fired = args
    eager = f(h.clone(), r.clone(), dirs, params, index, p_in.clone(), p_out.clone(), fired.clone())
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got = compiled(h.clone(), r.clone(), dirs, params, index, p_in.clone(), p_out.clone(), fired.clone())
    assert torch.equal(bits(got), bits(eager))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", list(TDTYPE))
@pytest.mark.parametrize("d", [7, 4096, 8192])
def test_split_cuda_matches_cpu(dtype, d):
    rng = np.random.default_rng(d)
    h, r, tables, _, index = _case(rng, 513, d, TDTYPE[dtype])
    hc, rc = h.cuda(), r.cuda()
    _, _, rec_c = O.apply_split_(hc, rc, tables, index=index.cuda(), record=True)
    _, _, rec = O.apply_split_(h, r, tables, index=index, record=True)
    # the two backends sum in different orders: decisions agree away from the
    # bounds, values within rounding
    same = rec.fired == rec_c.fired.cpu()
    assert same.float().mean() > 0.98
    out, out_c = (h + r).double(), (hc + rc).double().cpu()
    rows = same & torch.isfinite(out).all(-1)
    tol = 1e-2 if dtype != "float32" else 1e-4
    assert torch.allclose(out[rows], out_c[rows], rtol=tol, atol=tol)
    # and on the device, split equals the program on the sum bit for bit
    h2, r2 = h.cuda(), r.cuda()
    s = h2 + r2
    per = [O.Step(st.op, st.dir, None if st.a is None else np.asarray(st.a)[index.numpy()],
                  None if st.b is None or np.ndim(st.b) == 0 else np.asarray(st.b)[index.numpy()])
           for st in tables]
    O.apply_(s, per)
    O.apply_split_(h2, r2, tables, index=index.cuda())
    assert torch.equal(bits(h2 + r2), bits(s))
