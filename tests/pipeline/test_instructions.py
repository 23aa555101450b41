"""The verifiable-instruction checkers: each check type on replies that pass and
replies that fail, item validation, and the built-in items."""

from __future__ import annotations

import json

import pytest

from axis_steer.pipeline.instructions import (
    CHECKS,
    builtin_instructions,
    check_reply,
    load_instructions,
)

CASES = [
    ({"type": "lowercase"}, "the sea is blue.", "The sea is blue."),
    ({"type": "uppercase"}, "CATS ARE GREAT!", "Cats are great!"),
    ({"type": "max_words", "n": 3}, "One two three.", "One two three four."),
    ({"type": "min_words", "n": 3}, "one two three", "one two"),
    ({"type": "word_count", "n": 1}, "Blue.", "It is blue."),
    ({"type": "include_word", "word": "loyal"}, "Dogs are Loyal.", "Dogs are loyalty-driven."),
    ({"type": "include_word", "word": "bloom", "times": 2}, "bloom, bloom!", "bloom once"),
    ({"type": "exclude_word", "word": "sand"}, "Dunes and heat.", "Sand everywhere."),
    ({"type": "start_with", "text": "Yes"}, "  yes, it is a star.", "It is a star. Yes."),
    ({"type": "end_with", "text": "Stay warm."}, "Cold days. Stay warm.", "Stay warm. Cold days."),
    ({"type": "no_commas"}, "No commas here.", "Well, there is one."),
    ({"type": "no_letter", "letter": "e"}, "Hi pal!", "Hello!"),
    ({"type": "json_keys", "keys": ["name", "age"]}, 'Here: {"name": "Ann", "age": 3}', '{"name": "Ann"}'),
    ({"type": "paragraphs", "n": 2}, "One.\n\nTwo.", "One.\nTwo."),
    ({"type": "bullets", "n": 2}, "- a\n* b", "- a\n- b\n- c"),
    ({"type": "numbered", "n": 2}, "1. a\n2) b", "1. a"),
    ({"type": "max_sentences", "n": 1}, "One sentence only.", "One. Two."),
    ({"type": "title"}, "<<The Dragon>> Once...", "<The Dragon>"),
    ({"type": "quoted"}, '"A city of lights."', "A city of lights."),
    ({"type": "exact", "text": "banana"}, " banana\n", "banana!"),
    ({"type": "ends_with_question"}, "What do you enjoy?", "Tell me."),
    ({"type": "postscript"}, "See you.\nP.S. Bring cake.", "See you."),
    ({"type": "placeholders", "n": 2}, "Dear [name], at [company]", "Dear [name]"),
    ({"type": "comma_list", "n": 3}, "Apple, banana, cherry.", "Apple, banana."),
]


def test_every_check_type_is_exercised():
    assert {c["type"] for c, _, _ in CASES} == set(CHECKS)


@pytest.mark.parametrize("check, good, bad", CASES, ids=[c["type"] + str(i) for i, (c, _, _) in enumerate(CASES)])
def test_checks(check, good, bad):
    item = {"prompt": "p", "checks": [check]}
    assert check_reply(item, good) == [True]
    assert check_reply(item, bad) == [False]


def test_empty_replies_follow_no_instruction():
    for c, _, _ in CASES:
        if c["type"] in ("exact",):
            continue
        assert check_reply({"prompt": "p", "checks": [c]}, "   ") == [False], c


def test_items_are_validated(tmp_path):
    p = tmp_path / "i.jsonl"
    p.write_text(json.dumps({"prompt": "x", "checks": [{"type": "max_words"}]}) + "\n")
    with pytest.raises(ValueError, match=r"i.jsonl:1: check 'max_words' lacks \['n'\]"):
        load_instructions(p)
    p.write_text(json.dumps({"prompt": "x", "checks": [{"type": "rhymes"}]}) + "\n")
    with pytest.raises(ValueError, match="expected a type among"):
        load_instructions(p)


def test_builtin_items():
    items = builtin_instructions()
    assert len(items) == 50 and len({it["id"] for it in items}) == 50
    assert sum(len(it["checks"]) > 1 for it in items) >= 5
