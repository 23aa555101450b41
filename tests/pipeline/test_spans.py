"""Assistant-response spans from the chat template, checked token by token on
hand-built templates (Llama-3, ChatML, Qwen3 with reasoning blocks, a template
without a system role, one that drops system messages)."""

from __future__ import annotations

import pytest

from axis_steer.pipeline import spans as S

from chat_fixtures import (
    CHATML,
    DROPS_SYSTEM,
    LLAMA3,
    NO_SYSTEM,
    QWEN3,
    SPACE_SPLIT,
    make_tokenizer,
    tokens_of,
    words_of,
)

TEXTS = [
    "You are a pirate captain.",
    "What is the capital of France? Tell me more. And then? think assistant",
    "Paris is the capital. Arr, matey! Hello there, friend. Sure, here it is. Ahoy. Goodbye now.",
    "Let me think. Answer.",
]
WORDS = words_of(TEXTS)


def tok(template, split=None):
    return make_tokenizer(template, WORDS, **({"split": split} if split else {}))


def span_tokens(t, conv):
    r = S.render_with_spans(t, conv)
    # the ids are exactly what apply_chat_template itself tokenizes
    ids = t.apply_chat_template(
        r.messages, tokenize=True, return_dict=False, **S.chat_template_kwargs(t)
    )
    assert list(ids) == r.input_ids
    return r, [tokens_of(t, r.input_ids[a:b]) for a, b in r.spans]


def conv(*turns, system=None):
    msgs = [{"role": "system", "content": system}] if system is not None else []
    for i, text in enumerate(turns):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return msgs


# ---- Llama-3 ---------------------------------------------------------------------


def test_llama3_single_turn_with_system():
    t = tok(LLAMA3)
    r, got = span_tokens(
        t,
        conv(
            "What is the capital of France?",
            "Paris is the capital.",
            system="You are a pirate captain.",
        ),
    )
    assert got == [["Paris", "is", "the", "capital", "."]]
    a, b = r.spans[0]
    assert tokens_of(t, r.input_ids[a - 1 : a]) == ["<|end_header_id|>"]
    assert tokens_of(t, r.input_ids[b : b + 1]) == ["<|eot_id|>"]
    assert tokens_of(t, r.input_ids[:1]) == ["<|begin_of_text|>"]


def test_llama3_multi_turn_one_span_per_turn():
    t = tok(LLAMA3)
    c = conv(
        "What is the capital of France?", "Paris is the capital.", "Tell me more.", "Arr, matey!"
    )
    r, got = span_tokens(t, c)
    assert got == [["Paris", "is", "the", "capital", "."], ["Arr", ",", "matey", "!"]]
    for _, b in r.spans:
        assert tokens_of(t, r.input_ids[b : b + 1]) == ["<|eot_id|>"]
    assert r.spans[0][1] < r.spans[1][0]


def test_llama3_whitespace_around_content():
    t = tok(LLAMA3)
    _, got = span_tokens(t, conv("Tell me more.", "\n\n  Hello there, friend.  \n"))
    assert got == [["Hello", "there", ",", "friend", "."]]


def test_empty_response_is_an_empty_span_before_the_end_of_turn():
    t = tok(LLAMA3)
    r, got = span_tokens(t, conv("Tell me more.", ""))
    assert got == [[]]
    a, b = r.spans[0]
    assert a == b and tokens_of(t, r.input_ids[a : a + 1]) == ["<|eot_id|>"]


# ---- ChatML without reasoning ----------------------------------------------------


def test_chatml_with_system_and_untrimmed_whitespace():
    t = tok(CHATML, SPACE_SPLIT)
    r, got = span_tokens(
        t, conv("Tell me more.", " Hello there, friend. \n", system="You are a pirate captain.")
    )
    # whitespace tokens written by the template or around the content are excluded
    assert got == [["Hello", " there", ",", " friend", "."]]
    a, b = r.spans[0]
    assert tokens_of(t, r.input_ids[a - 1 : a]) == ["\n "]
    assert tokens_of(t, r.input_ids[b : b + 2]) == [" \n", "<|im_end|>"]


def test_chatml_content_that_repeats_the_header_word():
    t = tok(CHATML)
    _, got = span_tokens(t, conv("Tell me more.", "assistant"))
    assert got == [["assistant"]]


def test_chatml_multi_turn():
    t = tok(CHATML)
    c = conv("What is the capital of France?", "Paris is the capital.", "And then?", "Goodbye now.")
    _, got = span_tokens(t, c)
    assert got == [["Paris", "is", "the", "capital", "."], ["Goodbye", "now", "."]]


# ---- Qwen3 with reasoning blocks -------------------------------------------------


def test_qwen3_excludes_the_empty_reasoning_block():
    t = tok(QWEN3)
    r, got = span_tokens(
        t,
        conv(
            "What is the capital of France?",
            "Sure, here it is.",
            system="You are a pirate captain.",
        ),
    )
    assert "<think>\n\n</think>\n\nSure" in r.text
    assert got == [["Sure", ",", "here", "it", "is", "."]]
    a, _ = r.spans[0]
    assert "</think>" in tokens_of(t, r.input_ids[a - 3 : a])


def test_qwen3_response_carrying_its_own_empty_block():
    t = tok(QWEN3)
    _, got = span_tokens(t, conv("Tell me more.", "<think>\n\n</think>\n\nAhoy."))
    assert got == [["Ahoy", "."]]


def test_qwen3_multi_turn_history_turns_have_no_block():
    t = tok(QWEN3)
    c = conv(
        "What is the capital of France?", "Paris is the capital.", "Tell me more.", "Arr, matey!"
    )
    r, got = span_tokens(t, c)
    assert r.text.count("<think>") == 1  # only the last turn gets the (empty) block
    assert got == [["Paris", "is", "the", "capital", "."], ["Arr", ",", "matey", "!"]]


def test_qwen3_content_that_looks_like_the_block_word():
    t = tok(QWEN3)
    _, got = span_tokens(t, conv("Tell me more.", "think"))
    assert got == [["think"]]


def test_qwen3_generation_prompt_disables_thinking():
    t = tok(QWEN3)
    assert S.chat_template_kwargs(t) == {"enable_thinking": False}
    ids = S.prompt_ids(t, conv("Tell me more."))
    assert tokens_of(t, ids[-3:]) == ["<think>", "</think>", "[UNK]"] or tokens_of(t, ids[-2:]) == [
        "<think>",
        "</think>",
    ]
    assert S.chat_template_kwargs(tok(LLAMA3)) == {}


# ---- templates without a system role ----------------------------------------------


def test_template_that_raises_on_system_gets_it_folded():
    t = tok(NO_SYSTEM)
    assert not S.supports_system(t)
    c = conv("Tell me more.", "Ahoy.", system="You are a pirate captain.")
    r, got = span_tokens(t, c)
    assert [m["role"] for m in r.messages] == ["user", "assistant"]
    assert r.messages[0]["content"] == "You are a pirate captain.\n\nTell me more."
    assert got == [["Ahoy", "."]]
    a, b = r.spans[0]
    assert tokens_of(t, r.input_ids[a - 1 : a]) == ["model"]
    assert tokens_of(t, r.input_ids[b : b + 1]) == ["<end_of_turn>"]


def test_template_that_drops_system_gets_it_folded():
    t = tok(DROPS_SYSTEM)
    assert not S.supports_system(t)
    r, got = span_tokens(
        t, conv("Tell me more.", "Arr, matey!", system="You are a pirate captain.")
    )
    assert "pirate" in r.text
    assert got == [["Arr", ",", "matey", "!"]]


def test_empty_system_prompt_means_no_system_message():
    for template in (LLAMA3, NO_SYSTEM):
        t = tok(template)
        r = S.render_with_spans(t, conv("Tell me more.", "Ahoy.", system=""))
        assert [m["role"] for m in r.messages] == ["user", "assistant"]
        assert r.messages[0]["content"] == "Tell me more."


def test_templates_with_a_system_role_are_detected():
    for template in (LLAMA3, CHATML, QWEN3):
        assert S.supports_system(tok(template))


def test_prompt_ids_end_with_the_assistant_header():
    t = tok(LLAMA3)
    ids = S.prompt_ids(t, conv("Tell me more.", system="You are a pirate captain."))
    assert tokens_of(t, ids[-3:]) == ["<|start_header_id|>", "assistant", "<|end_header_id|>"]
    full = S.render_with_spans(
        t, conv("Tell me more.", "Ahoy.", system="You are a pirate captain.")
    )
    assert full.input_ids[: len(ids)] == ids
    assert full.spans[0][0] == len(ids)


def test_bad_messages_are_named():
    t = tok(LLAMA3)
    with pytest.raises(ValueError, match=r"conversation\[1\]"):
        S.render_with_spans(t, [{"role": "user", "content": "hi"}, {"content": "x"}])
    t2 = tok(LLAMA3)
    t2.chat_template = None
    with pytest.raises(ValueError, match="chat_template"):
        S.render_with_spans(t2, conv("hi", "there"))


class _NoOffsets:
    """A tokenizer that gives no character offsets (like a slow tokenizer)."""

    is_fast = False

    def __init__(self, inner):
        self._inner = inner
        self.chat_template = inner.chat_template

    def __call__(self, text, add_special_tokens=False, **kw):
        kw.pop("return_offsets_mapping", None)
        return self._inner(text, add_special_tokens=add_special_tokens)

    def apply_chat_template(self, *a, **kw):
        return self._inner.apply_chat_template(*a, **kw)


@pytest.mark.parametrize("template", [LLAMA3, QWEN3, NO_SYSTEM])
def test_tokenizers_without_offsets_give_the_same_spans(template):
    t = tok(template)
    c = conv(
        "What is the capital of France?",
        " Paris is the capital. ",
        "Tell me more.",
        "Arr, matey!",
        system="You are a pirate captain.",
    )
    fast = S.render_with_spans(t, c)
    slow = S.render_with_spans(_NoOffsets(t), c)
    assert slow.input_ids == fast.input_ids and slow.spans == fast.spans
