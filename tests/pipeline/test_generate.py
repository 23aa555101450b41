"""Generation: the reference responses format, per-item seeding (results do not
depend on batching), resuming, templates without a system role and reasoning
templates."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from axis_steer.pipeline.generate import (  # noqa: E402
    generate_responses,
    item_seed,
    iter_run_responses,
    plan_items,
)
from axis_steer.pipeline.spans import render_with_spans  # noqa: E402
from axis_steer.runtime import formats  # noqa: E402

from chat_fixtures import LLAMA3, NO_SYSTEM, QWEN3, small_run_setup  # noqa: E402

torch.set_num_threads(1)
GEN = dict(max_new_tokens=10, progress=False)


@pytest.fixture(scope="module")
def setup():
    return small_run_setup()


def read_all(out):
    return {p.name: p.read_text() for p in sorted((out / "responses").glob("*.jsonl"))}


def test_reference_format_and_plan(setup, tmp_path):
    rs, tok, model = setup
    s = generate_responses(model, tok, rs, tmp_path, batch_size=4, **GEN)
    assert s.n_new == s.n_items == 4 * 2 * 3 and s.n_done_before == 0
    assert "24 new responses" in str(s)
    files = read_all(tmp_path)
    assert sorted(files) == ["default.jsonl", "dragon.jsonl", "ghost.jsonl", "tutor.jsonl"]
    rows = list(formats.read_responses(tmp_path / "responses" / "dragon.jsonl"))
    assert [(r["prompt_index"], r["question_index"]) for r in rows] == [
        (p, q) for p in range(2) for q in range(3)
    ]
    r = rows[4]
    assert set(formats.RESPONSE_FIELDS) <= set(r)
    assert r["label"] == "dragon" and r["question"] == rs.questions[1]
    assert r["system_prompt"] == rs.role("dragon").instructions[1]
    assert r["conversation"][0] == {"role": "system", "content": r["system_prompt"]}
    assert r["conversation"][1] == {"role": "user", "content": r["question"]}
    assert r["conversation"][-1]["role"] == "assistant"
    # the default role's empty prompt means no system message; {model_name} is substituted
    drows = list(formats.read_responses(tmp_path / "responses" / "default.jsonl"))
    assert drows[0]["system_prompt"] == "" and drows[0]["conversation"][0]["role"] == "user"
    # round trip through the reference writer
    formats.write_responses(tmp_path / "copy.jsonl", rows)
    assert list(formats.read_responses(tmp_path / "copy.jsonl")) == rows
    settings = json.loads((tmp_path / "responses" / "generation.json").read_text())
    assert settings["temperature"] == 0.7 and settings["top_p"] == 0.9 and settings["seed"] == 0


def test_results_do_not_depend_on_batching(setup, tmp_path):
    rs, tok, model = setup
    generate_responses(model, tok, rs, tmp_path / "b1", batch_size=1, **GEN)
    generate_responses(model, tok, rs, tmp_path / "b5", batch_size=5, **GEN)
    assert read_all(tmp_path / "b1") == read_all(tmp_path / "b5")
    generate_responses(model, tok, rs, tmp_path / "s1", batch_size=4, seed=1, **GEN)
    assert read_all(tmp_path / "s1") != read_all(tmp_path / "b1")


def test_resume_after_interruption_equals_uninterrupted(setup, tmp_path):
    rs, tok, model = setup
    generate_responses(model, tok, rs, tmp_path / "full", batch_size=4, **GEN)
    part = tmp_path / "part"
    s1 = generate_responses(model, tok, rs, part, batch_size=4, max_items=7, **GEN)
    assert s1.n_new == 7
    # an interrupted write leaves half a line behind; resuming drops it
    with (part / "responses" / "dragon.jsonl").open("a") as f:
        f.write('{"system_prompt": "half a li')
    s2 = generate_responses(model, tok, rs, part, batch_size=3, **GEN)
    assert s2.n_done_before == 7 and s2.n_new == 17
    assert read_all(part) == read_all(tmp_path / "full")
    s3 = generate_responses(model, tok, rs, part, batch_size=3, **GEN)
    assert s3.n_new == 0 and s3.n_done_before == 24


def test_changed_settings_refuse_to_resume(setup, tmp_path):
    rs, tok, model = setup
    generate_responses(model, tok, rs, tmp_path, max_items=2, **GEN)
    with pytest.raises(ValueError, match="temperature"):
        generate_responses(model, tok, rs, tmp_path, temperature=1.0, **GEN)


def test_greedy_matches_plain_generate(setup, tmp_path):
    rs, tok, model = setup
    generate_responses(
        model,
        tok,
        rs.select(["ghost"], n_questions=1, n_prompts=1),
        tmp_path,
        greedy=True,
        batch_size=2,
        **GEN,
    )
    row = next(formats.read_responses(tmp_path / "responses" / "ghost.jsonl"))
    conv = row["conversation"][:-1]
    ids = torch.tensor(
        [render_with_spans(tok, [*conv, {"role": "assistant", "content": ""}]).input_ids[:-1]]
    )
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False
    )
    new = out[0, ids.shape[1] :].tolist()
    cut = new.index(tok.eos_token_id) if tok.eos_token_id in new else len(new)
    assert (
        row["conversation"][-1]["content"]
        == tok.decode(new[:cut], skip_special_tokens=True).strip()
    )


def test_item_seeds_are_stable_and_distinct():
    assert item_seed(0, "dragon", 1, 2) == item_seed(0, "dragon", 1, 2)
    assert (
        len({item_seed(0, r, p, q) for r in ("a", "b") for p in range(5) for q in range(50)}) == 500
    )
    assert 0 <= item_seed(7, "x", 0, 0) < 2**63


def test_plan_order_default_first():
    from axis_steer.pipeline.roles import builtin_roles

    rs = builtin_roles().select(["tutor", "dragon"], n_questions=2, n_prompts=2)
    items = plan_items(rs, "M")
    assert [i.index for i in items] == list(range(len(items)))
    assert [it.role for it in items[::4]] == ["default", "dragon", "tutor"]
    assert items[0].key == "pos_p0_q0" and items[3].key == "pos_p1_q1"


def test_template_without_system_role_folds_the_prompt(tmp_path):
    rs, tok, model = small_run_setup(NO_SYSTEM, roles=("dragon",), n_questions=2, n_prompts=2)
    generate_responses(model, tok, rs, tmp_path, batch_size=3, **GEN)
    row = next(formats.read_responses(tmp_path / "responses" / "dragon.jsonl"))
    assert [m["role"] for m in row["conversation"]] == ["user", "assistant"]
    assert row["conversation"][0]["content"] == f"{row['system_prompt']}\n\n{row['question']}"
    assert row["system_prompt"] == rs.role("dragon").instructions[0]


def test_reasoning_template_disables_thinking(tmp_path):
    rs, tok, model = small_run_setup(QWEN3, roles=("ghost",), n_questions=2, n_prompts=1)
    generate_responses(model, tok, rs, tmp_path, batch_size=2, **GEN)
    from axis_steer.pipeline.spans import prompt_ids

    for _, row in iter_run_responses(tmp_path):
        # the prompt the model continued ends with an empty reasoning block
        ids = prompt_ids(tok, row["conversation"][:-1])
        assert tok.convert_ids_to_tokens(ids[-2:]) == ["<think>", "</think>"]
        # the response's span starts after that block
        r = render_with_spans(tok, row["conversation"])
        a, b = r.spans[-1]
        assert r.input_ids[:a] == ids
        assert b > a


def test_single_responses_file_is_read_by_label(setup, tmp_path):
    rs, tok, model = setup
    generate_responses(model, tok, rs, tmp_path / "run", max_items=5, **GEN)
    rows = [row for _, row in iter_run_responses(tmp_path / "run")]
    single = tmp_path / "single"
    formats.write_responses(single / "responses.jsonl", rows)
    assert [r for _, r in iter_run_responses(single)] == rows
    with pytest.raises(FileNotFoundError, match="run generate_responses first"):
        list(iter_run_responses(tmp_path / "empty"))


def test_llama3_default_template_in_use(setup):
    _, tok, _ = setup
    assert tok.chat_template == LLAMA3
