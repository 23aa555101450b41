"""Extraction: span means equal a full forward with output_hidden_states; the
pass stops after the last needed layer and computes no logits; sums, score
buckets, per-sample files in both formats, resuming after an interruption,
per-turn means and per-token projections."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from axis_steer.pipeline.extract import (  # noqa: E402
    extract_activations,
    load_sums,
    response_means,
    token_projections,
)
from axis_steer.pipeline.generate import generate_responses, iter_run_responses  # noqa: E402
from axis_steer.pipeline.judge import judge_responses  # noqa: E402
from axis_steer.runtime import formats  # noqa: E402

from chat_fixtures import QWEN3, block_outputs, direct_means, small_run_setup  # noqa: E402

torch.set_num_threads(1)
QUIET = dict(progress=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    rs, tok, model = small_run_setup()
    out = tmp_path_factory.mktemp("run")
    generate_responses(model, tok, rs, out, batch_size=6, max_new_tokens=10, **QUIET)
    return rs, tok, model, out


def copy_responses(src, dst):
    (dst / "responses").mkdir(parents=True)
    for p in (src / "responses").glob("*"):
        (dst / "responses" / p.name).write_text(p.read_text())
    return dst


def test_means_equal_hidden_states_of_a_full_forward(run, tmp_path):
    rs, tok, model, out = run
    d = copy_responses(out, tmp_path / "r")
    s = extract_activations(model, tok, d, batch_size=5, per_sample="pt", **QUIET)
    assert s.n_new == 24 and s.complete and s.layers == [0, 1, 2]
    for role in ("default", "dragon"):
        acts = formats.load_activations(d / "activations" / f"{role}.pt")
        rows = [row for r, row in iter_run_responses(d) if r == role]
        assert sorted(acts) == sorted(
            formats.response_key(r["prompt_index"], r["question_index"]) for r in rows
        )
        for row in rows:
            got = acts[formats.response_key(row["prompt_index"], row["question_index"])]
            want = direct_means(model, tok, row["conversation"], [0, 1, 2])
            assert got.shape == (3, 32)
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    sums = load_sums(d)
    assert sums.counts == {f"{r}/unscored": 6 for r in rs.names}
    total, n = sums.role_sum("dragon")
    mean_ps = torch.stack(
        list(formats.load_activations(d / "activations" / "dragon.pt").values())
    ).mean(0)
    torch.testing.assert_close(total / n, mean_ps, rtol=1e-5, atol=1e-6)
    assert "24 responses" in str(s) and "complete" in str(s)


def test_stops_after_the_last_needed_layer_without_logits(run, tmp_path):
    rs, tok, model, out = run
    d = copy_responses(out, tmp_path / "r")
    calls = {"late": 0}

    def boom(*a):
        raise AssertionError("the LM head / final norm ran")

    def count(*a):
        calls["late"] += 1

    hs = [model.lm_head.register_forward_hook(boom), model.model.norm.register_forward_hook(boom)]
    hs.append(model.model.layers[2].register_forward_hook(count))
    try:
        s = extract_activations(model, tok, d, layers=[0, 1], per_sample="safetensors", **QUIET)
    finally:
        for h in hs:
            h.remove()
    assert calls["late"] == 0 and s.layers == [0, 1]
    acts = formats.load_activations(d / "activations" / "ghost.safetensors")
    row = next(row for r, row in iter_run_responses(d) if r == "ghost")
    torch.testing.assert_close(
        acts["pos_p0_q0"].double(),
        direct_means(model, tok, row["conversation"], [0, 1]),
        rtol=1e-5,
        atol=1e-5,
    )


def test_resume_after_interruption_equals_uninterrupted(run, tmp_path, monkeypatch):
    rs, tok, model, out = run
    full = copy_responses(out, tmp_path / "full")
    extract_activations(model, tok, full, batch_size=4, per_sample="pt", **QUIET)
    part = copy_responses(out, tmp_path / "part")
    s1 = extract_activations(
        model, tok, part, batch_size=4, per_sample="pt", max_items=9, checkpoint_every=1, **QUIET
    )
    assert s1.n_new == 9 and not s1.complete
    # a crash in the middle of the next call keeps what was done before it
    import axis_steer.pipeline.extract as E

    real = E._forward_reduce
    n = {"calls": 0}

    def flaky(*a, **k):
        n["calls"] += 1
        if n["calls"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(E, "_forward_reduce", flaky)
    with pytest.raises(KeyboardInterrupt):
        extract_activations(
            model, tok, part, batch_size=2, per_sample="pt", checkpoint_every=100, **QUIET
        )
    monkeypatch.setattr(E, "_forward_reduce", real)
    s3 = extract_activations(model, tok, part, batch_size=3, per_sample="pt", **QUIET)
    assert s3.n_done_before == 13 and s3.n_new == 11 and s3.complete
    a, b = load_sums(full), load_sums(part)
    assert a.keys == b.keys and a.counts == b.counts and a.tokens == b.tokens
    for g in a.sums:
        torch.testing.assert_close(a.sums[g], b.sums[g], rtol=1e-5, atol=1e-6)
    for role in rs.names:
        pa = formats.load_activations(full / "activations" / f"{role}.pt")
        pb = formats.load_activations(part / "activations" / f"{role}.pt")
        assert list(pa) == list(pb)
        for k in pa:
            torch.testing.assert_close(pa[k], pb[k], rtol=1e-5, atol=1e-6)
    assert not list((part / "activations" / ".parts").glob("*"))
    s4 = extract_activations(model, tok, part, **QUIET)
    assert s4.n_new == 0


def test_changed_layers_need_restart(run, tmp_path):
    rs, tok, model, out = run
    d = copy_responses(out, tmp_path / "r")
    extract_activations(model, tok, d, layers=[1], max_items=2, **QUIET)
    with pytest.raises(ValueError, match="restart=True"):
        extract_activations(model, tok, d, layers=[1, 2], **QUIET)
    s = extract_activations(model, tok, d, layers=[1, 2], restart=True, **QUIET)
    assert s.n_new == 24 and s.n_done_before == 0


def test_sums_are_grouped_by_judge_score(run, tmp_path):
    rs, tok, model, out = run
    d = copy_responses(out, tmp_path / "r")

    def judge(q, a, role):
        return 3 if role == "dragon" or len(a) % 2 else 1

    judge_responses(d, judge, **QUIET)
    extract_activations(model, tok, d, **QUIET)
    sums = load_sums(d)
    assert sums.buckets("dragon") == {"score3": 6}
    assert sum(sums.buckets("ghost").values()) == 6 and set(sums.buckets("ghost")) <= {
        "score1",
        "score3",
    }
    assert sums.buckets("default") == {"unscored": 6}


def test_per_turn_means_of_multi_turn_conversations(run):
    rs, tok, model, out = run
    conv = [
        {"role": "system", "content": "You are a dragon."},
        {"role": "user", "content": "What matters most to you?"},
        {"role": "assistant", "content": "gold and fire"},
        {"role": "user", "content": "What do you do on a typical day?"},
        {"role": "assistant", "content": "the sea at night"},
    ]
    single = [
        {"role": "user", "content": "What is good?"},
        {"role": "assistant", "content": "a good day"},
    ]
    each = response_means(model, tok, [conv, single], [0, 2], turns="each", batch_size=2)
    assert each[0].shape == (2, 2, 32) and each[1].shape == (1, 2, 32)
    for k in (0, 1):
        torch.testing.assert_close(
            each[0][k].double(),
            direct_means(model, tok, conv, [0, 2], turn=k),
            rtol=1e-5,
            atol=1e-5,
        )
    last = response_means(model, tok, [conv], [0, 2], turns="last")[0]
    torch.testing.assert_close(last, each[0][1])
    pooled = response_means(model, tok, [conv], [0, 2], turns="all")[0]
    n0, n1 = 3, 4  # tokens of the two turns
    torch.testing.assert_close(
        pooled, (n0 * each[0][0] + n1 * each[0][1]) / (n0 + n1), rtol=1e-5, atol=1e-6
    )


def test_token_projections_equal_a_full_forward(run):
    rs, tok, model, out = run
    from axis_steer.pipeline.spans import render_with_spans

    g = torch.Generator().manual_seed(0)
    u = torch.randn(3, 32, generator=g)
    u = u / u.norm(dim=-1, keepdim=True)
    conv = next(row for r, row in iter_run_responses(out) if r == "tutor")["conversation"]
    got = token_projections(model, tok, [conv], u, [0, 1, 2])[0]
    r = render_with_spans(tok, conv)
    a, b = r.spans[-1]
    hs = block_outputs(model, r.input_ids)
    want = torch.stack([hs[i][a:b] @ u[i] for i in range(3)], dim=1)
    assert len(got) == 1 and got[0].shape == (b - a, 3)
    torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-5)


def test_reasoning_template_means_skip_the_empty_block(tmp_path):
    rs, tok, model = small_run_setup(QWEN3, roles=("ghost",), n_questions=1, n_prompts=1)
    conv = [
        {"role": "user", "content": "What is good?"},
        {"role": "assistant", "content": "a good day"},
    ]
    got = response_means(model, tok, [conv], [1], turns="last")[0]
    torch.testing.assert_close(
        got.double(), direct_means(model, tok, conv, [1]), rtol=1e-5, atol=1e-5
    )
    from axis_steer.pipeline.spans import render_with_spans

    r = render_with_spans(tok, conv)
    a, b = r.spans[0]
    assert tok.convert_ids_to_tokens(r.input_ids[a:b]) == ["a", "good", "day"]


def test_bad_arguments_are_named(run, tmp_path):
    rs, tok, model, out = run
    d = copy_responses(out, tmp_path / "r")
    with pytest.raises(ValueError, match="out of range"):
        extract_activations(model, tok, d, layers=[5], **QUIET)
    with pytest.raises(ValueError, match="per_sample"):
        extract_activations(model, tok, d, per_sample="npz", **QUIET)
    with pytest.raises(ValueError, match="turns"):
        extract_activations(model, tok, d, turns="each", **QUIET)
    with pytest.raises(FileNotFoundError, match="run generate_responses first"):
        extract_activations(model, tok, tmp_path / "empty", **QUIET)


def test_layer_i_is_hidden_states_i_plus_1(run):
    rs, tok, model, out = run
    from axis_steer.pipeline.spans import render_with_spans

    conv = next(row for r, row in iter_run_responses(out) if r == "dragon")["conversation"]
    r = render_with_spans(tok, conv)
    a, b = r.spans[-1]
    with torch.no_grad():
        hs = model(input_ids=torch.tensor([r.input_ids]), output_hidden_states=True).hidden_states
    got = response_means(model, tok, [conv], [0, 1], turns="last")[0]
    for i in (0, 1):  # the last entry of hidden_states has the final norm applied
        torch.testing.assert_close(got[i], hs[i + 1][0, a:b].mean(0), rtol=1e-5, atol=1e-6)
