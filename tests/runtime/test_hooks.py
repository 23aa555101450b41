"""Capping, steering, ablation and monitoring through forward hooks, on tiny
random-weight models of every supported architecture."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch._dynamo.utils import counters  # noqa: E402
from transformers import CompileConfig  # noqa: E402

from axis_steer.errors import AxisSteerError  # noqa: E402
from axis_steer.pipeline.extract import residual_norms  # noqa: E402
from axis_steer.runtime import formats  # noqa: E402
from axis_steer.runtime.hooks import Attachment  # noqa: E402
from axis_steer.runtime.models import describe, find_layers  # noqa: E402
from axis_steer.runtime.reference import reference_style_cap_hook  # noqa: E402

from zoo import (  # noqa: E402
    ARCHS,
    HIDDEN,
    LAYERS,
    VOCAB,
    Capture,
    batch,
    left_padded,
    random_axis,
    thresholds_from,
    tiny_model,
)

torch.set_num_threads(1)

#: projections of the same tokens computed in two ways (a batch and each row
#: alone, with and without a cache) agree to within this on each device
ATOL = {"cpu": 2e-5, "cuda": 1e-4}


def _model_on(device, arch="llama"):
    return tiny_model(arch).to(device)


def unit(v):
    return v / v.norm()


# ---- discovery -------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_discovery_and_capping_on_every_architecture(arch):
    model = tiny_model(arch)
    found = find_layers(model)
    assert len(found) == LAYERS and found.hidden_size == HIDDEN
    axis = random_axis()
    layers = [1, 2]
    taus = thresholds_from(model, axis, layers)
    ids, am = batch(1)
    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=am).logits
    att = Attachment(model, axis)
    att.cap(layers, taus)
    mon = att.monitor(layers)
    cap = Capture(model, layers)  # registered after: sees the capped outputs
    with att, torch.no_grad():
        out = model(input_ids=ids, attention_mask=am).logits
    cap.close()
    real = am.bool()
    for i in layers:
        p = cap.outs[i][0] @ unit(axis[i])
        assert (p[real] >= taus[i] - 1e-4).all(), (arch, i)
    r = mon.readings()
    assert np.isnan(r.p_in[0, :, :2]).all()  # padding never recorded
    assert r.fired.any() and not torch.equal(base, out)
    assert all(not blk._forward_hooks for blk in found.blocks)  # hooks gone
    assert not found.backbone._forward_pre_hooks


def test_discovery_sees_through_wrappers_and_takes_an_override():
    model = tiny_model("llama")
    compiled = torch.compile(model, backend="eager")
    assert find_layers(compiled).blocks is model.model.layers
    peft = pytest.importorskip("peft")
    lora = peft.get_peft_model(tiny_model("llama"), peft.LoraConfig(r=2, target_modules=["q_proj"]))
    assert len(find_layers(lora)) == LAYERS
    assert find_layers(model, layers="model.layers").blocks is model.model.layers
    assert find_layers(model, layers=model.model.layers).path == "model.layers"
    with pytest.raises(ValueError, match="has no attribute"):
        find_layers(model, layers="model.blocks")


def test_discovery_finds_the_language_model_inside_gemma3_multimodal():
    T = transformers
    text = T.Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, head_dim=8,
    )
    vision = T.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=28, patch_size=14)
    cfg = T.Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4)
    model = T.Gemma3ForConditionalGeneration(cfg).eval()
    found = find_layers(model)
    assert len(found) == 3 and type(found.blocks[0]).__name__ == "Gemma3DecoderLayer"
    assert found.hidden_size == HIDDEN


def test_unknown_structure_lists_what_was_looked_for():
    class Weird(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 4)

    with pytest.raises(AxisSteerError, match="ModuleList"):
        find_layers(Weird())


# ---- semantics --------------------------------------------------------------------------------


def test_tokens_above_the_floor_are_untouched():
    model = tiny_model("llama")
    axis = random_axis()
    layer = 1
    taus = thresholds_from(model, axis, [layer], q=0.5)
    ids, am = batch(2, pad=(0, 0))
    cap = Capture(model, [layer])
    with torch.no_grad():
        model(input_ids=ids, attention_mask=am)
    base = cap.cat(layer)
    cap.outs[layer].clear()
    att = Attachment(model, axis)
    att.cap(layer, taus[layer])
    with att, torch.no_grad():
        model(input_ids=ids, attention_mask=am)
    cap.close()
    capped = cap.cat(layer)
    above = (base @ unit(axis[layer])) >= taus[layer]
    assert above.any() and (~above).any()
    assert torch.equal(capped[above], base[above])  # bit for bit
    assert not torch.equal(capped[~above], base[~above])


def test_generation_with_and_without_cache_is_identical(device):
    model = _model_on(device)
    axis = random_axis()
    layers = [1, 2, 3]
    taus = thresholds_from(model, axis, layers)
    ids, am = batch(3, device=device)
    att = Attachment(model, axis)
    att.cap(layers, taus)
    mon = att.monitor([2])
    assert att._programs[1].dirs.device.type == device.type
    with att:
        seen = Capture(model, layers)  # registered after: sees the capped outputs
        with torch.no_grad():
            model(input_ids=ids, attention_mask=am)
        seen.close()
        for i in layers:
            p = seen.cat(i) @ unit(axis[i]).to(device)
            assert bool((p[am.bool()] >= taus[i] - 1e-4).all()), i
        a = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=8, do_sample=False)
        ra = mon.readings()
        b = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=8, do_sample=False, use_cache=False)
        rb = mon.readings()
    assert torch.equal(a, b)
    np.testing.assert_allclose(ra.p_in, rb.p_in, atol=ATOL[device.type], equal_nan=True)
    assert ra.fired.any() and np.isnan(ra.p_in[0, :, :2]).all()


def test_left_padded_batch_equals_each_sequence_alone(device):
    model = _model_on(device, "qwen2")
    axis = random_axis()
    taus = thresholds_from(model, axis, [1, 2])
    g = torch.Generator().manual_seed(9)
    seqs = [torch.randint(3, VOCAB, (n,), generator=g) for n in (5, 9, 7)]
    ids, am = left_padded(seqs, device)
    width = ids.shape[1]
    att = Attachment(model, axis)
    att.cap([1, 2], taus)
    mon = att.monitor([1, 2])
    with att:
        out = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=6, do_sample=False)
        rb = mon.readings()
        for r, s in enumerate(seqs):
            alone = model.generate(input_ids=s[None].to(device),
                                   attention_mask=torch.ones(1, len(s), dtype=torch.long, device=device),
                                   max_new_tokens=6, do_sample=False)
            ra = mon.readings()
            assert torch.equal(alone[0, len(s):], out[r, width:]), r
            np.testing.assert_allclose(ra.row(0, 1), rb.row(r, 1), atol=ATOL[device.type])
            np.testing.assert_allclose(ra.row(0, 2, "p_out"), rb.row(r, 2, "p_out"), atol=ATOL[device.type])
            assert np.array_equal(ra.row(0, 2, "fired"), rb.row(r, 2, "fired"))
    assert rb.valid.sum(1).tolist() == [len(s) + 5 for s in seqs]


def test_monitoring_equals_a_teacher_forced_pass():
    model = tiny_model("gemma2")
    axis = random_axis()
    taus = thresholds_from(model, axis, [2])
    ids, am = batch(4, pad=(3, 0))
    att = Attachment(model, axis)
    att.cap(2, taus[2])
    mon = att.monitor([1, 2])
    with att:
        out = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=7, do_sample=True, top_k=5,
                             generator=None)
        gen = mon.readings()
        full = out[:, :-1]
        full_am = torch.cat([am, torch.ones(2, full.shape[1] - am.shape[1], dtype=torch.long)], 1)
        with torch.no_grad():
            model(input_ids=full, attention_mask=full_am)
        tf = mon.readings()
    np.testing.assert_allclose(gen.p_in, tf.p_in, atol=3e-5, equal_nan=True)
    np.testing.assert_allclose(gen.p_out, tf.p_out, atol=3e-5, equal_nan=True)
    assert np.array_equal(gen.fired, tf.fired)
    assert np.array_equal(gen.tokens[gen.valid], full[torch.as_tensor(gen.valid)].numpy())


def test_hooks_are_removed_after_an_exception_inside_generate():
    model = tiny_model("llama")
    att = Attachment(model, random_axis())
    att.cap([0, 3], 0.0)
    att.monitor([1])

    class Boom(transformers.LogitsProcessor):
        def __call__(self, input_ids, scores):
            raise RuntimeError("boom")

    ids, am = batch(0)
    with pytest.raises(RuntimeError, match="boom"):
        with att:
            model.generate(input_ids=ids, attention_mask=am, max_new_tokens=3,
                           logits_processor=transformers.LogitsProcessorList([Boom()]))
    found = find_layers(model)
    assert all(not b._forward_hooks for b in found.blocks) and not found.backbone._forward_pre_hooks
    assert not att.attached


def test_entering_twice_is_an_error_and_detach_is_idempotent():
    model = tiny_model("llama")
    att = Attachment(model, random_axis())
    att.cap(1, 0.0)
    with att:
        with pytest.raises(AxisSteerError, match="already attached"):
            att.attach()
    att.detach()
    att.detach()


def test_reference_config_parity_with_the_reference_formula():
    """A reference capping experiment (ceilings on v = -axis with negative caps,
    two vectors on one layer) gives exactly the reference code's result."""
    model = tiny_model("llama")
    axis = random_axis()
    g = torch.Generator().manual_seed(4)
    extra = torch.randn(HIDDEN, generator=g)
    taus = thresholds_from(model, axis, [1, 2])
    cfg = formats.ReferenceCappingConfig(
        vectors={
            "neg1": (-axis[1], 1),
            "neg2": (-axis[2], 2),
            "other2": (extra, 2),
            "steer": (axis[3], 3),
        },
        experiments=[
            {"id": "warmup", "interventions": []},
            {
                "id": "layers_1:3-p0.25",
                "interventions": [
                    {"vector": "neg1", "cap": -taus[1]},
                    {"vector": "neg2", "cap": -taus[2]},
                    {"vector": "other2", "cap": 0.1},
                    {"vector": "steer"},  # no cap: not capping, skipped
                ],
            },
        ],
    )
    exp = cfg.experiment("layers_1:3-p0.25")
    assert exp.metadata["skipped_without_cap"] == ["steer"]
    assert cfg.experiment(1).entries[0].name == "neg1"
    ids, am = batch(6, pad=(0, 0))
    blocks = find_layers(model).blocks
    handles = [
        blocks[1].register_forward_hook(reference_style_cap_hook([(-axis[1], -taus[1])])),
        blocks[2].register_forward_hook(reference_style_cap_hook([(-axis[2], -taus[2]), (extra, 0.1)])),
    ]
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=am, output_hidden_states=True)
    for h in handles:
        h.remove()
    att = Attachment(model, axis)
    att.cap_config(exp)
    with att, torch.no_grad():
        got = model(input_ids=ids, attention_mask=am, output_hidden_states=True)
    for i in (2, 3):  # layer outputs after the capped blocks
        torch.testing.assert_close(got.hidden_states[i], ref.hidden_states[i], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.logits, ref.logits, atol=1e-4, rtol=1e-4)
    # and on the +axis, ceiling at -tau on -axis is a floor at tau
    assert (got.hidden_states[2] @ unit(axis[1]) >= taus[1] - 1e-4).all()


def test_output_hidden_states_reflect_capping():
    model = tiny_model("llama")
    axis = random_axis()
    taus = thresholds_from(model, axis, [2])
    ids, am = batch(7, pad=(0, 0))
    att = Attachment(model, axis)
    att.cap(2, taus[2])
    with att, torch.no_grad():
        hs = model(input_ids=ids, attention_mask=am, output_hidden_states=True).hidden_states
    assert (hs[3] @ unit(axis[2]) >= taus[2] - 1e-4).all()


# ---- retuning, per-row control, composition ----------------------------------------------------


def test_retuning_touches_tensors_only():
    model = tiny_model("llama")
    axis = random_axis()
    att = Attachment(model, axis)
    cap = att.cap([1, 2], 0.0)
    att.monitor([1])
    blocks = find_layers(model).blocks
    with att:
        hooks_before = {i: list(blocks[i]._forward_hooks.values()) for i in (1, 2)}
        params = {i: att._programs[i].params for i in (1, 2)}
        cap.set_thresholds({1: 0.5, 2: -0.5})
        cap.disable()
        assert torch.isinf(att._programs[1].params).all()
        cap.enable()
        assert att._programs[1].params[0, 0] == 0.5  # the cap is step 0 (on the axis: the monitor reuses it)
        assert len(att._programs[1].ops) == 1
        assert {i: list(blocks[i]._forward_hooks.values()) for i in (1, 2)} == hooks_before
        assert all(att._programs[i].params is params[i] for i in (1, 2))


def test_per_row_control_mixes_capped_and_uncapped_sequences():
    model = tiny_model("llama")
    axis = random_axis()
    taus = thresholds_from(model, axis, [1, 2], q=0.8)
    ids, am = batch(8, b=3, pad=(0, 2, 1))
    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=am).logits
    att = Attachment(model, axis)
    cap = att.cap([1, 2], taus)
    cap.enable([True, False, True])
    with att, torch.no_grad():
        mixed = model(input_ids=ids, attention_mask=am).logits
        cap.enable(True)
        cap.set_thresholds(torch.tensor([[taus[1], taus[2]], [-1e9, -1e9], [taus[1], taus[2]]]))
        per_row = model(input_ids=ids, attention_mask=am).logits
        with pytest.raises(AxisSteerError, match="batch of 3"):
            model(input_ids=ids[:2], attention_mask=am[:2])
    assert torch.equal(mixed[1], base[1])
    assert not torch.allclose(mixed[0], base[0])
    torch.testing.assert_close(per_row, mixed)


def test_two_attachments_compose_in_attach_order():
    model = tiny_model("llama")
    axis = random_axis()
    layer = 2
    ids, am = batch(9, pad=(0, 0))
    # A pins the projection to 1.0, B pins it to -1.0: the last one wins
    a = Attachment(model, axis)
    a.ablate(layer, target=1.0)
    b = Attachment(model, axis)
    b.ablate(layer, target=-1.0)
    cap = Capture(model, [layer])
    with a, b, torch.no_grad():
        model(input_ids=ids, attention_mask=am)
    cap.close()
    p = cap.cat(layer) @ unit(axis[layer])
    torch.testing.assert_close(p, torch.full_like(p, -1.0), atol=1e-5, rtol=0)
    blocks = find_layers(model).blocks
    assert not blocks[layer]._forward_hooks


def test_steering_units_and_direction():
    model = tiny_model("llama")
    axis = random_axis() * 3
    layer = 1
    ids, am = batch(10, pad=(0, 0))
    norms = residual_norms(model, {"input_ids": ids, "attention_mask": am})
    assert set(norms) == set(range(LAYERS)) and all(v > 0 for v in norms.values())
    cap = Capture(model, [layer])
    with torch.no_grad():
        model(input_ids=ids, attention_mask=am)
    base = cap.cat(layer)
    for units, coef, expect in (
        ("axis", 2.0, 2.0 * axis[layer].norm()),
        ("residual", 0.5, 0.5 * norms[layer]),
        ("axis", -1.0, -1.0 * axis[layer].norm()),
    ):
        cap.outs[layer].clear()
        att = Attachment(model, axis)
        att.steer(layer, coef, units=units, residual_norms=norms)
        with att, torch.no_grad():
            model(input_ids=ids, attention_mask=am)
        shift = (cap.cat(layer) - base) @ unit(axis[layer])
        torch.testing.assert_close(shift, torch.full_like(shift, float(expect)), atol=1e-4, rtol=1e-4)
    cap.close()


def test_ablation_zeroes_the_projection():
    model = tiny_model("olmo2")
    axis = random_axis()
    att = Attachment(model, axis)
    att.ablate([0, 3])
    mon = att.monitor([0, 3])
    ids, am = batch(11)
    with att, torch.no_grad():
        model(input_ids=ids, attention_mask=am)
    r = mon.readings()
    vals = r.p_out[np.broadcast_to(r.valid[:, None, :], r.p_out.shape)]
    assert np.abs(vals).max() < 1e-5
    assert np.abs(r.p_in[np.broadcast_to(r.valid[:, None, :], r.p_in.shape)]).max() > 1e-3


# ---- torch.compile -----------------------------------------------------------------------------


def test_compiled_model_does_not_recompile_when_retuned_and_honours_detach():
    model = tiny_model("llama")
    axis = random_axis()
    taus = thresholds_from(model, axis, [1, 2])
    ids, am = batch(12, pad=(0, 0))
    torch._dynamo.reset()
    compiles = []

    def backend(gm, example_inputs):
        compiles.append(gm)
        return gm.forward

    att = Attachment(model, axis)
    cap = att.cap([1, 2], taus)
    mon = att.monitor([2]).prepare(batch=2, capacity=64)
    att.attach()
    fn = torch.compile(model, backend=backend)
    with torch.no_grad():
        eager_cap = None
        out1 = fn(input_ids=ids, attention_mask=am).logits
        n = len(compiles)
        cap.set_thresholds({1: taus[1] + 0.3, 2: taus[2] + 0.3})
        out2 = fn(input_ids=ids, attention_mask=am).logits
        cap.disable()
        out3 = fn(input_ids=ids, attention_mask=am).logits
        cap.enable()
        out4 = fn(input_ids=ids, attention_mask=am).logits
        assert len(compiles) == n, "retuning recompiled"
        r = mon.readings()
        assert r.fired.any()
        att.detach()
        eager_cap = model(input_ids=ids, attention_mask=am).logits  # no hooks now
        out5 = fn(input_ids=ids, attention_mask=am).logits
    assert not torch.equal(out1, out2) and not torch.equal(out2, out3)
    torch.testing.assert_close(out2, out4)  # re-enabled with the retuned thresholds
    torch.testing.assert_close(out3, eager_cap)  # disabled == no capping
    torch.testing.assert_close(out5, eager_cap)  # detached: compiled code follows
    torch._dynamo.reset()


def test_attaching_to_a_compiled_model_is_refused():
    model = tiny_model("llama")
    compiled = torch.compile(model, backend="eager")
    with pytest.raises(AxisSteerError, match="compiled"):
        Attachment(compiled, random_axis()).attach()
    Attachment(compiled, random_axis()).attach(allow_compiled=True).detach()


# ---- gradients -----------------------------------------------------------------------------------


def test_grad_mode_uses_the_differentiable_path_and_checkpointing_does_not_double_count():
    model = tiny_model("llama")
    model.train()
    axis = random_axis()
    ids, am = batch(13, pad=(0, 0))
    att = Attachment(model, axis)
    att.cap([1, 2], 0.2)
    mon = att.monitor([1])
    with att:
        out = model(input_ids=ids, attention_mask=am, labels=ids)
        out.loss.backward()
        plain = mon.readings()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad()
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        out2 = model(input_ids=ids, attention_mask=am, labels=ids)
        out2.loss.backward()
        ckpt = mon.readings()
        grads2 = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert int(mon._count) == 2  # the recomputation recorded nothing
    np.testing.assert_allclose(plain.p_in, ckpt.p_in, atol=1e-5)
    torch.testing.assert_close(out.loss, out2.loss)
    for g1, g2 in zip(grads, grads2):
        torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, exc, words",
    [
        (lambda m, a: Attachment(m, a[:, :5]), ValueError, "does not fit"),
        (lambda m, a: Attachment(m, a[:2]), ValueError, "does not fit"),
        (lambda m, a: Attachment(m, a * float("nan")), ValueError, "NaN"),
        (lambda m, a: Attachment(m, a).cap(9, 0.0), ValueError, "out of range"),
        (lambda m, a: Attachment(m, a).cap([], 0.0), ValueError, "empty"),
        (lambda m, a: Attachment(m, a).cap([1, 1], 0.0), ValueError, "repeat"),
        (lambda m, a: Attachment(m, a).cap(1, float("nan")), ValueError, "NaN"),
        (lambda m, a: Attachment(m, a).cap(1, math.inf), ValueError, "not a bound"),
        (lambda m, a: Attachment(m, a).cap(1, 0.0, side="top"), ValueError, "side"),
        (lambda m, a: Attachment(m, a).cap(1, (2.0, 1.0), side="band"), ValueError, "lo = 2.0 > hi"),
        (lambda m, a: Attachment(m, a).cap([1, 2], [0.1, 0.2, 0.3]), ValueError, "3 values for 2 layers"),
        (lambda m, a: Attachment(m, a).cap([1, 2], {1: 0.0}), ValueError, "no value for layers"),
        (lambda m, a: Attachment(m, a.clone().index_fill_(0, torch.tensor([1]), 0.0)).cap(1, 0.0), ValueError, "norm 0"),
        (lambda m, a: Attachment(m, a).cap(1, 0.0, direction=torch.zeros(HIDDEN)), ValueError, "norm"),
        (lambda m, a: Attachment(m, a).cap(1, 0.0, direction=torch.ones(7)), ValueError, "shape"),
        (lambda m, a: Attachment(m, a).steer(1, 1.0, units="percent"), ValueError, "units"),
        (lambda m, a: Attachment(m, a).steer(1, 1.0, units="residual"), ValueError, "residual_norms"),
        (lambda m, a: Attachment(m, a).steer(1, float("inf")), ValueError, "finite"),
        (lambda m, a: Attachment(m, a).ablate(1, target=float("nan")), ValueError, "finite"),
        (lambda m, a: Attachment(m, a).monitor([0], capacity=0), ValueError, "capacity"),
        (lambda m, a: Attachment(m).monitor([0]), ValueError, "no axis"),
        (lambda m, a: Attachment(m, a).cap_config(formats.CapConfig([])), ValueError, "no capping entries"),
        (lambda m, a: Attachment(m, a).cap_config(formats.CapConfig([formats.CapEntry(7, a[0])])), ValueError, "out of range"),
        (lambda m, a: Attachment(m, a).monitor([1]).readings(), AxisSteerError, "no forward pass"),
    ],
)
def test_bad_input_is_a_clear_error(build, exc, words):
    model = tiny_model("llama")
    with pytest.raises(exc, match=words):
        build(model, random_axis())
    found = find_layers(model)
    assert all(not b._forward_hooks for b in found.blocks)


def test_per_row_values_must_match_the_batch():
    model = tiny_model("llama")
    att = Attachment(model, random_axis())
    cap = att.cap([1], torch.tensor([[0.1], [0.2]]))  # (batch, layers): per row
    with pytest.raises(ValueError, match="batch 2"):
        cap.set_thresholds({1: torch.tensor([0.1, 0.2, 0.3])})
    with pytest.raises(AxisSteerError, match="per-row values"):
        att.clear_rows()
    cap.set_thresholds(0.1)
    att.clear_rows()
    with att, torch.no_grad():
        model(input_ids=torch.randint(3, VOCAB, (5, 4)))


# ---- compiled generation on each device ---------------------------------------------------------


def test_compiled_static_generate_matches_eager_without_breaks_or_recompiles(device):
    """generate(cache_implementation="static") compiles the decode step (on
    CUDA: inductor with CUDA graphs). Hooks attached before the first call;
    retuning thresholds and switching capping off and on between calls must
    not recompile, and every output equals eager capping (greedy, float32),
    monitoring readings included."""
    model = _model_on(device)
    axis = random_axis()
    layers = [1, 2]
    taus = thresholds_from(model, axis, layers)
    taus2 = {i: t + 0.25 for i, t in taus.items()}
    ids, am = batch(4, b=2, s=6, pad=(0, 0), device=device)
    n_new = 10
    if device.type == "cuda":
        cfg = CompileConfig()  # inductor, mode="reduce-overhead"
    else:  # the CPU: dynamo only, forced on
        cfg = CompileConfig(backend="eager", mode=None)
        cfg._compile_all_devices = True
    att = Attachment(model, axis)
    cap = att.cap(layers, taus)
    mon = att.monitor([2]).prepare(batch=2, capacity=ids.shape[1] + n_new, device=device)
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


# ---- which tokens: masks of every form, caches, threads ---------------------------------------


def _capped_run(model, att, **kw):
    """Logits, readings, and the capped blocks' outputs of one forward."""
    cap = Capture(model, [1, 2])
    with att, torch.no_grad():
        logits = model(**kw).logits
    cap.close()
    return logits, att._monitors[0].readings() if att._monitors else None, {i: cap.cat(i) for i in (1, 2)}


def test_a_4d_additive_mask_reads_as_its_2d_mask():
    """A pipeline's own 4-D mask (additive float, or boolean) marks the same pads as the 2-D mask."""
    model = tiny_model("llama")
    axis = random_axis()
    taus = thresholds_from(model, axis, [1, 2])
    ids, am = batch(14, b=3, pad=(3, 0, 1))
    n = ids.shape[1]
    allowed = torch.tril(torch.ones(n, n, dtype=torch.bool))[None, None] & am.bool()[:, None, None, :]
    four_d = {
        "additive": torch.where(allowed, 0.0, torch.finfo(torch.float32).min),
        "bool": allowed,
    }
    att = Attachment(model, axis)
    att.cap([1, 2], taus)
    att.monitor([1, 2])
    want_logits, want, want_h = _capped_run(model, att, input_ids=ids, attention_mask=am)
    for name, m in four_d.items():
        logits, got, h = _capped_run(model, att, input_ids=ids, attention_mask=m)
        assert np.array_equal(got.valid, am.bool().numpy()), name
        np.testing.assert_allclose(got.p_in, want.p_in, atol=1e-5, equal_nan=True, err_msg=name)
        real = am.bool()
        for i in (1, 2):
            torch.testing.assert_close(h[i][real], want_h[i][real])
            assert torch.equal(h[i][~real], want_h[i][~real]) or name  # pads as the model left them
        torch.testing.assert_close(logits[real], want_logits[real], atol=1e-5, rtol=1e-5)


def test_static_cache_generation_reads_padding_from_the_4d_mask():
    """generate(cache_implementation="static") hands every step a 4-D mask over the
    whole cache; the pads stay uncapped and unrecorded, as with a dynamic cache."""
    model = tiny_model("llama")
    axis = random_axis()
    taus = thresholds_from(model, axis, [1, 2])
    ids, am = batch(15, b=2, pad=(3, 0))
    att = Attachment(model, axis)
    att.cap([1, 2], taus)
    mon = att.monitor([1]).prepare(batch=2, capacity=16)
    kw = dict(input_ids=ids, attention_mask=am, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    compile_cfg = CompileConfig(backend="eager", mode=None)
    compile_cfg._compile_all_devices = True  # compile the decode step on the CPU too (dynamo only)
    torch._dynamo.reset()
    counters.clear()
    with att:
        dyn = model.generate(**kw)
        r_dyn = mon.readings()
        for compiled in (False, True):
            extra = {"compile_config": compile_cfg} if compiled else {"disable_compile": True}
            static = model.generate(**kw, cache_implementation="static", **extra)
            r_static = mon.readings()
            assert torch.equal(dyn, static), compiled
            assert np.array_equal(r_dyn.valid, r_static.valid) and not r_static.valid[0, :3].any()
            np.testing.assert_allclose(r_dyn.p_in, r_static.p_in, atol=2e-5, equal_nan=True)
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]
    torch._dynamo.reset()


def test_threads_running_forwards_with_different_padding_equal_serial_runs():
    model = tiny_model("qwen2")
    axis = random_axis()
    taus = thresholds_from(model, axis, [1, 2])
    att = Attachment(model, axis)
    att.cap([1, 2], taus)
    inputs = [batch(20 + k, b=2, s=6 + k, pad=(k, 0)) for k in range(4)]
    with att, torch.no_grad():
        serial = [model(input_ids=i, attention_mask=m).logits for i, m in inputs]
        results: dict[int, list] = {k: [] for k in range(4)}
        start = threading.Barrier(4)

        def work(k):
            start.wait()
            for _ in range(10):
                results[k].append(model(input_ids=inputs[k][0], attention_mask=inputs[k][1]).logits)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for k, (_, m) in enumerate(inputs):
        assert len(results[k]) == 10
        for out in results[k]:
            assert torch.equal(out[m.bool()], serial[k][m.bool()]), k


def test_a_monitor_refuses_a_second_thread_while_it_records():
    model = tiny_model("llama")
    att = Attachment(model, random_axis())
    mon = att.monitor([1])
    blocks = find_layers(model).blocks
    inside, release = threading.Event(), threading.Event()
    ids, am = batch(21)

    def hold(mod, args, out):
        if threading.current_thread() is not threading.main_thread():
            inside.set()
            release.wait(10)

    handle = blocks[2].register_forward_hook(hold)
    errors = []

    def first():
        with torch.no_grad():
            model(input_ids=ids, attention_mask=am)

    with att:
        t = threading.Thread(target=first)
        t.start()
        assert inside.wait(10)
        with pytest.raises(AxisSteerError, match="another thread"), torch.no_grad():
            model(input_ids=ids, attention_mask=am)  # the main thread, while the other records
        release.set()
        t.join()
        handle.remove()
        r = mon.readings()  # the other thread's forward, complete
        assert np.array_equal(r.valid, am.bool().numpy())
        # a thread that continues a sequence another thread replaced is refused too
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=am, use_cache=True)

        def other():
            try:
                with torch.no_grad():
                    model(input_ids=ids, attention_mask=am)
            except AxisSteerError as exc:  # pragma: no cover - must not happen
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        step = torch.full((2, 1), 5)
        with pytest.raises(AxisSteerError, match="started by another thread"), torch.no_grad():
            model(input_ids=step, attention_mask=torch.cat([am, torch.ones(2, 1, dtype=am.dtype)], 1),
                  past_key_values=out.past_key_values)
    assert not errors


# ---- stacks, discovery report, refusals ---------------------------------------------------------


def _t5(encoder_layers=4, decoder_layers=2):
    cfg = transformers.T5Config(vocab_size=VOCAB, d_model=HIDDEN, d_kv=8, d_ff=64, num_layers=encoder_layers,
                                num_decoder_layers=decoder_layers, num_heads=4, decoder_start_token_id=0)
    torch.manual_seed(0)
    return transformers.T5ForConditionalGeneration(cfg).eval()


def test_encoder_decoder_models_cap_the_decoder_unless_told_the_encoder():
    model = _t5()
    dec = Attachment(model, random_axis(2, HIDDEN))
    assert dec._layers.blocks is model.decoder.block and dec._layers.stack == "decoder"
    enc = Attachment(model, random_axis(4, HIDDEN), stack="encoder")
    assert enc._layers.blocks is model.encoder.block and enc._layers.stack == "encoder"
    with pytest.raises(ValueError, match="does not fit"):
        Attachment(model, random_axis(4, HIDDEN))  # an encoder-length axis does not pick the encoder
    with pytest.raises(ValueError, match="'decoder' or 'encoder'"):
        Attachment(model, stack="middle")
    with pytest.raises(ValueError, match="not an encoder-decoder"):
        Attachment(tiny_model("llama"), stack="encoder")
    # the decoder reads the decoder's mask, not the encoder's
    ids, am = batch(22, b=2, s=7, pad=(2, 0))
    dec_ids, dam = batch(23, b=2, s=5, pad=(0, 1))
    mon = dec.monitor([0, 1])
    with dec, torch.no_grad():
        model(input_ids=ids, attention_mask=am, decoder_input_ids=dec_ids, decoder_attention_mask=dam)
    assert np.array_equal(mon.readings().valid, dam.bool().numpy())
    mon = enc.monitor([0])
    with enc, torch.no_grad():
        model(input_ids=ids, attention_mask=am, decoder_input_ids=dec_ids, decoder_attention_mask=dam)
    assert np.array_equal(mon.readings().valid, am.bool().numpy())


def test_describe_says_what_is_hooked_and_how_padding_is_read():
    model = tiny_model("llama")
    text = str(describe(model))
    assert "4 at model.layers (LlamaDecoderLayer)" in text and "the only stack" in text
    assert "2-D attention_mask LlamaModel.forward gets" in text and "4-D" in text
    d = describe(_t5(), stack="encoder").to_dict()
    assert d["stack"] == "encoder" and d["path"] == "encoder.block" and d["n_layers"] == 4
    assert "the 2-D attention_mask that T5ForConditionalGeneration.forward gets" in " ".join(d["padding"])
    assert "decoder_attention_mask" in " ".join(describe(_t5()).padding)
    att = Attachment(model, random_axis())
    att.cap(1, 0.0)
    ids, am = batch(24)
    with att, torch.no_grad():
        model(input_ids=ids, attention_mask=am)
        assert "last call (this thread): 2 x 7 tokens, padding from the backbone's 2-D attention_mask" in att.describe()


def test_layouts_without_one_residual_stream_are_refused_at_attach_time():
    cfg = transformers.XLNetConfig(vocab_size=VOCAB, d_model=HIDDEN, n_layer=2, n_head=4, d_inner=64)
    with pytest.raises(AxisSteerError, match="XLNetLMHeadModel .* is not supported: its blocks are sequence-first"):
        Attachment(transformers.XLNetLMHeadModel(cfg))
    cfg = transformers.XLMConfig(vocab_size=VOCAB, emb_dim=HIDDEN, n_layers=2, n_heads=4)
    with pytest.raises(AxisSteerError, match="parallel lists .*layers='transformer.layer_norm2'"):
        Attachment(transformers.XLMWithLMHeadModel(cfg))
