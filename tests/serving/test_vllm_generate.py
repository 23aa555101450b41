"""Step 1 with vLLM (``generate_responses_vllm``) on the project's small Llama
in float32: greedy responses equal transformers' text for text, a resumed run
writes the same files as one call, seeded sampling is reproducible, and a run
begun with one backend is not resumed with the other.

Runs in the serving environment (scripts/setup_vllm.sh); skips elsewhere. One
engine serves every test."""

from __future__ import annotations

import json
import os

import pytest

vllm = pytest.importorskip("vllm")
torch = pytest.importorskip("torch")

from serving_fixtures import ENGINE_KW, MODEL  # noqa: E402

GEN = dict(max_new_tokens=8, progress=False)


@pytest.fixture(scope="module")
def engine():
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from axis_steer.pipeline.generate_vllm import load_vllm

    llm, tok, src = load_vllm(MODEL, **ENGINE_KW)
    yield llm, tok, src
    del llm


@pytest.fixture(scope="module")
def role_set():
    """The persona model's roles cut to the default role and one other, 2
    prompts and 2 questions each: 8 items."""
    from axis_steer.personas import role_data_dir
    from axis_steer.pipeline.roles import as_role_set

    rs = as_role_set(role_data_dir())
    other = next(r for r in rs.names if r != "default")
    return rs.select([other], n_questions=2, n_prompts=2)


@pytest.fixture(scope="module")
def hf_model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()


def files(out):
    return {p.name: p.read_text() for p in sorted((out / "responses").glob("*.jsonl"))}


def run_vllm(engine, role_set, out, **kw):
    from axis_steer.pipeline.generate_vllm import generate_responses_vllm

    llm, tok, src = engine
    return generate_responses_vllm(llm, tok, role_set, out, model_path=src.path, **GEN, **kw)


def test_greedy_equals_transformers(engine, role_set, hf_model, tmp_path):
    from axis_steer.pipeline.generate import generate_responses

    s = run_vllm(engine, role_set, tmp_path / "vllm", greedy=True, batch_size=3)
    assert s.n_new == s.n_items == 8 and s.n_tokens > 0
    _, tok, _ = engine
    generate_responses(hf_model, tok, role_set, tmp_path / "hf", greedy=True, batch_size=1, **GEN)
    got, want = files(tmp_path / "vllm"), files(tmp_path / "hf")
    assert sorted(got) == sorted(want) and len(got) == 2
    assert got == want
    settings = {b: json.loads((tmp_path / b / "responses" / "generation.json").read_text()) for b in ("vllm", "hf")}
    assert settings["vllm"].pop("backend") == "vllm" and settings["hf"].pop("backend") == "hf"
    assert settings["vllm"] == settings["hf"]


def test_both_backends_stop_at_the_same_end_of_turn(engine, role_set, hf_model, tmp_path):
    """The persona model rarely ends a reply within a few tokens: a token of
    its first reply is made the tokenizer's end of turn, so both backends stop
    there (the ids of ``generation_config.json`` and the tokenizer's)."""
    import copy

    from axis_steer.pipeline.generate import generate_responses
    from axis_steer.pipeline.generate_vllm import generate_responses_vllm

    llm, tok, src = engine
    first = run_vllm(engine, role_set, tmp_path / "full", greedy=True)
    row = json.loads((tmp_path / "full" / "responses" / "default.jsonl").read_text().splitlines()[0])
    stop = tok.encode(row["conversation"][-1]["content"], add_special_tokens=False)[3]
    cut = copy.deepcopy(tok)
    cut.eos_token = tok.convert_ids_to_tokens(stop)
    s = generate_responses_vllm(llm, cut, role_set, tmp_path / "vllm", model_path=src.path, greedy=True, **GEN)
    generate_responses(hf_model, cut, role_set, tmp_path / "hf", greedy=True, batch_size=1, **GEN)
    assert s.n_tokens < first.n_tokens
    assert files(tmp_path / "vllm") == files(tmp_path / "hf")


def test_resume_and_seeded_sampling(engine, role_set, tmp_path):
    one = tmp_path / "one"
    run_vllm(engine, role_set, one, seed=3)
    again = tmp_path / "again"
    run_vllm(engine, role_set, again, seed=3, batch_size=5)
    assert files(again) == files(one)  # reproducible, whatever the chunks
    resumed = tmp_path / "resumed"
    first = run_vllm(engine, role_set, resumed, seed=3, max_items=3)
    assert first.n_new == 3
    rest = run_vllm(engine, role_set, resumed, seed=3)
    assert rest.n_done_before == 3 and rest.n_new == 5
    assert files(resumed) == files(one)
    other = tmp_path / "other"
    run_vllm(engine, role_set, other, seed=4)
    assert files(other) != files(one)


def test_backend_mismatch_refused(engine, role_set, hf_model, tmp_path):
    from axis_steer.pipeline.generate import generate_responses

    run_vllm(engine, role_set, tmp_path, greedy=True, max_items=1)
    _, tok, _ = engine

    with pytest.raises(ValueError, match="--backend vllm"):
        generate_responses(hf_model, tok, role_set, tmp_path, greedy=True, **GEN)
    # and the other way round: an HF run (or an older one without the key) is not resumed with vLLM
    settings = tmp_path / "responses" / "generation.json"
    old = json.loads(settings.read_text())
    del old["backend"]
    settings.write_text(json.dumps(old))
    with pytest.raises(ValueError, match="--backend hf"):
        run_vllm(engine, role_set, tmp_path, greedy=True)
