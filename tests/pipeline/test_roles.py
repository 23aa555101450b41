"""Role data: the built-in set, the persona set, the reference layout, and the
errors for malformed role files."""

from __future__ import annotations

import json
import re

import pytest

from axis_steer.pipeline.roles import DEFAULT_ROLE, builtin_roles, load_role_set


def test_builtin_set_shape():
    rs = builtin_roles()
    assert len(rs.roles) >= 30
    assert len(rs.questions) >= 60
    assert len(set(rs.questions)) == len(rs.questions)
    for name, role in rs.roles.items():
        assert len(role.instructions) == 5, name
        assert all(p.strip() for p in role.instructions), name
        assert len(set(role.instructions)) == 5, name
        assert role.questions, name
        assert "{question}" in role.eval_prompt and "{answer}" in role.eval_prompt
    # assistant-like professions through to fantastical characters
    for name in (
        "tutor",
        "librarian",
        "accountant",
        "dragon",
        "ghost",
        "pirate_captain",
        "oracle",
        "jester",
    ):
        assert name in rs.roles
    assert rs.names[0] == DEFAULT_ROLE and DEFAULT_ROLE not in rs.roles


def test_default_prompts_are_neutral_and_substituted():
    rs = builtin_roles()
    raw = rs.default.instructions
    assert raw[0] == "" and "You are an AI assistant." in raw
    assert any("{model_name}" in p for p in raw)
    got = rs.instructions(DEFAULT_ROLE, "Qwen3-32B")
    assert "You are Qwen3-32B, a large language model." in got
    assert not any("{model_name}" in p for p in got)
    with pytest.raises(ValueError, match="model_name"):
        rs.instructions(DEFAULT_ROLE)


def test_judge_prompt_fills_placeholders():
    role = builtin_roles().role("dragon")
    text = role.judge_prompt("Who are you?", "I am the dragon of the north.")
    assert "Who are you?" in text and "I am the dragon of the north." in text
    assert "{question}" not in text and "{answer}" not in text


def test_persona_role_set_loads():
    from axis_steer.personas import role_data_dir

    rs = load_role_set(role_data_dir())
    assert len(rs.roles) >= 5 and len(rs.questions) > 0
    assert all(len(r.instructions) == 5 for r in rs.roles.values())


def test_select_keeps_indices_and_default():
    rs = builtin_roles().select(["ghost", "tutor"], n_questions=4, n_prompts=2)
    assert list(rs.roles) == ["ghost", "tutor"]
    assert rs.names == ["default", "ghost", "tutor"]
    assert len(rs.questions) == 4 and all(len(r.instructions) == 2 for r in rs.roles.values())
    assert rs.questions == builtin_roles().questions[:4]
    with pytest.raises(ValueError, match="not in the role set"):
        builtin_roles().select(["no_such_role"])


def _write_set(root, roles=None, default=None, questions=None, layout="set"):
    roles_dir = root / "roles" if layout == "set" else root / "data" / "roles" / "instructions"
    roles_dir.mkdir(parents=True)
    roles = (
        roles
        if roles is not None
        else {
            "pirate": {
                "instruction": [{"pos": f"You are pirate {i}."} for i in range(5)],
                "questions": ["Where is the gold?"],
                "eval_prompt": "Q: {question} A: {answer}",
            }
        }
    )
    for name, obj in roles.items():
        (roles_dir / f"{name}.json").write_text(obj if isinstance(obj, str) else json.dumps(obj))
    if default is not False:
        (roles_dir / "default.json").write_text(
            json.dumps(default or {"instruction": [{"pos": ""}, {"pos": "You are {model_name}."}]})
        )
    qfile = (
        root / "questions.jsonl"
        if layout == "set"
        else root / "data" / "extraction_questions.jsonl"
    )
    if questions is not False:
        qfile.write_text(
            questions
            or "".join(json.dumps({"question": f"Q{i}?", "id": i}) + "\n" for i in range(3))
        )
    return roles_dir


def test_reference_layout_with_questions_two_folders_up(tmp_path):
    roles_dir = _write_set(tmp_path, layout="reference")
    rs = load_role_set(roles_dir)
    assert list(rs.roles) == ["pirate"] and rs.questions == ("Q0?", "Q1?", "Q2?")
    assert rs.question_ids == (0, 1, 2)
    assert rs.instructions("default", "M") == ["", "You are M."]


def test_set_layout_and_explicit_questions(tmp_path):
    _write_set(tmp_path)
    other = tmp_path / "other.jsonl"
    other.write_text('{"question": "Only?"}\n')
    assert load_role_set(tmp_path).questions == ("Q0?", "Q1?", "Q2?")
    rs = load_role_set(tmp_path, questions=other)
    assert rs.questions == ("Only?",) and rs.question_ids == (0,)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"instruction": [', r"pirate\.json:1:\d+: not valid JSON"),
        ('{"questions": []}', r"pirate\.json: 'instruction' is missing"),
        ('{"instruction": []}', r"pirate\.json: 'instruction' is \[\]"),
        ('{"instruction": [{"neg": "x"}]}', r"pirate\.json: instruction\[0\]"),
        (
            '{"instruction": [{"pos": "x"}], "eval_prompt": "no placeholders"}',
            r"lacks the placeholder",
        ),
        ('{"instruction": [{"pos": "x"}], "questions": "nope"}', r"'questions' must be a list"),
    ],
)
def test_malformed_role_files_name_the_file(tmp_path, content, message):
    _write_set(tmp_path, roles={"pirate": content})
    with pytest.raises(ValueError, match=message):
        load_role_set(tmp_path)


def test_missing_pieces_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_role_set(tmp_path / "nope")
    a = tmp_path / "a"
    _write_set(a, default=False)
    with pytest.raises(FileNotFoundError, match=re.escape("no default.json")):
        load_role_set(a)
    b = tmp_path / "b"
    _write_set(b, questions=False)
    with pytest.raises(FileNotFoundError, match="pass questions=PATH"):
        load_role_set(b)
    c = tmp_path / "c"
    _write_set(c, questions='{"question": "ok"}\n{"text": "bad"}\n')
    with pytest.raises(ValueError, match=r"questions\.jsonl:2:"):
        load_role_set(c)
