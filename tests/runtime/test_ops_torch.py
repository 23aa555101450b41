"""The torch operators on every device present (the CPU always, CUDA when a
GPU is there) against the float64 reference: dtype x shape x row layout x
bounds, fused programs with records at a write offset, the NaN policy, empty
inputs and opcheck, each test once, parametrised by device; on CUDA also the
decisions and bits against the CPU operators, rows and padding between rows
left untouched, CUDA graphs with parameters changed between replays, streams
and devices; on the CPU the argument errors, gradients and torch.compile.

Without a GPU the CUDA cases skip; a GPU with axis_steer built without its
CUDA kernels fails them (unless AXIS_STEER_NO_CUDA says so)."""

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
    UNIT_ROUNDOFF,
    assert_proj_close,
    bounds_for,
    check_clamp_rows,
    cuda_only,
    dot_tol,
    make_rows,
    proj_tol,
    row_tol,
    stable_seed,
    torch_to_f64,
    unit_vector,
)

OPS = torch.ops.axis_steer
GPU = torch.device("cuda")
N_ROWS = (0, 1, 3, 257, 4096)
DIMS = (1, 7, 64, 4095, 4096, 8192)
BOUNDS = ("floor", "ceiling", "band", "equal", "per_row")
TDTYPE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PAD = -7.25  # what the bytes between rows hold (exact in every dtype)


def f32(x, device="cpu") -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32)).to(device)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int16)


class DeviceRows:
    """A copy of CPU rows on the device with the same sizes, strides and
    alignment modulo 16 bytes (so the same vector or element loads), inside a
    buffer whose other elements hold PAD, to check that they stay untouched."""

    def __init__(self, t: torch.Tensor, device: torch.device):
        es = t.element_size()
        self.skew = (t.data_ptr() % 16) // es
        extent = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride())) if t.numel() else 0
        self.buf = torch.full((self.skew + extent + 3,), PAD, dtype=t.dtype, device=device)
        self.rows = self.buf.as_strided(t.shape, t.stride(), self.skew)
        self.rows.copy_(t)
        inside = torch.zeros(self.buf.shape, dtype=torch.bool)
        inside.as_strided(t.shape, t.stride(), self.skew).fill_(True)
        self.outside = inside.logical_not().to(device)
        assert self.rows.data_ptr() % 16 == t.data_ptr() % 16

    def check_padding(self) -> None:
        assert bool((self.buf[self.outside] == PAD).all()), "an element between rows was written"


def near_bound(p: np.ndarray, lo, hi, tol: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (np.abs(p - lo) <= tol) | (np.abs(p - hi) <= tol)


BIG = 257 * 8192  # above this many elements, the float64 reference sees a sample of rows


def shapes(dtype: str, layout: str, bounds: str):
    """The (n_rows, d) grid; the largest shapes (4096 rows of 4095 to 8192)
    in bfloat16 only, for the layouts and bounds that change the kernel's path."""
    for n in N_ROWS:
        for d in DIMS:
            if n * d > BIG and not (
                dtype == "bfloat16"
                and ((layout in ("contiguous", "misaligned") and bounds == "floor")
                     or (layout == "padded" and bounds == "per_row" and d == 4096))
            ):
                continue
            yield n, d


# ---- every device: the grid of dtype x shape x layout x bounds against the reference ----------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bounds", BOUNDS)
def test_clamp_and_project(device, dtype, layout, bounds):
    rng = np.random.default_rng(stable_seed("clamp", dtype, layout, bounds))
    for n, d in shapes(dtype, layout, bounds):
        vals = rng.standard_normal((n, d)) * rng.uniform(0.1, 3.0)
        u = unit_vector(rng, d)
        u64 = u.astype(np.float64)
        h = make_rows(vals, layout, dtype, xp="torch")
        # the rows the float64 reference checks: all, or a sample of the largest inputs
        rows = np.sort(rng.choice(n, 512, replace=False)) if n * d > BIG else np.arange(n)
        h64 = torch_to_f64(h[torch.as_tensor(rows, dtype=torch.long)])
        p_all = OPS.project(h, f32(u, "cpu")).double().numpy()  # for the thresholds
        p_all[rows] = R.project(h64, u64)
        p_ref = p_all[rows]
        lo, hi = bounds_for(bounds, p_all, rng)
        lo_s, hi_s = (np.broadcast_to(x, (n,))[rows] if np.ndim(x) else x for x in (lo, hi))
        dev = DeviceRows(h, device)
        before = dev.rows.clone()
        # the device: in place with every output, then project and the out-of-place apply
        outs = (torch.empty(n, device=device), torch.empty(n, device=device), torch.empty(n, dtype=torch.bool, device=device))
        OPS.clamp_(dev.rows, f32(u, device), f32(lo, device), f32(hi, device), None, *outs)
        pb, pa, ch = (o.cpu().numpy()[rows] for o in outs)
        out64 = torch_to_f64(dev.rows[torch.as_tensor(rows, dtype=torch.long, device=device)])
        check_clamp_rows(h64, out64, u, lo_s, hi_s, dtype, changed=ch)
        assert_proj_close(pb, p_ref, h64, u64)
        assert_proj_close(pa, R.project(out64, u64), out64, u64)
        assert_proj_close(OPS.project(before, f32(u, device)).cpu().numpy()[rows], p_ref, h64, u64)
        ch = outs[2].cpu()
        kept = ~ch.to(device)
        assert torch.equal(bits(dev.rows[kept]), bits(before[kept])), "a row inside its bounds changed"
        dev.check_padding()
        oop, oop_changed = OPS.apply(before, f32(u, device)[None], [1], f32(np.stack([np.broadcast_to(lo, (n,)), np.broadcast_to(hi, (n,))]), device)[None])
        assert torch.equal(bits(oop), bits(dev.rows)) and torch.equal(oop_changed[0].cpu(), ch)
        # the user-facing out-of-place clamp gives the same bits
        assert torch.equal(bits(O.clamp(before, f32(u, device), f32(lo, device), f32(hi, device))), bits(dev.rows))
        if device.type == "cpu":
            continue
        # the CPU: the same decisions except within rounding of a bound
        cpu_ch = torch.empty(n, dtype=torch.bool)
        OPS.clamp_(h, f32(u, "cpu"), f32(lo, "cpu"), f32(hi, "cpu"), None, None, None, cpu_ch)
        mag = (h.float().abs() @ torch.as_tensor(np.abs(u))).double().numpy()  # sum |h_j u_j| per row
        amb = near_bound(p_all, lo, hi, dot_tol(mag, d))
        assert np.all((cpu_ch.numpy() == ch.numpy()) | amb), (n, d)
        same = ~(cpu_ch | ch)
        assert torch.equal(bits(h[same]), bits(dev.rows[same.to(device)].cpu()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_steer_and_set_projection(device, dtype, layout):
    rng = np.random.default_rng(stable_seed("steer", dtype, layout))
    for n in N_ROWS:
        for d in DIMS:
            if n * d > 257 * 8192:
                continue
            vals = rng.standard_normal((n, d))
            u, w = unit_vector(rng, d), (rng.standard_normal(d) * 0.3).astype(np.float32)
            u64, w64 = u.astype(np.float64), w.astype(np.float64)
            alpha = rng.standard_normal(n).astype(np.float32)
            alpha[::5] = 0.0  # rows left alone
            target = rng.standard_normal(n).astype(np.float32)
            for kind in ("steer", "set"):
                h = make_rows(vals, layout, dtype, xp="torch")
                h64 = torch_to_f64(h)
                dev = DeviceRows(h, device)
                pb = torch.empty(n, device=device)
                if kind == "steer":
                    OPS.steer_(dev.rows, f32(w, device), f32(alpha, device))
                    OPS.steer_(h, f32(w, "cpu"), f32(alpha, "cpu"))
                    ref = R.steer(h64, w64, alpha.astype(np.float64))
                    tol = row_tol(ref.out, h64, w64, np.zeros(n), dtype)
                else:
                    OPS.set_projection_(dev.rows, f32(u, device), f32(target, device), None, pb)
                    OPS.set_projection_(h, f32(u, "cpu"), f32(target, "cpu"))
                    ref = R.set_projection(h64, u64, target.astype(np.float64))
                    tol = row_tol(ref.out, h64, u64, proj_tol(h64, u64), dtype)
                    assert_proj_close(pb.cpu().numpy(), ref.p_before[0], h64, u64)
                for got in (torch_to_f64(dev.rows), torch_to_f64(h)):
                    assert np.all(np.abs(got - ref.out) <= tol), (kind, n, d)
                if kind == "steer":
                    # no projection involved: the same float32 operations on both, so the same bits
                    assert torch.equal(bits(dev.rows.cpu()), bits(h))
                    zero = torch.as_tensor(alpha == 0)  # alpha = 0 leaves the row as it was
                    assert torch.equal(bits(h[zero]), bits(make_rows(vals, layout, dtype, xp="torch")[zero]))
                dev.check_padding()


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


# ---- every device: fused programs ---------------------------------------------------------------


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


def _program(rng, d, b, s):
    """A program of every kind of step, with per-sequence bounds, and its packed form."""
    u1, u2, u3 = (unit_vector(rng, d) for _ in range(3))
    w = (rng.standard_normal(d) * 0.2).astype(np.float32)
    lo = (rng.standard_normal((b, 1)) * 0.3).astype(np.float32)
    steps = [
        O.Step.clamp(u1, lo, np.inf),
        O.Step.steer(w, 0.7),
        O.Step.clamp(u2, -np.inf, 0.2),
        O.Step.set(u3, 0.0),
        O.Step.project(u1),
    ]
    return steps


def _sequential_reference(x64, steps, changed, mask=None):
    """The float64 reference step by step, taking the kernel's decision on
    rows whose projection is within rounding of a bound."""
    x = x64.copy()
    for k, st in enumerate(steps):
        ref = R.apply(x, [tuple(st)], mask)
        ch = changed[k]
        if st.op == "clamp":
            tp = proj_tol(x, np.asarray(st.dir, np.float64))
            amb = near_bound(ref.p_before[0], np.asarray(st.a, np.float64), np.asarray(st.b, np.float64), tp)
            assert np.all((ch == ref.changed[0]) | amb), f"step {k}: decisions differ away from the bounds"
        x = np.where(ch[..., None] | ((st.op == "steer") & ref.changed[0][..., None]), ref.out, x)
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fused_program_with_record_and_offset(device, dtype, layout):
    """apply_ over a prompt and then one token at a time, recording at a device
    write offset (as the monitoring hooks do), on the device and on the CPU;
    and the out-of-place apply."""
    rng = np.random.default_rng(stable_seed("apply", dtype, layout))
    for d in (7, 64, 4095, 4096):
        b, s, steps_after = 3, 6, 4
        cap = s + steps_after
        steps = _program(rng, d, b, s)
        mask = np.ones((b, s), dtype=bool)
        mask[0, :2] = False  # left padding
        rec = {be: (torch.full((b, cap), 99.0, device=dv), torch.full((b, cap), 99.0, device=dv),
                    torch.zeros((b, cap), dtype=torch.bool, device=dv))
               for be, dv in (("dev", device), ("cpu", torch.device("cpu")))}
        offset = {"dev": torch.zeros((), dtype=torch.int64, device=device), "cpu": torch.zeros((), dtype=torch.int64)}
        col = 0
        for call in range(1 + steps_after):
            seq = s if call == 0 else 1
            vals = rng.standard_normal((b, seq, d)) * 1.5
            m = mask if call == 0 else np.ones((b, 1), dtype=bool)
            h = make_rows(vals, layout, dtype, xp="torch")
            h64 = torch_to_f64(h)
            dev = DeviceRows(h, device)
            outs = {}
            for be in ("dev", "cpu"):
                x = dev.rows if be == "dev" else h
                dirs, codes, params = O._program_t(x, steps)
                offset[be].fill_(col)
                OPS.apply_(x, dirs, codes, params, torch.as_tensor(m).to(x.device), *rec[be], offset[be])
                out2, changed = OPS.apply(make_rows(vals, layout, dtype, xp="torch").to(x.device), dirs, codes, params,
                                          torch.as_tensor(m).to(x.device))
                assert torch.equal(bits(out2), bits(x.contiguous())), "out-of-place and in place differ"
                outs[be] = (torch_to_f64(x), changed.cpu().numpy())
            dev.check_padding()
            u1 = np.asarray(steps[0].dir, np.float64)
            amb_rows = np.zeros((b, seq), dtype=bool)
            for be, (out64, changed) in outs.items():
                ref_x = _sequential_reference(h64, steps, changed, m)
                tol = 8 * row_tol(ref_x, h64, sum(np.abs(np.asarray(st.dir, np.float64)) for st in steps),
                                  np.abs(ref_x).sum(-1) * 1e-5, dtype)
                # each step rounds the whole row to the dtype: an element that ends
                # small may carry the rounding of a larger intermediate value
                scale = np.maximum(np.abs(h64).max(-1), np.abs(ref_x).max(-1))[..., None]
                tol = tol + 2 * len(steps) * UNIT_ROUNDOFF[dtype] * scale
                assert np.all(np.abs(np.where(m[..., None], out64 - ref_x, 0.0)) <= tol), (be, d, call)
                assert np.all(out64[~np.broadcast_to(m, (b, seq))] == h64[~np.broadcast_to(m, (b, seq))]), "masked row written"
            # the two backends decide alike except within rounding of a bound
            for k, st in enumerate(steps):
                if st.op == "clamp":
                    # the float64 reference does not round the row to the dtype
                    # between steps, so allow for that too
                    uk = np.asarray(st.dir, np.float64)
                    p = R.apply(h64, [tuple(x) for x in steps[:k + 1]]).p_before[k]
                    tol = 4 * proj_tol(h64, uk) + 4 * k * UNIT_ROUNDOFF[dtype] * np.abs(h64 * uk).sum(-1)
                    amb_rows |= near_bound(p, np.asarray(st.a, np.float64), np.asarray(st.b, np.float64), tol)
            diff = (outs["dev"][1] != outs["cpu"][1]).any(0)
            assert not np.any(diff & ~amb_rows), (d, call)
            # the record: columns col .. col + seq, about step 0's direction
            for be in ("dev", "cpu"):
                p_in = rec[be][0].cpu().numpy()[:, col:col + seq]
                ref_in = R.project(h64, u1)
                got = np.where(np.broadcast_to(m, (b, seq)), p_in, np.nan)
                assert_proj_close(got, np.where(np.broadcast_to(m, (b, seq)), ref_in, np.nan), h64, u1)
                assert np.isnan(p_in[~np.broadcast_to(m, (b, seq))]).all()
                out64 = outs[be][0]
                assert_proj_close(np.where(np.broadcast_to(m, (b, seq)), rec[be][1].cpu().numpy()[:, col:col + seq], np.nan),
                                  np.where(np.broadcast_to(m, (b, seq)), R.project(out64, u1), np.nan), out64, u1)
            col += seq
        # columns past the last call are never written
        for be in ("dev", "cpu"):
            assert (rec[be][0][:, col:] == 99.0).all() and not rec[be][2][:, col:].any()
        fired_dev, fired_cpu = rec["dev"][2].cpu(), rec["cpu"][2]
        assert fired_dev.any()
        assert (fired_dev != fired_cpu).float().mean() < 0.05


# ---- every device: the NaN policy and empty inputs ---------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_rows_are_never_written(device, dtype):
    d = 300  # block rows of several chunks
    u = torch.zeros(d, device=device)
    u[0] = 1.0
    h = torch.ones(4, d, dtype=TDTYPE[dtype], device=device)
    h[0, 3] = float("nan")
    h[1, 0] = float("inf")
    h[2, 5] = float("-inf")
    before = h.clone()
    pb, pa, ch = torch.empty(4, device=device), torch.empty(4, device=device), torch.empty(4, dtype=torch.bool, device=device)
    OPS.clamp_(h, u, torch.tensor(5.0, device=device), torch.tensor(math.inf, device=device), None, pb, pa, ch)
    assert ch.tolist() == [False, False, False, True]
    assert torch.equal(bits(h[:3]), bits(before[:3]))
    assert math.isnan(pb[0]) and pb[1] == math.inf and math.isnan(pb[2])  # -inf * 0 = nan
    assert h[3, 0] == 5.0
    # NaN or infinite targets and coefficients leave rows as they are
    h = torch.ones(3, d, dtype=TDTYPE[dtype], device=device)
    OPS.set_projection_(h, u, torch.tensor([float("nan"), float("inf"), float("-inf")], device=device))
    OPS.steer_(h, u, torch.tensor([float("nan"), 0.0, float("inf")], device=device))
    assert torch.equal(h, torch.ones(3, d, dtype=TDTYPE[dtype], device=device))
    # a bound of +inf below, or -inf above, is an infinite target: never written
    h = torch.ones(2, d, dtype=TDTYPE[dtype], device=device)
    OPS.clamp_(h, u, torch.tensor([[math.inf], [-math.inf]], device=device)[:, 0], torch.tensor([math.inf, -math.inf], device=device))
    assert torch.equal(h, torch.ones(2, d, dtype=TDTYPE[dtype], device=device))


def test_nan_bound_never_fires_and_open_bounds(device):
    u = torch.tensor([1.0, 0.0], device=device)
    h = torch.tensor([[-3.0, 1.0], [3.0, 1.0]], device=device)
    before = h.clone()
    OPS.clamp_(h, u, torch.tensor(float("nan"), device=device), torch.tensor(float("nan"), device=device))
    assert torch.equal(h, before)
    OPS.clamp_(h, u, torch.tensor(-math.inf, device=device), torch.tensor(math.inf, device=device))
    assert torch.equal(h, before)
    OPS.clamp_(h, u, torch.tensor(0.0, device=device), torch.tensor(0.0, device=device))
    assert torch.equal(h[:, 0], torch.zeros(2, device=device))


def test_empty_inputs(device):
    u = torch.tensor([1.0, 0.0, 0.0], device=device)
    for shape in ((0, 3), (2, 0, 3), (0, 0, 3)):
        h = torch.empty(shape, device=device)
        OPS.clamp_(h, u, f32(0.0, device), f32(1.0, device))
        assert OPS.project(h, u).shape == shape[:-1]
        out, changed = OPS.apply(h, u[None], [1], f32([[0.0, 1.0]], device))
        assert out.shape == shape and changed.shape == (1, *shape[:-1])


# ---- every device: opcheck ---------------------------------------------------------------------


def _samples(device):
    # masked rows report NaN projections, which opcheck's comparisons
    # (assert_close without equal_nan) reject: projections use an all-true
    # mask, the masked-row case runs on ops whose outputs are not NaN
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        h = torch.randn(2, 3, 16, generator=g).to(dtype).to(device)
        u = torch.randn(16, generator=g)
        u = (u / u.norm()).to(device)
        lo, hi = torch.tensor(-0.2, device=device), torch.tensor(0.3, device=device)
        mask = torch.tensor([[True, True, False], [True, True, True]], device=device)
        full = torch.ones(2, 3, dtype=torch.bool, device=device)
        rows = (2, 3)

        def e(*shape, dt=torch.float32):  # zeros: opcheck compares columns left unwritten too
            return torch.zeros(shape, dtype=dt, device=device)

        yield OPS.project.default, (h, u, full)
        yield OPS.clamp_.default, (h.clone(), u, lo, hi, full, e(*rows), e(*rows), e(*rows, dt=torch.bool))
        yield OPS.set_projection_.default, (h.clone(), u, torch.zeros(2, 1, device=device), None, e(*rows))
        yield OPS.steer_.default, (h.clone(), u * 3, torch.tensor(0.5, device=device), mask)
        dirs = torch.stack([u, torch.roll(u, 1)])
        params = torch.tensor([[-0.2, 0.3], [0.1, 0.0]], device=device)
        yield OPS.apply_.default, (h.clone(), dirs, [1, 3], params, full, e(*rows), e(*rows), e(*rows, dt=torch.bool))
        yield OPS.apply_.default, (h.clone(), dirs, [1, 3], params, full, e(2, 8), e(2, 8), e(2, 8, dt=torch.bool),
                                   torch.tensor(2, device=device))
        yield OPS.apply.default, (h, dirs, [1, 3], params, mask)
        # a drift latch, and steps gated by it (at record-like columns)
        lparams = torch.tensor([0.1, 2.0, math.nan, 1.0, 1.0, 1.0, 0.0, 0.0], device=device)
        off = torch.tensor(2, device=device)
        state = torch.zeros(2, 8, dtype=torch.int64, device=device)
        yield OPS.latch_.default, (h, lparams, off, state, e(2, 3), e(2, 8, dt=torch.bool), u, e(2, 8), full)
        gate = (torch.rand(2, 8, generator=g) > 0.5).to(device)
        yield OPS.apply_.default, (h.clone(), dirs, [1, 3], params, full, None, None, None, off, [gate], [0, -1])
        yield OPS.apply.default, (h, dirs, [1, 3], params, mask, [gate], [-1, 0], off)


@pytest.mark.parametrize("i", range(30))
def test_opcheck(device, i):
    op, args = list(_samples(device))[i]
    torch.library.opcheck(op, args)


def test_opcheck_out_of_place_with_grad(device):
    h = torch.randn(2, 3, 16, device=device, requires_grad=True)
    u = torch.randn(16, device=device)
    u = u / u.norm()
    torch.library.opcheck(OPS.apply.default, (h, u[None], [1], torch.tensor([[0.1, 0.4]], device=device), None))
    torch.library.opcheck(OPS.project.default, (h, u, None))
    gate = torch.tensor([[True, False, True], [False, True, True]], device=device)
    torch.library.opcheck(OPS.apply.default, (h, u[None], [1], torch.tensor([[0.1, 0.4]], device=device), None,
                                              [gate], [0]))
    out = O.clamp(h, u, 0.1, math.inf)
    (g,) = torch.autograd.grad(out.sum(), h)
    assert g.device == h.device


# ---- the CPU: argument errors, autograd, compile --------------------------------------------------


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


TENSOR_ARGS = {
    "project": ["u", "mask"],
    "clamp_": ["u", "lo", "hi", "mask", "p_before", "p_after", "changed"],
    "set_projection_": ["u", "target", "mask", "p_before"],
    "steer_": ["w", "alpha", "mask"],
    "apply_": ["dirs", "params", "mask", "p_in", "p_out", "fired", "rec_offset"],
    "apply": ["dirs", "params", "mask"],
}


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


# ---- CUDA: graphs, streams, devices -------------------------------------------------------------


@cuda_only
def test_per_row_lo_above_hi_takes_hi_on_the_device():
    """The device does not read parameters on the host, so it cannot reject
    lo > hi per row; it applies the documented rule (hi wins, as torch.clamp)."""
    u = torch.tensor([1.0, 0.0], device=GPU)
    h = torch.tensor([[-3.0, 1.0], [3.0, 1.0], [0.5, 1.0]], device=GPU)
    OPS.clamp_(h, u, torch.tensor([1.0, 1.0, 1.0], device=GPU), torch.tensor([0.0, 0.0, 0.0], device=GPU))
    assert h[:, 0].tolist() == [0.0, 0.0, 0.0]


@cuda_only
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_graph_replays_follow_parameters_written_between_replays(dtype):
    """apply_ captured once; thresholds, mask and write offset changed by
    copy_ into the captured tensors before each replay; every replay equals an
    eager call with the same values, bit for bit, records included."""
    torch.manual_seed(0)
    b, d, cap, n_replays = 4, 4096, 16, 6
    dt = TDTYPE[dtype]
    u = torch.randn(d, device=GPU)
    u /= u.norm()
    w = torch.randn(d, device=GPU) * 0.01
    dirs = torch.stack([u, w])
    ops = [1, 3]
    h = torch.empty(b, 1, d, dtype=dt, device=GPU)
    params = torch.zeros(2, 2, b, 1, device=GPU)
    mask = torch.ones(b, 1, dtype=torch.bool, device=GPU)
    offset = torch.zeros((), dtype=torch.int64, device=GPU)
    rec = (torch.full((b, cap), 7.0, device=GPU), torch.full((b, cap), 7.0, device=GPU),
           torch.zeros(b, cap, dtype=torch.bool, device=GPU))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up off the capture stream
        OPS.apply_(h.normal_(), dirs, ops, params, mask, *rec, offset)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        OPS.apply_(h, dirs, ops, params, mask, *rec, offset)
    eager_rec = tuple(r.clone() for r in rec)
    for r in rec + eager_rec:
        if r.dtype == torch.bool:
            r.zero_()
        else:
            r.fill_(7.0)
    for step in range(n_replays):
        x = torch.randn(b, 1, d, device=GPU).to(dt)
        p = torch.randn(2, 2, b, 1, device=GPU) * 0.5
        p[0, 1] = math.inf if step % 2 == 0 else 0.3  # floor, then a band
        p[1, 1] = 0.0
        m = torch.rand(b, 1, device=GPU) > 0.3
        h.copy_(x)
        params.copy_(p)
        mask.copy_(m)
        offset.fill_(step)
        graph.replay()
        ref = x.clone()
        OPS.apply_(ref, dirs, ops, p, m, *eager_rec, torch.tensor(step, device=GPU))
        torch.cuda.synchronize()
        assert torch.equal(bits(h), bits(ref)), f"replay {step}"
        for got, want in zip(rec, eager_rec):
            got, want = got[:, : step + 1], want[:, : step + 1]
            if got.dtype != torch.bool:
                got, want = got.nan_to_num(123.0), want.nan_to_num(123.0)
            assert torch.equal(got, want), f"record, replay {step}"
        assert (rec[0][:, step + 1:] == 7.0).all()
    # and the eager device results are the CPU's
    xc = torch.randn(b, 1, d).to(dt)
    pc = torch.randn(2, 2, b, 1) * 0.5
    pc[0, 1], pc[1, 1] = math.inf, 0.0
    h.copy_(xc.to(GPU))
    params.copy_(pc.to(GPU))
    mask.fill_(True)
    graph.replay()
    cpu = xc.clone()
    OPS.apply_(cpu, dirs.cpu(), ops, pc)
    torch.testing.assert_close(h.cpu().float(), cpu.float(), atol=0.02 if dt != torch.float32 else 1e-5, rtol=0.01)


@cuda_only
def test_graph_of_single_ops_with_tensor_bounds():
    torch.manual_seed(1)
    d = 8192
    u = torch.randn(d, device=GPU)
    u /= u.norm()
    h = torch.empty(64, d, dtype=torch.bfloat16, device=GPU)
    lo, hi = torch.zeros((), device=GPU), torch.full((), math.inf, device=GPU)
    p = torch.empty(64, device=GPU)
    graph = torch.cuda.CUDAGraph()
    h.normal_()
    OPS.clamp_(h, u, lo, hi)
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        OPS.clamp_(h, u, lo, hi)
        p.copy_(OPS.project(h, u))
    for level in (-0.5, 0.0, 0.75):
        x = torch.randn(64, d, device=GPU).to(torch.bfloat16)
        h.copy_(x)
        lo.fill_(level)
        graph.replay()
        ref = x.clone()
        OPS.clamp_(ref, u, torch.tensor(level, device=GPU), hi)
        assert torch.equal(bits(h), bits(ref))
        assert bool((p >= level - 0.02).all())


@cuda_only
def test_side_stream_is_used_and_results_are_right():
    """Work goes on the current torch stream: with the default stream held
    busy, an operator launched on a side stream finishes first."""
    torch.manual_seed(2)
    n, d = 257, 4096
    u = torch.randn(d, device=GPU)
    u /= u.norm()
    x = torch.randn(n, d, device=GPU).to(torch.bfloat16)
    h = x.clone()
    lo, hi = torch.zeros((), device=GPU), torch.full((), math.inf, device=GPU)
    host = torch.full((n,), float("nan"), pin_memory=True)
    ref = x.cpu()
    OPS.clamp_(ref, u.cpu(), torch.tensor(0.0), torch.tensor(math.inf))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())  # the inputs are ready
    torch.cuda._sleep(int(5e8))  # then the default stream is kept busy for a while
    with torch.cuda.stream(side):
        OPS.clamp_(h, u, lo, hi)
        p = OPS.project(h, u)
        host.copy_(p, non_blocking=True)
        done = side.record_event()
    done.synchronize()
    # had the operators gone to the default stream, they would still wait behind
    # the sleep and the side stream would have copied unfinished results
    assert not torch.cuda.current_stream().query(), "the sleep ended too soon for this test to tell"
    torch.cuda.synchronize()
    assert torch.equal(host, OPS.project(h, u).cpu()), "the side stream copied unfinished results"
    assert bool((host >= -0.02).all())
    torch.testing.assert_close(h.cpu().float(), ref.float(), atol=0.02, rtol=0.01)


@cuda_only
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_a_second_device():
    dev1 = torch.device("cuda", 1)
    torch.cuda.set_device(0)
    torch.manual_seed(3)
    d = 4096
    u = torch.randn(d, device=dev1)
    u /= u.norm()
    x = torch.randn(3, 5, d, device=dev1).to(torch.bfloat16)
    h = x.clone()
    rec = (torch.empty(3, 8, device=dev1), torch.empty(3, 8, device=dev1), torch.empty(3, 8, dtype=torch.bool, device=dev1))
    OPS.apply_(h, u[None], [1], torch.tensor([[0.0, math.inf]], device=dev1), None, *rec, torch.tensor(2, device=dev1))
    torch.cuda.synchronize(dev1)
    ref = x.cpu()
    OPS.apply_(ref, u[None].cpu(), [1], torch.tensor([[0.0, math.inf]]))
    torch.testing.assert_close(h.cpu().float(), ref.float(), atol=0.02, rtol=0.01)
    assert torch.cuda.current_device() == 0
    with pytest.raises(ValueError, match="u: on cuda:0"):
        OPS.project(h, u.to("cuda:0"))


@cuda_only
@pytest.mark.parametrize(
    "call, words",
    [
        (lambda h, u, z: OPS.project(h, u.cpu()), "u: on cpu"),
        (lambda h, u, z: OPS.clamp_(h, u, z.cpu(), z), "lo: on cpu"),
        (lambda h, u, z: OPS.clamp_(h, u, z, z.cpu()), "hi: on cpu"),
        (lambda h, u, z: OPS.steer_(h, u, z, torch.ones(4, 8, dtype=torch.bool)), "mask: on cpu"),
        (lambda h, u, z: OPS.apply_(h, u[None].cpu(), [1], torch.zeros(1, 2, device=GPU)), "dirs: on cpu"),
        (lambda h, u, z: OPS.apply_(h, u[None], [1], torch.zeros(1, 2)), "params: on cpu"),
        (lambda h, u, z: OPS.apply_(h, u[None], [1], torch.zeros(1, 2, device=GPU), None,
                                    torch.empty(4, 8, device=GPU), None, None, torch.tensor(0)), "rec_offset: on cpu"),
        (lambda h, u, z: OPS.clamp_(h, u, z, z, None, torch.empty(4, 8)), "p_before: on cpu"),
        (lambda h, u, z: OPS.clamp_(h.cpu(), u, z, z), "h: on cpu"),
    ],
)
def test_arguments_on_another_device_are_value_errors(call, words):
    h = torch.randn(4, 8, 16, device=GPU)
    u = torch.zeros(16, device=GPU)
    u[0] = 1.0
    z = torch.zeros((), device=GPU)
    before = h.clone()
    with pytest.raises(ValueError, match=words):
        call(h, u, z)
    assert torch.equal(h, before)
