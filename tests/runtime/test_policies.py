"""Drift policies: the latch operator against the float64 reference of its
state machine (rows latching at different tokens, left padding, windows,
release, phases, calls split as generate splits them), gated steps, and
policies on models through generate with a cache (eager, compiled, under
autograd and checkpointing)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from axis_steer.runtime import _torch_ops  # noqa: E402
from axis_steer.runtime import reference as R  # noqa: E402
from axis_steer.runtime.hooks import Attachment  # noqa: E402
from axis_steer.runtime.policies import PHASES  # noqa: E402

from helpers import assert_proj_close, cuda_only, torch_to_f64  # noqa: E402
from zoo import VOCAB, batch, left_padded, random_axis, thresholds_from, tiny_model  # noqa: E402

torch.set_num_threads(1)
OPS = torch.ops.axis_steer
TDTYPE = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def f32(x, device="cpu") -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32)).to(device)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int16)


def _params(threshold, k=1, release=None, release_k=1, phases="both", start=False):
    prompt, generated = PHASES[phases]
    rel = math.nan if release is None else release
    return torch.tensor([threshold, k, rel, release_k, prompt, generated, float(start), 0.0])


# ---- the reference itself -------------------------------------------------------------------


def test_reference_state_machine_on_a_hand_made_sequence():
    p = np.array([[1.0, -1.0, -1.0, 0.5, -1.0, -1.0, -1.0, 2.0, 2.0, -1.0]])
    r = R.latch(p, threshold=0.0, k=2)
    # low at 1, 2: latched at 2, gated from 3 on
    assert r.gate[0].tolist() == [False] * 3 + [True] * 7
    assert r.latched_at.tolist() == [2] and r.count.tolist() == [1]
    r = R.latch(p, threshold=0.0, k=2, release=1.0, release_k=2)
    # released after the two tokens above 1.0 (7, 8), latched again? 9 alone is not enough
    assert r.gate[0].tolist() == [False] * 3 + [True] * 6 + [False]
    assert r.latched.tolist() == [False] and r.count.tolist() == [1]
    # a window of 3: means -1/3, -0.5, -1/2, -2/3 ...; first below -0.6 at token 6
    r = R.latch(p, threshold=-0.6, k=1, window=3)
    assert r.latched_at.tolist() == [6]
    # padding neither counts nor is gated; phases follow the calls
    m = np.array([[True, True, False, True, True, True, True, True, True, True]])
    r = R.latch(p, m, threshold=0.0, k=2, phases="generated", calls=[7, 1, 1, 1])
    assert r.latched_at.tolist() == [5]  # low at 1, 4, 5 (3 is not, 2 is padding)
    assert r.gate[0].tolist() == [False] * 7 + [True] * 3


# ---- the operator ----------------------------------------------------------------------------


def _case(seed, dtype, batch=3, total=20, d=16):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g)
    u /= u.norm()
    # projections that drift down at a different token in each row
    drift = torch.stack([torch.linspace(1.0, -1.5 - r, total) for r in range(batch)])
    h = torch.randn(batch, total, d, generator=g) * 0.3 + (drift + 0.4 * torch.randn(batch, total, generator=g))[..., None] * u
    mask = torch.ones(batch, total, dtype=torch.bool)
    for r in range(batch):
        mask[r, : 2 * r] = False  # left padding
    mask[0, 9] = False  # and a hole
    return h.to(dtype), u, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("window, release", [(1, None), (3, None), (1, 0.2), (4, 0.0)])
@pytest.mark.parametrize("phases", ["both", "generated"])
def test_latch_operator_matches_the_reference(dtype, window, release, phases):
    h, u, mask = _case(1, dtype)
    batch, total, _ = h.shape
    calls = [9] + [1] * 6 + [5]  # a prompt, decode steps, a chunk
    cap = total + 3
    params = _params(-0.3, k=2, release=release, release_k=2, phases=phases)
    state = torch.zeros(batch, 8, dtype=torch.int64)
    ring = torch.zeros(batch, window)
    gate = torch.zeros(batch, cap, dtype=torch.bool)
    p = torch.full((batch, cap), 7.0)
    at = 0
    for n in calls:
        OPS.latch_(h[:, at : at + n], params, torch.tensor(at), state, ring, gate, u, p, mask[:, at : at + n])
        at += n
    # the projections: the core's, within rounding of the float64 ones, NaN on padding
    ref_p = R.project(torch_to_f64(h), u.double().numpy(), mask.numpy())
    assert_proj_close(p[:, :total].numpy(), ref_p, torch_to_f64(h), u.double().numpy())
    assert (p[:, total:] == 7.0).all()
    ref = R.latch(p[:, :total], mask, threshold=-0.3, k=2, window=window, release=release, release_k=2,
                  phases=phases, calls=calls)
    assert np.array_equal(gate[:, :total].numpy(), ref.gate)
    assert not gate[:, total:].any()
    assert state[:, 2].numpy().astype(bool).tolist() == ref.latched.tolist()
    assert state[:, 5].tolist() == ref.latched_at.tolist()
    assert state[:, 7].tolist() == ref.count.tolist()
    assert len(set(ref.latched_at.tolist())) > 1, "rows latch at different tokens"
    # one call of the whole sequence gives the same gates when the phases are open alike
    if phases == "both":
        state2, gate2 = torch.zeros_like(state), torch.zeros_like(gate)
        OPS.latch_(h, params, torch.tensor(0), state2, torch.zeros_like(ring), gate2, u, torch.zeros_like(p), mask)
        assert torch.equal(gate2, gate) and torch.equal(state2, state)


def test_a_new_sequence_resets_the_state_and_the_direct_entry_agrees():
    h, u, mask = _case(2, torch.float32)
    batch, total, _ = h.shape
    params = _params(-0.3, k=1)
    bufs = [torch.zeros(batch, 8, dtype=torch.int64), torch.zeros(batch, 1),
            torch.zeros(batch, total, dtype=torch.bool), torch.zeros(batch, total)]
    for _ in range(2):  # the second call starts at offset 0: the state from the first is gone
        OPS.latch_(h, params, torch.tensor(0), *bufs[:3], u, bufs[3], mask)
    ref = R.latch(bufs[3], mask, threshold=-0.3, k=1)
    assert bufs[0][:, 5].tolist() == ref.latched_at.tolist()
    # the direct entry: the latch and a clamp it gates, in one call
    direct = [torch.zeros_like(b) for b in bufs]
    lo = 0.5
    x = h.clone()
    _torch_ops.apply_direct_(x, u[None], (1,), torch.tensor([[lo, math.inf]]), mask, None, None, None,
                             torch.tensor(0), (direct[2],), (0,), ((params, direct[0], direct[1], direct[2], u, direct[3]),))
    for a, b in zip(bufs, direct):
        assert torch.equal(a.nan_to_num(9.0), b.nan_to_num(9.0))
    y = h.clone()
    OPS.apply_(y, u[None], [1], torch.tensor([[lo, math.inf]]), mask, None, None, None, torch.tensor(0), [bufs[2]], [0])
    assert torch.equal(x, y)
    gated = torch.as_tensor(ref.gate)
    assert torch.equal(x[~gated], h[~gated])  # closed rows: bit for bit
    assert (x[gated] @ u >= lo - 1e-5).all()


def test_gated_steps_skip_closed_rows_and_report_their_projection():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(2, 5, 8, generator=g)
    u = torch.randn(8, generator=g)
    u /= u.norm()
    gate = torch.rand(2, 5, generator=g) > 0.5
    x = h.clone()
    rec = (torch.empty(2, 5), torch.empty(2, 5), torch.empty(2, 5, dtype=torch.bool))
    OPS.apply_(x, torch.stack([u, u]), [0, 1], torch.tensor([[0.0, 0.0], [5.0, math.inf]]), None, *rec, None,
               [gate], [-1, 0])
    assert torch.equal(x[~gate], h[~gate])
    assert torch.allclose(x[gate] @ u, torch.full((int(gate.sum()),), 5.0), atol=1e-5)
    assert torch.equal(rec[2], gate)  # fired exactly where open
    assert torch.allclose(rec[0], (h @ u).float(), atol=1e-5)


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda a: a.__setitem__(1, a[1][:, :3]), "latch state"),
        (lambda a: a.__setitem__(3, a[3].float()), "latch gate"),
        (lambda a: a.__setitem__(0, a[0][:5]), "latch params"),
        (lambda a: a.__setitem__(5, None), "latch p"),
    ],
)
def test_latch_arguments_are_checked(change, words):
    h, u, mask = _case(4, torch.float32)
    args = [_params(0.0), torch.zeros(3, 8, dtype=torch.int64), torch.zeros(3, 1), torch.zeros(3, 20, dtype=torch.bool),
            u, torch.zeros(3, 20)]
    change(args)
    with pytest.raises((ValueError, TypeError), match=words):
        _torch_ops.apply_direct_(h, u[None], (), torch.zeros(0, 2), None, None, None, None, torch.tensor(0), (), (),
                                 (tuple(args),))
    bad = _params(0.0)
    bad[1] = 0.5
    with pytest.raises(ValueError, match=r"latches\[0\].params\[1\]"):
        OPS.latch_(h, bad, torch.tensor(0), torch.zeros(3, 8, dtype=torch.int64), torch.zeros(3, 1),
                   torch.zeros(3, 20, dtype=torch.bool), u, torch.zeros(3, 20))


# ---- policies on models ----------------------------------------------------------------------


def _setup(threshold_q=0.35, **latch_kw):
    model = tiny_model("llama")
    axis = random_axis()
    taus = thresholds_from(model, axis, [1, 2, 3], q=0.6)
    g = torch.Generator().manual_seed(7)
    seqs = [torch.randint(3, VOCAB, (n,), generator=g) for n in (6, 10, 8, 9)]
    ids, am = left_padded(seqs)
    probe = Attachment(model, axis)
    mon = probe.monitor([1])
    with probe, torch.no_grad():
        model(input_ids=ids, attention_mask=am)
    p1 = mon.readings().p_in[:, 0][mon.readings().valid]
    thr = float(np.quantile(p1, threshold_q))
    att = Attachment(model, axis)
    pol = att.latch(1, thr, **latch_kw)
    att.cap([1, 2, 3], taus, policy=pol)
    return model, axis, taus, ids, am, att, pol, thr


def test_latched_caps_through_generate_follow_the_reference():
    model, axis, taus, ids, am, att, pol, thr = _setup(0.3, k=2, window=2)
    mon = att.monitor([1, 2, 3])
    n_new = 10
    with att, torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=n_new, do_sample=False)
        r = mon.readings()
        again = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=n_new, do_sample=False)
        nocache = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=n_new, do_sample=False,
                                 use_cache=False)
    assert torch.equal(out, again), "a new generate call starts from a reset state"
    assert torch.equal(out, nocache), "the gates do not depend on how the tokens were split into calls"
    (pr,) = r.policies
    calls = [ids.shape[1]] + [1] * (r.length - ids.shape[1])
    ref = R.latch(pr.p, r.valid, threshold=thr, k=2, window=2, calls=calls)
    assert np.array_equal(pr.gate, ref.gate)
    assert pr.state.latched_at.tolist() == ref.latched_at.tolist()
    # the detection projection is the layer's own reading, before its caps
    np.testing.assert_array_equal(np.nan_to_num(pr.p, nan=9.0), np.nan_to_num(r.p_in[:, 0], nan=9.0))
    # caps fire only where the gate is open, and do fire there
    fired = r.fired.any(1)
    assert not (fired & ~pr.gate).any() and fired.any()
    # rows latching at different tokens; some in the prompt, some while generating
    at = pr.state.latched_at
    assert len(set(at[at >= 0].tolist())) > 1
    # a row that never latched is the plain model's
    with torch.no_grad():
        plain = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=n_new, do_sample=False)
    never = np.flatnonzero(at < 0)
    latched_early = [b for b in range(len(at)) if 0 <= at[b] < ids.shape[1] - 1]
    for b in never:
        assert torch.equal(out[b], plain[b]), b
    assert any(not torch.equal(out[b], plain[b]) for b in latched_early) or not latched_early


def test_rows_never_latched_stay_bit_identical_and_reset_on_request():
    model, axis, taus, ids, am, att, pol, thr = _setup(0.0, k=3)
    pol.configure(threshold=-1e6)  # retuned in the tensor: no row latches
    with att, torch.no_grad():
        capped = model(input_ids=ids, attention_mask=am).logits
    plain = model(input_ids=ids, attention_mask=am).logits
    assert torch.equal(capped, plain)
    assert (pol.state().latched_at == -1).all()
    pol.configure(threshold=1e6, k=1)  # every row latches on its first real token
    with att, torch.no_grad():
        model(input_ids=ids, attention_mask=am)
    st = pol.state()
    assert st.latched.all() and (st.latched_at == am.argmax(1).numpy()).all()
    pol.reset([0, 2])
    st = pol.state()
    assert st.latched.tolist() == [False, True, False, True] and st.latched_at[[0, 2]].tolist() == [-1, -1]
    pol.reset()
    assert not pol.state().latched.any()


@pytest.mark.parametrize("phases", ["generated", "prompt"])
def test_phases(phases):
    model, axis, taus, ids, am, att, pol, thr = _setup(0.5, k=1)
    pol.configure(threshold=1e6, phases=phases)  # latched from the first token
    att._interventions[0].set_thresholds(1e3)  # caps far above every token: they fire wherever they run
    alone = att.phases(phases)
    att.cap(0, 1e3, policy=alone)
    mon = att.monitor([0, 2])
    with att, torch.no_grad():
        model.generate(input_ids=ids, attention_mask=am, max_new_tokens=5, do_sample=False)
    r = mon.readings()
    prompt = np.zeros(r.length, bool)
    prompt[: ids.shape[1]] = True
    for li in range(2):
        fired = r.fired[:, li]
        if phases == "generated":
            assert not fired[:, prompt].any() and fired[:, ~prompt].any()
        else:
            assert not fired[:, ~prompt].any() and fired[:, prompt].any()
    assert [x.name for x in r.policies] == [pol.name, alone.name]


def test_a_gated_layer_before_the_detection_layer_is_refused():
    model = tiny_model("llama")
    att = Attachment(model, random_axis())
    pol = att.latch(2, 0.0)
    with pytest.raises(ValueError, match="before the policy's detection layer 2"):
        att.cap([1, 2], 0.0, policy=pol)
    other = Attachment(model, random_axis()).latch(0, 0.0)
    with pytest.raises(ValueError, match="policy of this attachment"):
        att.cap(2, 0.0, policy=other)
    with pytest.raises(ValueError, match="release"):
        att.latch(2, 0.0, release=-1.0)
    with pytest.raises(ValueError, match="k = 0"):
        att.latch(2, 0.0, k=0)
    with pytest.raises(ValueError, match="phases"):
        att.latch(2, 0.0, phases="decode")
    cap = att.cap(3, 0.0)
    pol.gate(cap)
    assert cap.policy is pol and 3 in att._programs and att._programs[2].latches == [pol]
    pol.remove()
    assert cap.policy is None and 2 not in att._programs


def test_compiled_model_keeps_its_graph_when_the_policy_is_retuned():
    model, axis, taus, ids, am, att, pol, thr = _setup(0.3, k=2, window=2)
    torch._dynamo.reset()
    compiles = []

    def backend(gm, example_inputs):
        compiles.append(gm)
        return gm.forward

    mon = att.monitor([1]).prepare(batch=4, capacity=64)
    pol.prepare(batch=4, capacity=64)
    with torch.no_grad():
        eager1 = {}
        with att:
            eager1["a"] = model(input_ids=ids, attention_mask=am).logits
            pol.configure(threshold=thr - 0.5)
            eager1["b"] = model(input_ids=ids, attention_mask=am).logits
            pol.configure(threshold=thr)
        att.attach()
        fn = torch.compile(model, backend=backend)
        a = fn(input_ids=ids, attention_mask=am).logits
        gates_a = mon.readings().policies[0].gate
        n = len(compiles)
        pol.configure(threshold=thr - 0.5)
        b = fn(input_ids=ids, attention_mask=am).logits
        assert len(compiles) == n, "retuning the policy recompiled"
        att.detach()
    torch._dynamo.reset()
    torch.testing.assert_close(a, eager1["a"])
    torch.testing.assert_close(b, eager1["b"])
    assert gates_a.any() and not torch.equal(a, b)


def test_autograd_path_and_checkpointing_advance_the_latch_once():
    model, axis, taus, ids, am, att, pol, thr = _setup(0.4, k=1)
    model.train()
    with att:
        out = model(input_ids=ids, attention_mask=am, labels=ids)
        out.loss.backward()
        first = pol.state()
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        out2 = model(input_ids=ids, attention_mask=am, labels=ids)
        out2.loss.backward()
        second = pol.state()
    torch.testing.assert_close(out.loss, out2.loss)
    assert first.latched_at.tolist() == second.latched_at.tolist()
    assert first.count.tolist() == second.count.tolist()
    with torch.no_grad(), att:
        eager = model(input_ids=ids, attention_mask=am, labels=ids).loss
    torch.testing.assert_close(eager, out.loss)


def test_batch_size_changes_reallocate_the_state():
    model, axis, taus, ids, am, att, pol, thr = _setup(0.5, k=1)
    with att, torch.no_grad():
        model(input_ids=ids, attention_mask=am)
        assert pol.state().latched.shape == (4,)
        model(input_ids=ids[:2], attention_mask=am[:2])
        assert pol.state().latched.shape == (2,)
        model.generate(input_ids=ids[:1], attention_mask=am[:1], max_new_tokens=40, do_sample=False)
    assert pol.capacity >= ids.shape[1] + 40


# ---- drift latches on every device (the CPU always, CUDA when present) ---------------------------------------------------------------


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
def test_latch_parity(device, dtype, exact, window):
    """The latch and a clamp it gates, a prompt then decode steps then a chunk,
    batch rows beyond one block of the scan: with exact projections the device
    gives the CPU's bits everywhere; otherwise its gates and state are what the
    float64 reference makes of its own projections."""
    batch, total, d = 70, 24, 96
    h, u, mask = _latch_inputs(5, TDTYPE[dtype], batch, total, d, exact)
    calls = [10] + [1] * 8 + [6]
    params = torch.tensor([-0.3, 2.0, 0.2, 2.0, 1.0, 1.0, 0.0, 0.0])
    cap = total + 2
    got = _run_latch(h.to(device), u, mask.to(device), params, calls, window, cap)
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


@cuda_only
def test_graph_replays_of_a_latch_follow_its_state():
    """A decode step's latch and gated clamp captured once; replays with the
    offset advanced in device memory give the eager calls' state and rows."""
    DEV = device = torch.device("cuda")
    batch, d, steps = 8, 4096, 12
    h, u, mask = _latch_inputs(6, torch.bfloat16, batch, steps, d, exact=False)
    params = f32([-0.3, 2.0, math.nan, 1.0, 1.0, 1.0, 0.0, 0.0], DEV)
    ud = u.to(DEV)
    state = torch.zeros(batch, 8, dtype=torch.int64, device=device)
    ring = torch.zeros(batch, 1, device=device)
    gate = torch.zeros(batch, steps, dtype=torch.bool, device=device)
    p = torch.zeros(batch, steps, device=device)
    x = torch.empty(batch, 1, d, dtype=torch.bfloat16, device=device)
    m = torch.ones(batch, 1, dtype=torch.bool, device=device)
    off = torch.zeros((), dtype=torch.int64, device=device)
    lo = f32([[0.25, math.inf]], DEV)

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


def test_hooks_latched_caps_on_the_device(device):
    model = tiny_model().to(device)
    axis = random_axis()
    taus = thresholds_from(model, axis, [1, 2, 3])
    g = torch.Generator().manual_seed(7)
    ids, am = left_padded([torch.randint(3, VOCAB, (n,), generator=g) for n in (6, 10, 8, 9)], device)
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


def test_compiled_static_generate_with_a_latch_matches_eager_without_recompiles(device):
    from torch._dynamo.utils import counters
    from transformers import CompileConfig

    model = tiny_model().to(device)
    axis = random_axis()
    taus = thresholds_from(model, axis, [1, 2])
    ids, am = batch(4, b=2, s=6, pad=(0, 0), device=device)
    n_new = 10
    if device.type == "cuda":
        cfg = CompileConfig()
    else:
        cfg = CompileConfig(backend="eager", mode=None)
        cfg._compile_all_devices = True
    att = Attachment(model, axis)
    pol = att.latch(1, 0.0, k=2)
    att.cap([1, 2], taus, policy=pol)
    cap_len = ids.shape[1] + n_new
    mon = att.monitor([1]).prepare(batch=2, capacity=cap_len, device=device)
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
