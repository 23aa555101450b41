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
from axis_steer.pipeline.evaluate import evaluate, load_multiple_choice  # noqa: E402
from axis_steer.pipeline.replies import Sampling, converse_batch, generate_replies, paired_replies  # noqa: E402
from axis_steer.pipeline.spans import render_with_spans  # noqa: E402
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
