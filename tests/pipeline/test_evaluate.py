"""The capability-impact evaluation: the numbers it reports are the ones a
direct computation gives, a disabled intervention costs exactly nothing, and
bad inputs are clear errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from axis_steer.errors import AxisSteerError  # noqa: E402
from axis_steer.personas import load_persona_model  # noqa: E402
from axis_steer.pipeline.batching import pad_id  # noqa: E402
from axis_steer.pipeline.evaluate import compare_interventions, evaluate, load_multiple_choice  # noqa: E402
from axis_steer.pipeline.replies import (  # noqa: E402
    Sampling,
    converse,
    converse_batch,
    generate_replies,
    greedy_ids,
    paired_replies,
)
from axis_steer.pipeline.spans import prompt_ids, render_with_spans  # noqa: E402
from axis_steer.runtime.hooks import Attachment  # noqa: E402

CONVS = [
    [{"role": "user", "content": "What is photosynthesis?"},
     {"role": "assistant", "content": "Photosynthesis is the process plants use to turn sunlight into sugar."}],
    [{"role": "system", "content": "You are a pirate."},
     {"role": "user", "content": "How do I bake bread?"},
     {"role": "assistant", "content": "Arr, knead the dough well, matey!"}],
]
MC = [
    {"question": "What do plants make from sunlight?", "choices": ["sugar", "iron", "plastic"], "answer": 0},
    {"question": "What comes out of a volcano?", "choices": ["molten rock", "ice cream"], "answer": 0},
]


@pytest.fixture(scope="module")
def model_tok():
    model, tok = load_persona_model()
    tok.padding_side = "left"
    return model, tok


@pytest.fixture(scope="module")
def axis(model_tok):
    g = torch.Generator().manual_seed(0)
    model, _ = model_tok
    return torch.randn(model.config.num_hidden_layers, model.config.hidden_size, generator=g)


def test_a_disabled_intervention_costs_nothing(model_tok, axis):
    model, tok = model_tok
    att = Attachment(model, axis)
    att.cap([2, 3], 100.0).disable()
    rep = evaluate(model, tok, att, conversations=CONVS, prompts=[c[:-1] for c in CONVS], multiple_choice=MC,
                   max_new_tokens=12)
    assert rep.conversations.ppl_change == 0.0 and rep.conversations.kl_max <= 1e-9
    assert rep.generation.agreement == 1.0 and rep.generation.identical == 1.0
    assert rep.multiple_choice.answer_changed == 0.0
    assert all(f.rate == 0.0 for f in rep.firing)
    assert not att.attached and not att._monitors  # its temporary monitor is gone


def test_perplexity_and_kl_match_a_direct_computation(model_tok, axis):
    model, tok = model_tok
    att = Attachment(model, axis)
    att.cap([2, 3, 4], 3.0)  # a high floor: fires on most tokens
    rep = evaluate(model, tok, att, conversations=CONVS)
    nll, nll_i, kls, n = 0.0, 0.0, 0.0, 0
    for conv in CONVS:
        rc = render_with_spans(tok, conv)
        ids = torch.tensor([rc.input_ids])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            with att:
                lq = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        for a, b in rc.spans:
            for t in range(a, b):
                nll -= float(lp[t - 1, ids[0, t]])
                nll_i -= float(lq[t - 1, ids[0, t]])
                kls += float((lp[t - 1].exp() * (lp[t - 1] - lq[t - 1])).sum())
                n += 1
    assert rep.conversations.tokens == n
    assert math.isclose(rep.conversations.nll_plain, nll / n, rel_tol=1e-5)
    assert math.isclose(rep.conversations.nll_intervened, nll_i / n, rel_tol=1e-5)
    assert math.isclose(rep.conversations.kl_mean, kls / n, rel_tol=1e-3, abs_tol=1e-7)
    assert rep.conversations.kl_mean > 0
    assert max(f.rate for f in rep.firing) > 0.3 and all(f.mean_shift > 0 for f in rep.firing)


def test_report_saves_json_and_plots(model_tok, axis, tmp_path):
    model, tok = model_tok
    att = Attachment(model, axis)
    att.cap([3], 1.0)
    rep = evaluate(model, tok, att, texts=["Plants turn sunlight into sugar.\nVolcanoes erupt."],
                   multiple_choice=MC)
    files = rep.save(tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["texts"]["tokens"] > 0 and "ppl_change" in data["texts"]
    assert {p.name for p in files} >= {"report.json", "firing.png", "kl.png"}
    assert "perplexity (texts" in str(rep)


def test_bad_input(model_tok, axis, tmp_path):
    model, tok = model_tok
    att = Attachment(model, axis)
    att.cap([3], 1.0)
    with pytest.raises(ValueError, match="at least one"):
        evaluate(model, tok, att)
    with att:
        with pytest.raises(AxisSteerError, match="detached"):
            evaluate(model, tok, att, texts=["x"])
    bad = tmp_path / "mc.jsonl"
    bad.write_text(json.dumps(MC[0]) + "\n" + json.dumps({"question": "q", "choices": ["a", "b"], "answer": 5}) + "\n")
    with pytest.raises(ValueError, match=r"mc.jsonl:2: 'answer' = 5"):
        load_multiple_choice(bad)
    bad.write_text("{nope\n")
    with pytest.raises(ValueError, match=r"mc.jsonl:1: not valid JSON"):
        load_multiple_choice(bad)


# ---- plain and intervened replies in one batch -------------------------------------------------


PROMPTS = [
    [{"role": "user", "content": "What is photosynthesis?"}],
    [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "How do I bake bread?"}],
    [{"role": "user", "content": "Tell me about volcanoes."}],
]


@pytest.mark.parametrize("sampled", [False, True])
def test_paired_replies_are_the_separate_runs(model_tok, axis, sampled):
    """Each prompt plain and capped in the same batch (per-row control) gives
    what two separate runs give: the plain run without the caps, the capped
    run with them."""
    model, tok = model_tok
    att = Attachment(model, axis)
    cap = att.cap([2, 3, 4], 3.0)  # a high floor: the capped replies differ
    kw = {"max_new_tokens": 10, "batch_size": 8, "sampling": Sampling(0.7, 0.9, 5) if sampled else None}
    plain, capped = paired_replies(model, tok, PROMPTS, att, [cap], **kw)
    alone_plain = generate_replies(model, tok, PROMPTS, **kw)
    alone_capped = generate_replies(model, tok, PROMPTS, att, **kw)
    assert plain.ids == alone_plain.ids and capped.ids == alone_capped.ids
    assert plain.ids != capped.ids
    assert cap.enabled is True and att._rows is None and not att.attached  # left as it was


def test_paired_conversations_are_the_separate_runs(model_tok, axis):
    model, tok = model_tok
    att = Attachment(model, axis)
    cap = att.cap([2, 3, 4], 3.0)
    mon = att.monitor([3])
    chats = [("", ["Hello!", "Who are you?"]), ("You are a pirate.", ["Ahoy?"])]
    kw = {"max_new_tokens": 8, "monitor": mon, "layer": 3}
    both, proj = converse_batch(model, tok, chats * 2, att, switch=[cap], on=[False, False, True, True], **kw)
    cap.disable()
    plain, proj_plain = converse_batch(model, tok, chats, att, **kw)
    cap.enable()
    capped, proj_capped = converse_batch(model, tok, chats, att, **kw)
    assert both == plain + capped and both[:2] != both[2:]
    assert np.allclose(sum(proj, []), sum(proj_plain + proj_capped, []), rtol=1e-4, atol=1e-4)


def test_paired_replies_bad_input(model_tok, axis):
    model, tok = model_tok
    att = Attachment(model, axis)
    cap = att.cap([2], 1.0)
    with pytest.raises(ValueError, match="on: one flag per prompt"):
        generate_replies(model, tok, PROMPTS, att, on=[True] * 3)
    with pytest.raises(ValueError, match="on: one flag per prompt"):
        generate_replies(model, tok, PROMPTS, att, switch=[cap], on=[True])
    cap.enable([True, False])
    with pytest.raises(ValueError, match="per-row flags"):
        generate_replies(model, tok, PROMPTS, att, switch=[cap], on=[True] * 3)


# ---- no caps / always-on / latched, and the intervals

DRIFT = [{"system": "", "user_turns": ["Tell me about ships.", "And about the sea?"]},
         {"user_turns": ["How do I bake bread?"]}]


def _arms(model, axis, threshold, k=1):
    always = Attachment(model, axis)
    always.cap([2, 3], 1e3)
    latched = Attachment(model, axis)
    latched.cap([2, 3], 1e3, policy=latched.latch(2, threshold, k=k))
    return {"no caps": None, "always-on": always, "latched": latched}


def test_compare_a_latch_that_never_binds_leaves_the_model_alone(model_tok, axis):
    model, tok = model_tok
    prompts = [c[:-1] for c in CONVS]
    arms = _arms(model, axis, -1e6)
    cmp = compare_interventions(model, tok, arms, default_prompts=prompts, role_prompts=prompts,
                                drift=DRIFT, score=len, max_new_tokens=8)
    none, always, latched = (cmp.arm(n) for n in ("no caps", "always-on", "latched"))
    assert latched.per_item["fired"] == [0.0, 0.0] and latched.per_item["latched"] == [0.0, 0.0]
    assert latched.per_item["changed"] == [0.0, 0.0]
    assert latched.per_item["drift"] == none.per_item["drift"]
    assert latched.per_item["role_prompt"] == none.per_item["role_prompt"]
    assert always.per_item["fired"] == [1.0, 1.0] and always.per_item["touched"] == [1.0, 1.0]
    # the scores are the replies' own, turn by turn
    replies, _ = converse(model, tok, "", DRIFT[0]["user_turns"], arms["always-on"], max_new_tokens=8)
    assert always.per_item["drift"][0] == pytest.approx(np.mean([len(t) for t in replies]))
    d = cmp.differences[("latched", "always-on")]["fired"]
    assert d.estimate == -1.0 and d.low == d.high == -1.0 and d.n == 2
    assert "latched - always-on" in json.dumps(cmp.to_dict()) and "drift: score" in str(cmp)


def test_compare_a_latch_that_binds_at_once_caps_from_the_second_token(model_tok, axis):
    model, tok = model_tok
    prompts = [c[:-1] for c in CONVS]
    cmp = compare_interventions(model, tok, _arms(model, axis, 1e6), default_prompts=prompts, max_new_tokens=6)
    assert cmp.arm("no caps").per_item["changed"] == [0.0, 0.0]
    latched = cmp.arm("latched")
    assert latched.per_item["latched"] == [1.0, 1.0]
    # teacher forced: prompt + plain reply; every token but the first (which latched) is capped
    plain = greedy_ids(model, tok, prompts, 6, 8)
    pad = pad_id(tok)
    n = [len(prompt_ids(tok, p)) + sum(t != pad for t in r) for p, r in zip(prompts, plain)]
    assert latched.per_item["fired"] == pytest.approx([(m - 1) / m for m in n])


def test_compare_bad_input(model_tok, axis):
    model, tok = model_tok
    prompts = [c[:-1] for c in CONVS]
    with pytest.raises(TypeError, match="arms"):
        compare_interventions(model, tok, [None], default_prompts=prompts)
    with pytest.raises(ValueError, match="score"):
        compare_interventions(model, tok, {"no caps": None}, default_prompts=prompts, drift=DRIFT)
    with pytest.raises(ValueError, match="drift\\[0\\]"):
        compare_interventions(model, tok, {"no caps": None}, default_prompts=prompts, drift=[{"system": "x"}], score=len)
    with pytest.raises(ValueError, match="default_prompts"):
        compare_interventions(model, tok, {"no caps": None}, default_prompts=[])
    steer_only = Attachment(model, axis)
    steer_only.steer(2, 1.0)
    with pytest.raises(ValueError, match="no caps"):
        compare_interventions(model, tok, {"steer": steer_only}, default_prompts=prompts)
