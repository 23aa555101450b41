"""The CUDA operators: parity with the CPU operators and the float64 reference
over dtype x shape x row layout x bounds, the NaN policy, CUDA graphs with
parameters changed between replays, opcheck, streams, devices, and the model
hooks on a GPU (eager, and compiled ``generate(cache_implementation="static")``).

Skips without a CUDA device. ``AXIS_STEER_TEST_DEVICE=cpu`` runs the checks
that do not need one with the CPU standing in for the GPU: a test of this
file's own logic on machines without a GPU (CPU against CPU is trivially
close; graphs, streams and devices skip)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

STAND_IN = os.environ.get("AXIS_STEER_TEST_DEVICE", "") == "cpu"
if not STAND_IN and not torch.cuda.is_available():
    pytest.skip("no CUDA device (AXIS_STEER_TEST_DEVICE=cpu checks this file's logic on the CPU)",
                allow_module_level=True)

from axis_steer.runtime import _torch_ops  # noqa: E402

if not STAND_IN and not _torch_ops.WITH_CUDA:
    if os.environ.get("AXIS_STEER_NO_CUDA", "") not in ("", "0"):
        pytest.skip("built with AXIS_STEER_NO_CUDA", allow_module_level=True)
    pytest.fail(
        "a CUDA device is present but axis_steer was built without its CUDA kernels "
        "(axis_steer._ops.WITH_CUDA == 0): rebuild where nvcc and a CUDA build of torch are found",
        pytrace=False,
    )

from axis_steer.runtime import ops as O  # noqa: E402
from axis_steer.runtime import reference as R  # noqa: E402

from helpers import (  # noqa: E402
    DTYPES,
    LAYOUTS,
    UNIT_ROUNDOFF,
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
DEV = torch.device("cpu" if STAND_IN else "cuda")
needs_gpu = pytest.mark.skipif(STAND_IN, reason="needs a real CUDA device")
N_ROWS = (0, 1, 3, 257, 4096)
DIMS = (1, 7, 64, 4095, 4096, 8192)
BOUNDS = ("floor", "ceiling", "band", "equal", "per_row")
TDTYPE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PAD = -7.25  # what the bytes between rows hold on the device (exact in every dtype)


def f32(x, device=DEV) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32)).to(device)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int16)


class DeviceRows:
    """A copy of CPU rows on the device with the same sizes, strides and
    alignment modulo 16 bytes (so the same vector or element loads), inside a
    buffer whose other elements hold PAD, to check that they stay untouched."""

    def __init__(self, t: torch.Tensor, device=DEV):
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


# ---- parity over dtype x shape x layout x bounds ------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bounds", BOUNDS)
def test_clamp_and_project_parity(dtype, layout, bounds):
    rng = np.random.default_rng(hash(("cuda", dtype, layout, bounds)) % 2**32)
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
        dev = DeviceRows(h)
        before = dev.rows.clone()
        # the device: in place with every output, then project and the out-of-place apply
        outs = (torch.empty(n, device=DEV), torch.empty(n, device=DEV), torch.empty(n, dtype=torch.bool, device=DEV))
        OPS.clamp_(dev.rows, f32(u), f32(lo), f32(hi), None, *outs)
        pb, pa, ch = (o.cpu().numpy()[rows] for o in outs)
        out64 = torch_to_f64(dev.rows[torch.as_tensor(rows, dtype=torch.long, device=DEV)])
        check_clamp_rows(h64, out64, u, lo_s, hi_s, dtype, changed=ch)
        assert_proj_close(pb, p_ref, h64, u64)
        assert_proj_close(pa, R.project(out64, u64), out64, u64)
        assert_proj_close(OPS.project(before, f32(u)).cpu().numpy()[rows], p_ref, h64, u64)
        ch = outs[2].cpu()
        kept = ~ch.to(DEV)
        assert torch.equal(bits(dev.rows[kept]), bits(before[kept])), "a row inside its bounds changed"
        dev.check_padding()
        oop, oop_changed = OPS.apply(before, f32(u)[None], [1], f32(np.stack([np.broadcast_to(lo, (n,)), np.broadcast_to(hi, (n,))]))[None])
        assert torch.equal(bits(oop), bits(dev.rows)) and torch.equal(oop_changed[0].cpu(), ch)
        # the CPU: the same decisions except within rounding of a bound
        cpu_ch = torch.empty(n, dtype=torch.bool)
        OPS.clamp_(h, f32(u, "cpu"), f32(lo, "cpu"), f32(hi, "cpu"), None, None, None, cpu_ch)
        mag = (h.float().abs() @ torch.as_tensor(np.abs(u))).double().numpy()  # sum |h_j u_j| per row
        amb = near_bound(p_all, lo, hi, 4 * (d / 16 + 8) * 2.0**-24 * mag + 1e-30)
        assert np.all((cpu_ch.numpy() == ch.numpy()) | amb), (n, d)
        same = ~(cpu_ch | ch)
        assert torch.equal(bits(h[same]), bits(dev.rows[same.to(DEV)].cpu()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_steer_and_set_projection_parity(dtype, layout):
    rng = np.random.default_rng(hash(("cuda-steer", dtype, layout)) % 2**32)
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
                dev = DeviceRows(h)
                pb = torch.empty(n, device=DEV)
                if kind == "steer":
                    OPS.steer_(dev.rows, f32(w), f32(alpha))
                    OPS.steer_(h, f32(w, "cpu"), f32(alpha, "cpu"))
                    ref = R.steer(h64, w64, alpha.astype(np.float64))
                    tol = row_tol(ref.out, h64, w64, np.zeros(n), dtype)
                else:
                    OPS.set_projection_(dev.rows, f32(u), f32(target), None, pb)
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
def test_fused_program_with_record_and_offset(dtype, layout):
    """apply_ over a prompt and then one token at a time, recording at a device
    write offset (as the monitoring hooks do), on the device and on the CPU;
    and the out-of-place apply."""
    rng = np.random.default_rng(hash(("cuda-apply", dtype, layout)) % 2**32)
    for d in (7, 64, 4095, 4096):
        b, s, steps_after = 3, 6, 4
        cap = s + steps_after
        steps = _program(rng, d, b, s)
        mask = np.ones((b, s), dtype=bool)
        mask[0, :2] = False  # left padding
        rec = {be: (torch.full((b, cap), 99.0, device=dv), torch.full((b, cap), 99.0, device=dv),
                    torch.zeros((b, cap), dtype=torch.bool, device=dv))
               for be, dv in (("dev", DEV), ("cpu", torch.device("cpu")))}
        offset = {"dev": torch.zeros((), dtype=torch.int64, device=DEV), "cpu": torch.zeros((), dtype=torch.int64)}
        col = 0
        for call in range(1 + steps_after):
            seq = s if call == 0 else 1
            vals = rng.standard_normal((b, seq, d)) * 1.5
            m = mask if call == 0 else np.ones((b, 1), dtype=bool)
            h = make_rows(vals, layout, dtype, xp="torch")
            h64 = torch_to_f64(h)
            dev = DeviceRows(h)
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


# ---- NaN policy ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_rows_are_never_written(dtype):
    d = 300  # block rows of several chunks
    u = torch.zeros(d, device=DEV)
    u[0] = 1.0
    h = torch.ones(4, d, dtype=TDTYPE[dtype], device=DEV)
    h[0, 3] = float("nan")
    h[1, 0] = float("inf")
    h[2, 5] = float("-inf")
    before = h.clone()
    pb, pa, ch = torch.empty(4, device=DEV), torch.empty(4, device=DEV), torch.empty(4, dtype=torch.bool, device=DEV)
    OPS.clamp_(h, u, torch.tensor(5.0, device=DEV), torch.tensor(math.inf, device=DEV), None, pb, pa, ch)
    assert ch.tolist() == [False, False, False, True]
    assert torch.equal(bits(h[:3]), bits(before[:3]))
    assert math.isnan(pb[0]) and pb[1] == math.inf and math.isnan(pb[2])  # -inf * 0 = nan
    assert h[3, 0] == 5.0
    # NaN or infinite targets and coefficients leave rows as they are
    h = torch.ones(3, d, dtype=TDTYPE[dtype], device=DEV)
    OPS.set_projection_(h, u, torch.tensor([float("nan"), float("inf"), float("-inf")], device=DEV))
    OPS.steer_(h, u, torch.tensor([float("nan"), 0.0, float("inf")], device=DEV))
    assert torch.equal(h, torch.ones(3, d, dtype=TDTYPE[dtype], device=DEV))
    # a bound of +inf below, or -inf above, is an infinite target: never written
    h = torch.ones(2, d, dtype=TDTYPE[dtype], device=DEV)
    OPS.clamp_(h, u, torch.tensor([[math.inf], [-math.inf]], device=DEV)[:, 0], torch.tensor([math.inf, -math.inf], device=DEV))
    assert torch.equal(h, torch.ones(2, d, dtype=TDTYPE[dtype], device=DEV))


def test_nan_bound_never_fires_and_open_bounds():
    u = torch.tensor([1.0, 0.0], device=DEV)
    h = torch.tensor([[-3.0, 1.0], [3.0, 1.0]], device=DEV)
    before = h.clone()
    OPS.clamp_(h, u, torch.tensor(float("nan"), device=DEV), torch.tensor(float("nan"), device=DEV))
    assert torch.equal(h, before)
    OPS.clamp_(h, u, torch.tensor(-math.inf, device=DEV), torch.tensor(math.inf, device=DEV))
    assert torch.equal(h, before)
    OPS.clamp_(h, u, torch.tensor(0.0, device=DEV), torch.tensor(0.0, device=DEV))
    assert torch.equal(h[:, 0], torch.zeros(2, device=DEV))


@needs_gpu
def test_per_row_lo_above_hi_takes_hi_on_the_device():
    """The device does not read parameters on the host, so it cannot reject
    lo > hi per row; it applies the documented rule (hi wins, as torch.clamp)."""
    u = torch.tensor([1.0, 0.0], device=DEV)
    h = torch.tensor([[-3.0, 1.0], [3.0, 1.0], [0.5, 1.0]], device=DEV)
    OPS.clamp_(h, u, torch.tensor([1.0, 1.0, 1.0], device=DEV), torch.tensor([0.0, 0.0, 0.0], device=DEV))
    assert h[:, 0].tolist() == [0.0, 0.0, 0.0]


# ---- CUDA graphs -------------------------------------------------------------------------------


@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_graph_replays_follow_parameters_written_between_replays(dtype):
    """apply_ captured once; thresholds, mask and write offset changed by
    copy_ into the captured tensors before each replay; every replay equals an
    eager call with the same values, bit for bit, records included."""
    torch.manual_seed(0)
    b, d, cap, n_replays = 4, 4096, 16, 6
    dt = TDTYPE[dtype]
    u = torch.randn(d, device=DEV)
    u /= u.norm()
    w = torch.randn(d, device=DEV) * 0.01
    dirs = torch.stack([u, w])
    ops = [1, 3]
    h = torch.empty(b, 1, d, dtype=dt, device=DEV)
    params = torch.zeros(2, 2, b, 1, device=DEV)
    mask = torch.ones(b, 1, dtype=torch.bool, device=DEV)
    offset = torch.zeros((), dtype=torch.int64, device=DEV)
    rec = (torch.full((b, cap), 7.0, device=DEV), torch.full((b, cap), 7.0, device=DEV),
           torch.zeros(b, cap, dtype=torch.bool, device=DEV))
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
        x = torch.randn(b, 1, d, device=DEV).to(dt)
        p = torch.randn(2, 2, b, 1, device=DEV) * 0.5
        p[0, 1] = math.inf if step % 2 == 0 else 0.3  # floor, then a band
        p[1, 1] = 0.0
        m = torch.rand(b, 1, device=DEV) > 0.3
        h.copy_(x)
        params.copy_(p)
        mask.copy_(m)
        offset.fill_(step)
        graph.replay()
        ref = x.clone()
        OPS.apply_(ref, dirs, ops, p, m, *eager_rec, torch.tensor(step, device=DEV))
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
    h.copy_(xc.to(DEV))
    params.copy_(pc.to(DEV))
    mask.fill_(True)
    graph.replay()
    cpu = xc.clone()
    OPS.apply_(cpu, dirs.cpu(), ops, pc)
    torch.testing.assert_close(h.cpu().float(), cpu.float(), atol=0.02 if dt != torch.float32 else 1e-5, rtol=0.01)


@needs_gpu
def test_graph_of_single_ops_with_tensor_bounds():
    torch.manual_seed(1)
    d = 8192
    u = torch.randn(d, device=DEV)
    u /= u.norm()
    h = torch.empty(64, d, dtype=torch.bfloat16, device=DEV)
    lo, hi = torch.zeros((), device=DEV), torch.full((), math.inf, device=DEV)
    p = torch.empty(64, device=DEV)
    graph = torch.cuda.CUDAGraph()
    h.normal_()
    OPS.clamp_(h, u, lo, hi)
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        OPS.clamp_(h, u, lo, hi)
        p.copy_(OPS.project(h, u))
    for level in (-0.5, 0.0, 0.75):
        x = torch.randn(64, d, device=DEV).to(torch.bfloat16)
        h.copy_(x)
        lo.fill_(level)
        graph.replay()
        ref = x.clone()
        OPS.clamp_(ref, u, torch.tensor(level, device=DEV), hi)
        assert torch.equal(bits(h), bits(ref))
        assert bool((p >= level - 0.02).all())


# ---- opcheck, streams, devices ----------------------------------------------------------------


def _samples(device):
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


@pytest.mark.parametrize("i", range(21))
def test_opcheck(i):
    op, args = list(_samples(DEV))[i]
    torch.library.opcheck(op, args)


def test_opcheck_out_of_place_with_grad():
    h = torch.randn(2, 3, 16, device=DEV, requires_grad=True)
    u = torch.randn(16, device=DEV)
    u = u / u.norm()
    torch.library.opcheck(OPS.apply.default, (h, u[None], [1], torch.tensor([[0.1, 0.4]], device=DEV), None))
    torch.library.opcheck(OPS.project.default, (h, u, None))
    out = O.clamp(h, u, 0.1, math.inf)
    (g,) = torch.autograd.grad(out.sum(), h)
    assert g.device == h.device


@needs_gpu
def test_side_stream_is_used_and_results_are_right():
    """Work goes on the current torch stream: with the default stream held
    busy, an operator launched on a side stream finishes first."""
    torch.manual_seed(2)
    n, d = 257, 4096
    u = torch.randn(d, device=DEV)
    u /= u.norm()
    x = torch.randn(n, d, device=DEV).to(torch.bfloat16)
    h = x.clone()
    lo, hi = torch.zeros((), device=DEV), torch.full((), math.inf, device=DEV)
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


@needs_gpu
@pytest.mark.skipif(not STAND_IN and torch.cuda.device_count() < 2, reason="needs two GPUs")
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


@needs_gpu
@pytest.mark.parametrize(
    "call, words",
    [
        (lambda h, u, z: OPS.project(h, u.cpu()), "u: on cpu"),
        (lambda h, u, z: OPS.clamp_(h, u, z.cpu(), z), "lo: on cpu"),
        (lambda h, u, z: OPS.clamp_(h, u, z, z.cpu()), "hi: on cpu"),
        (lambda h, u, z: OPS.steer_(h, u, z, torch.ones(4, 8, dtype=torch.bool)), "mask: on cpu"),
        (lambda h, u, z: OPS.apply_(h, u[None].cpu(), [1], torch.zeros(1, 2, device=DEV)), "dirs: on cpu"),
        (lambda h, u, z: OPS.apply_(h, u[None], [1], torch.zeros(1, 2)), "params: on cpu"),
        (lambda h, u, z: OPS.apply_(h, u[None], [1], torch.zeros(1, 2, device=DEV), None,
                                    torch.empty(4, 8, device=DEV), None, None, torch.tensor(0)), "rec_offset: on cpu"),
        (lambda h, u, z: OPS.clamp_(h, u, z, z, None, torch.empty(4, 8)), "p_before: on cpu"),
        (lambda h, u, z: OPS.clamp_(h.cpu(), u, z, z), "h: on cpu"),
    ],
)
def test_arguments_on_another_device_are_value_errors(call, words):
    h = torch.randn(4, 8, 16, device=DEV)
    u = torch.zeros(16, device=DEV)
    u[0] = 1.0
    z = torch.zeros((), device=DEV)
    before = h.clone()
    with pytest.raises(ValueError, match=words):
        call(h, u, z)
    assert torch.equal(h, before)


# ---- hooks on a model on the device ----------------------------------------------------------


def _model(arch="llama"):
    pytest.importorskip("transformers")
    from zoo import tiny_model

    return tiny_model(arch).to(DEV)


def test_hooks_cap_on_the_device_and_generation_is_consistent():
    from axis_steer.runtime.hooks import Attachment

    from zoo import Capture, batch, random_axis, thresholds_from

    model = _model()
    axis = random_axis()
    layers = [1, 2, 3]
    taus = thresholds_from(model, axis, layers)
    att = Attachment(model, axis)
    att.cap(layers, taus)
    mon = att.monitor([2])
    assert att._programs[1].dirs.device.type == DEV.type
    ids, am = batch(3, device=DEV)
    with att:
        seen = Capture(model, layers)  # registered after: sees the capped outputs
        with torch.no_grad():
            model(input_ids=ids, attention_mask=am)
        seen.close()
        for i in layers:
            p = seen.cat(i) @ (axis[i] / axis[i].norm()).to(DEV)
            assert bool((p[am.bool()] >= taus[i] - 1e-4).all()), i
        a = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=8, do_sample=False)
        ra = mon.readings()
        b = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=8, do_sample=False, use_cache=False)
        rb = mon.readings()
    assert torch.equal(a, b)
    np.testing.assert_allclose(ra.p_in, rb.p_in, atol=1e-4, equal_nan=True)
    assert ra.fired.any() and np.isnan(ra.p_in[0, :, :2]).all()


def test_hooks_padded_batch_equals_each_sequence_alone():
    from axis_steer.runtime.hooks import Attachment

    from zoo import VOCAB, left_padded, random_axis, thresholds_from

    model = _model("qwen2")
    axis = random_axis()
    taus = thresholds_from(model, axis, [1, 2])
    g = torch.Generator().manual_seed(9)
    seqs = [torch.randint(3, VOCAB, (n,), generator=g) for n in (5, 9, 7)]
    ids, am = left_padded(seqs, DEV)
    width = ids.shape[1]
    att = Attachment(model, axis)
    att.cap([1, 2], taus)
    mon = att.monitor([1, 2])
    with att:
        out = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=6, do_sample=False)
        rb = mon.readings()
        for r, s in enumerate(seqs):
            alone = model.generate(input_ids=s[None].to(DEV), attention_mask=torch.ones(1, len(s), dtype=torch.long, device=DEV),
                                   max_new_tokens=6, do_sample=False)
            ra = mon.readings()
            assert torch.equal(alone[0, len(s):], out[r, width:]), r
            np.testing.assert_allclose(ra.row(0, 1), rb.row(r, 1), atol=1e-4)
            assert np.array_equal(ra.row(0, 2, "fired"), rb.row(r, 2, "fired"))


def test_compiled_static_generate_matches_eager_without_breaks_or_recompiles():
    """generate(cache_implementation="static") compiles the decode step (on
    CUDA: inductor with CUDA graphs). Hooks attached before the first call;
    retuning thresholds and switching capping off and on between calls must
    not recompile, and every output equals eager capping (greedy, float32),
    monitoring readings included."""
    from torch._dynamo.utils import counters
    from transformers import CompileConfig

    from axis_steer.runtime.hooks import Attachment

    from zoo import batch, random_axis, thresholds_from

    model = _model()
    axis = random_axis()
    layers = [1, 2]
    taus = thresholds_from(model, axis, layers)
    taus2 = {i: t + 0.25 for i, t in taus.items()}
    ids, am = batch(4, b=2, s=6, pad=(0, 0), device=DEV)
    n_new = 10
    if DEV.type == "cuda":
        cfg = CompileConfig()  # inductor, mode="reduce-overhead"
    else:  # the stand-in: dynamo only, forced on the CPU
        cfg = CompileConfig(backend="eager", mode=None)
        cfg._compile_all_devices = True
    att = Attachment(model, axis)
    cap = att.cap(layers, taus)
    mon = att.monitor([2]).prepare(batch=2, capacity=ids.shape[1] + n_new, device=DEV)
    kw = dict(input_ids=ids, attention_mask=am, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False)
    torch._dynamo.reset()
    counters.clear()
    with att:
        eager = {}
        eager["taus"] = model.generate(**kw)
        eager_readings = mon.readings()
        cap.set_thresholds(taus2)
        eager["taus2"] = model.generate(**kw)
        cap.disable()
        eager["off"] = model.generate(**kw)
        cap.enable()
        cap.set_thresholds(taus)
        compiled = {"taus": model.generate(**kw, cache_implementation="static", compile_config=cfg)}
        compiled_readings = mon.readings()
        graphs = counters["stats"]["unique_graphs"]
        assert graphs >= 1, "generate did not compile the decode step"
        with torch._dynamo.config.patch(error_on_recompile=True):
            cap.set_thresholds(taus2)
            compiled["taus2"] = model.generate(**kw, cache_implementation="static", compile_config=cfg)
            cap.disable()
            compiled["off"] = model.generate(**kw, cache_implementation="static", compile_config=cfg)
            cap.enable()
            cap.set_thresholds(taus)
            compiled["again"] = model.generate(**kw, cache_implementation="static", compile_config=cfg)
    breaks = sum(counters["graph_break"].values())
    assert breaks == 0, f"graph breaks: {dict(counters['graph_break'])}"
    assert counters["stats"]["unique_graphs"] == graphs, "retuning recompiled"
    assert not torch.equal(eager["taus"], eager["off"]), "capping changed nothing: the test proves nothing"
    for k in ("taus", "taus2", "off"):
        assert torch.equal(compiled[k], eager[k]), k
    assert torch.equal(compiled["again"], eager["taus"])
    for field in ("p_in", "p_out"):
        np.testing.assert_allclose(getattr(compiled_readings, field), getattr(eager_readings, field), atol=2e-4,
                                   equal_nan=True)
    assert np.array_equal(compiled_readings.fired, eager_readings.fired)
    torch._dynamo.reset()


# ---- drift latches on the device ---------------------------------------------------------------


def _latch_inputs(seed: int, dtype, batch: int, total: int, d: int, exact: bool):
    """Rows whose projection on u drifts down at a different token in each row;
    with ``exact`` the direction is a basis vector and the values multiples of
    1/4, so every backend's projection is exact."""
    g = torch.Generator().manual_seed(seed)
    if exact:
        u = torch.zeros(d)
        u[3] = 1.0
        h = (torch.randint(1, 5, (batch, total, d), generator=g) * 0.5).float()
        h[..., 3] = torch.randint(-8, 8, (batch, total), generator=g) * 0.25
    else:
        u = torch.randn(d, generator=g)
        u /= u.norm()
        drift = torch.stack([torch.linspace(1.0, -1.5 - r % 3, total) for r in range(batch)])
        h = torch.randn(batch, total, d, generator=g) * 0.3 + drift[..., None] * u
    mask = torch.ones(batch, total, dtype=torch.bool)
    for r in range(batch):
        mask[r, : r % 4] = False
    return h.to(dtype), u, mask


def _run_latch(h, u, mask, params, calls, window, cap):
    dev = h.device
    batch = h.shape[0]
    state = torch.zeros(batch, 8, dtype=torch.int64, device=dev)
    ring = torch.zeros(batch, window, device=dev)
    gate = torch.zeros(batch, cap, dtype=torch.bool, device=dev)
    p = torch.full((batch, cap), 7.0, device=dev)
    x = h.clone()
    at = 0
    for n in calls:
        off = torch.tensor(at, device=dev)
        OPS.latch_(x[:, at : at + n], params.to(dev), off, state, ring, gate, u.to(dev), p, mask[:, at : at + n])
        OPS.apply_(x[:, at : at + n], u.to(dev)[None], [1], f32([[0.25, math.inf]], dev), mask[:, at : at + n],
                   None, None, None, off, [gate], [0])
        at += n
    return x, state, gate, p


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("window", [1, 4])
def test_latch_parity(dtype, exact, window):
    """The latch and a clamp it gates, a prompt then decode steps then a chunk,
    batch rows beyond one block of the scan: with exact projections the device
    gives the CPU's bits everywhere; otherwise its gates and state are what the
    float64 reference makes of its own projections."""
    from axis_steer.runtime import reference as R

    batch, total, d = 70, 24, 96
    h, u, mask = _latch_inputs(5, TDTYPE[dtype], batch, total, d, exact)
    calls = [10] + [1] * 8 + [6]
    params = torch.tensor([-0.3, 2.0, 0.2, 2.0, 1.0, 1.0, 0.0, 0.0])
    cap = total + 2
    got = _run_latch(h.to(DEV), u, mask.to(DEV), params, calls, window, cap)
    ref = R.latch(got[3][:, :total].cpu(), mask, threshold=-0.3, k=2, window=window, release=0.2, release_k=2,
                  calls=calls)
    assert np.array_equal(got[2][:, :total].cpu().numpy(), ref.gate)
    assert got[1][:, 5].cpu().tolist() == ref.latched_at.tolist()
    assert got[1][:, 7].cpu().tolist() == ref.count.tolist()
    assert len(set(ref.latched_at.tolist())) > 2
    if exact:
        cpu = _run_latch(h, u, mask, params, calls, window, cap)
        assert torch.equal(bits(got[0].cpu()), bits(cpu[0]))
        assert torch.equal(got[1].cpu(), cpu[1]) and torch.equal(got[2].cpu(), cpu[2])
        assert torch.equal(got[3].cpu().nan_to_num(9.0), cpu[3].nan_to_num(9.0))


@needs_gpu
def test_graph_replays_of_a_latch_follow_its_state():
    """A decode step's latch and gated clamp captured once; replays with the
    offset advanced in device memory give the eager calls' state and rows."""
    from axis_steer.runtime import reference as R

    batch, d, steps = 8, 4096, 12
    h, u, mask = _latch_inputs(6, torch.bfloat16, batch, steps, d, exact=False)
    params = f32([-0.3, 2.0, math.nan, 1.0, 1.0, 1.0, 0.0, 0.0])
    ud = u.to(DEV)
    state = torch.zeros(batch, 8, dtype=torch.int64, device=DEV)
    ring = torch.zeros(batch, 1, device=DEV)
    gate = torch.zeros(batch, steps, dtype=torch.bool, device=DEV)
    p = torch.zeros(batch, steps, device=DEV)
    x = torch.empty(batch, 1, d, dtype=torch.bfloat16, device=DEV)
    m = torch.ones(batch, 1, dtype=torch.bool, device=DEV)
    off = torch.zeros((), dtype=torch.int64, device=DEV)
    lo = f32([[0.25, math.inf]])

    def step():
        OPS.latch_(x, params, off, state, ring, gate, ud, p, m)
        OPS.apply_(x, ud[None], [1], lo, m, None, None, None, off, [gate], [0])

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    outs = []
    for t in range(steps):
        x.copy_(h[:, t : t + 1])
        m.copy_(mask[:, t : t + 1])
        off.fill_(t)
        graph.replay()
        outs.append(x.clone())
    torch.cuda.synchronize()
    ref = R.latch(p.cpu(), mask, threshold=-0.3, k=2, calls=[1] * steps)
    # the first call (offset 0) is a prompt, the others decode steps: both phases open
    assert np.array_equal(gate.cpu().numpy(), ref.gate)
    assert state[:, 5].cpu().tolist() == ref.latched_at.tolist()
    eager = _run_latch(h.to(DEV), u, mask.to(DEV), params.cpu(), [1] * steps, 1, steps)
    assert torch.equal(torch.cat(outs, 1).view(torch.int16), eager[0].view(torch.int16))


def test_hooks_latched_caps_on_the_device():
    from axis_steer.runtime import reference as R
    from axis_steer.runtime.hooks import Attachment

    from zoo import VOCAB, left_padded, random_axis, thresholds_from

    model = _model()
    axis = random_axis()
    taus = thresholds_from(model, axis, [1, 2, 3])
    g = torch.Generator().manual_seed(7)
    ids, am = left_padded([torch.randint(3, VOCAB, (n,), generator=g) for n in (6, 10, 8, 9)], DEV)
    att = Attachment(model, axis)
    pol = att.latch(1, 0.0, k=2, window=2)
    att.cap([1, 2, 3], taus, policy=pol)
    mon = att.monitor([1, 2])
    with att, torch.no_grad():
        a = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=8, do_sample=False)
        r = mon.readings()
        b = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(a, b)
    (pr,) = r.policies
    ref = R.latch(pr.p, r.valid, threshold=0.0, k=2, window=2, calls=[ids.shape[1]] + [1] * (r.length - ids.shape[1]))
    assert np.array_equal(pr.gate, ref.gate)
    assert not (r.fired[:, 1] & ~pr.gate).any()


def test_compiled_static_generate_with_a_latch_matches_eager_without_recompiles():
    from torch._dynamo.utils import counters
    from transformers import CompileConfig

    from axis_steer.runtime.hooks import Attachment

    from zoo import batch, random_axis, thresholds_from

    model = _model()
    axis = random_axis()
    taus = thresholds_from(model, axis, [1, 2])
    ids, am = batch(4, b=2, s=6, pad=(0, 0), device=DEV)
    n_new = 10
    if DEV.type == "cuda":
        cfg = CompileConfig()
    else:
        cfg = CompileConfig(backend="eager", mode=None)
        cfg._compile_all_devices = True
    att = Attachment(model, axis)
    pol = att.latch(1, 0.0, k=2)
    att.cap([1, 2], taus, policy=pol)
    cap_len = ids.shape[1] + n_new
    mon = att.monitor([1]).prepare(batch=2, capacity=cap_len, device=DEV)
    pol.prepare(batch=2, capacity=cap_len)
    kw = dict(input_ids=ids, attention_mask=am, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False)
    torch._dynamo.reset()
    counters.clear()
    with att:
        eager = {"a": model.generate(**kw)}
        eager_gate = mon.readings().policies[0].gate
        pol.configure(threshold=-0.5)
        eager["b"] = model.generate(**kw)
        pol.configure(threshold=0.0)
        compiled = {"a": model.generate(**kw, cache_implementation="static", compile_config=cfg)}
        compiled_gate = mon.readings().policies[0].gate
        graphs = counters["stats"]["unique_graphs"]
        with torch._dynamo.config.patch(error_on_recompile=True):
            pol.configure(threshold=-0.5)
            compiled["b"] = model.generate(**kw, cache_implementation="static", compile_config=cfg)
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == graphs
    for k in eager:
        assert torch.equal(compiled[k], eager[k]), k
    assert np.array_equal(compiled_gate, eager_gate) and eager_gate.any()
    torch._dynamo.reset()
