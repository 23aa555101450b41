"""Where the assistant's words are: token spans of assistant responses, found
from the model's own chat template.

Role vectors and the Assistant Axis are means over *assistant response tokens
only*: no system or user tokens, no chat-template markers (headers, end-of-turn
tokens), no empty reasoning blocks (``<think>\\n\\n</think>\\n\\n``), no
whitespace the template adds around a message. This module finds those tokens
for any model by asking its chat template, never by checking the model's name:

1. the conversation is rendered to text with ``tokenizer.apply_chat_template``;
2. for each assistant message, the conversation *before* it is rendered with the
   generation prompt; the common prefix of that render and the full render ends
   where the template's assistant header ends;
3. the message's content (stripped of surrounding whitespace and of an empty
   reasoning block) is located in the full render from there on;
4. characters map to tokens through the fast tokenizer's offsets: a token
   belongs to the response when it overlaps the content's characters.

Templates differ in two ways handled here. A template without a system role
(it raises on a system message, or silently drops it) gets the system prompt
folded into the first user turn as ``"{system}\\n\\n{user}"``, the reference
pipeline's convention. A template with an ``enable_thinking`` switch (reasoning
models) is rendered with ``enable_thinking=False``.

Everything here is pure Python on a tokenizer; no model is involved.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any, Sequence

from axis_steer.runtime.formats import check_messages

__all__ = [
    "RenderedChat",
    "assistant_spans",
    "chat_template_kwargs",
    "prepare_messages",
    "prompt_ids",
    "render_text",
    "render_with_spans",
    "supports_system",
]

_EMPTY_THINK = re.compile(r"\s*<think>\s*</think>\s*")
_SENTINEL = "axis-steer-system-probe-7f3a"
_SYSTEM_SUPPORT: dict[str, bool] = {}


@dataclass(frozen=True)
class RenderedChat:
    """A conversation rendered by the chat template, with its response spans.

    Attributes:
        text: the rendered conversation (what the model reads).
        input_ids: its token ids, ``len(input_ids)`` tokens (no tokens added
            beyond what the template writes).
        spans: one half-open token range ``(start, stop)`` per assistant turn,
            in order, covering the turn's content only; ``start == stop`` for an
            empty response.
        char_spans: the same turns as half-open character ranges in ``text``.
        messages: the messages as rendered (after folding a system prompt into
            the first user turn where the template has no system role).
    """

    text: str
    input_ids: list[int]
    spans: list[tuple[int, int]]
    char_spans: list[tuple[int, int]]
    messages: list[dict]

    def __len__(self) -> int:
        return len(self.input_ids)


def _template_source(tokenizer: Any) -> str:
    tpl = getattr(tokenizer, "chat_template", None)
    if tpl is None:
        raise ValueError(
            "tokenizer: has no chat_template (expected a chat model's tokenizer; set "
            "tokenizer.chat_template to a Jinja template to use a base model)"
        )
    if isinstance(tpl, dict):
        return str(tpl.get("default", next(iter(tpl.values()), "")))
    return str(tpl)


def chat_template_kwargs(tokenizer: Any) -> dict:
    """Extra keyword arguments for ``apply_chat_template``: ``enable_thinking=False``
    when the template has that switch (reasoning models), else nothing."""
    return {"enable_thinking": False} if "enable_thinking" in _template_source(tokenizer) else {}


def render_text(
    tokenizer: Any, messages: Sequence[dict], *, add_generation_prompt: bool = False
) -> str:
    """The chat template's rendering of ``messages`` as text (thinking disabled
    where the template allows it). Template errors become ``ValueError``."""
    try:
        return tokenizer.apply_chat_template(
            list(messages),
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            **chat_template_kwargs(tokenizer),
        )
    except Exception as exc:
        roles = [m.get("role") for m in messages]
        raise ValueError(
            f"the chat template failed on a conversation with roles {roles}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def supports_system(tokenizer: Any) -> bool:
    """Whether the chat template renders a system message: it must neither
    raise on one nor drop its text. Cached per template."""
    src = _template_source(tokenizer)
    if src not in _SYSTEM_SUPPORT:
        probe = [{"role": "system", "content": _SENTINEL}, {"role": "user", "content": "hi"}]
        try:
            text = tokenizer.apply_chat_template(
                probe, tokenize=False, add_generation_prompt=True, **chat_template_kwargs(tokenizer)
            )
            ok = _SENTINEL in text
        except Exception:
            ok = False
        _SYSTEM_SUPPORT[src] = ok
    return _SYSTEM_SUPPORT[src]


def prepare_messages(tokenizer: Any, conversation: Sequence[dict]) -> list[dict]:
    """Copies ``conversation`` into the messages the template should render:
    an empty system prompt is dropped (``""`` means no system message); where
    the template has no system role, leading system prompts are folded into the
    first user turn as ``"{system}\\n\\n{user}"``."""
    msgs = [dict(m) for m in check_messages(conversation, "conversation")]
    msgs = [m for m in msgs if not (m["role"] == "system" and not m["content"])]
    if not msgs or msgs[0]["role"] != "system" or supports_system(tokenizer):
        return msgs
    system = []
    while msgs and msgs[0]["role"] == "system":
        system.append(str(msgs.pop(0)["content"]))
    if any(m["role"] == "system" for m in msgs):
        raise ValueError(
            "conversation: a system message after the first turn, and the chat template has "
            "no system role to put it in (expected system messages only at the start)"
        )
    text = "\n\n".join(system)
    if msgs and msgs[0]["role"] == "user":
        msgs[0]["content"] = f"{text}\n\n{msgs[0]['content']}"
    else:
        msgs.insert(0, {"role": "user", "content": text})
    return msgs


def prompt_ids(tokenizer: Any, conversation: Sequence[dict]) -> list[int]:
    """Token ids of ``conversation`` followed by the template's generation
    prompt (the assistant header, an empty reasoning block for reasoning
    models): what ``generate`` continues from."""
    text = render_text(
        tokenizer, prepare_messages(tokenizer, conversation), add_generation_prompt=True
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _candidates(content: str) -> list[str]:
    """What the template may have written for ``content``, most likely first."""
    out = [content.strip()]
    m = _EMPTY_THINK.match(content)
    if m:
        out.append(content[m.end() :].strip())
    if "</think>" in content:
        out.append(content.rsplit("</think>", 1)[1].strip())
    return list(dict.fromkeys(out))


def _locate(text: str, content: str, start: int, where: str) -> tuple[int, int]:
    m = _EMPTY_THINK.match(text, start)
    if m:
        start = m.end()
    for cand in _candidates(content):
        if not cand:
            return start, start
        i = text.find(cand, start)
        if i >= 0:
            return i, i + len(cand)
    snippet = text[start : start + 80]
    raise ValueError(
        f"{where}: the assistant's content was not found in the chat template's rendering after "
        f"character {start} (it continues {snippet!r}); the template rewrites assistant messages "
        "in a way that cannot be traced back to their text"
    )


def _char_to_token_spans(
    tokenizer: Any, text: str, ids: list[int], offsets: list, char_spans: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    if offsets is None:
        return _spans_by_prefix(tokenizer, text, ids, char_spans)
    real = [(i, s, e) for i, (s, e) in enumerate(offsets) if e > s]
    starts = [s for _, s, _ in real]
    ends = [e for _, _, e in real]
    monotone = all(a <= b for a, b in zip(ends, ends[1:])) and all(
        a <= b for a, b in zip(starts, starts[1:])
    )
    out = []
    for cs, ce in char_spans:
        if ce <= cs:
            # empty response: an empty span where its text would start
            j = bisect.bisect_left(starts, cs) if monotone else 0
            pos = real[j][0] if j < len(real) else len(ids)
            out.append((pos, pos))
            continue
        if monotone:
            a = bisect.bisect_right(ends, cs)
            b = bisect.bisect_left(starts, ce)
            hit = [real[j][0] for j in range(a, b)]
        else:
            hit = [i for i, s, e in real if e > cs and s < ce]
        if not hit:
            # no token's offsets cover the content: trust token counts of prefixes instead
            return _spans_by_prefix(tokenizer, text, ids, char_spans)
        out.append((hit[0], hit[-1] + 1))
    return out


def _spans_by_prefix(
    tokenizer: Any, text: str, ids: list[int], char_spans: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Slow tokenizers (no offsets): token counts of the text's prefixes."""

    def count(upto: int) -> int:
        pre = list(tokenizer(text[:upto], add_special_tokens=False)["input_ids"])
        if ids[: len(pre)] != pre:
            raise ValueError(
                "tokenizer: a slow tokenizer whose tokens do not split at the response boundary; "
                "use the model's fast tokenizer (AutoTokenizer.from_pretrained(..., use_fast=True))"
            )
        return len(pre)

    return [(count(cs), count(ce)) for cs, ce in char_spans]


def render_with_spans(tokenizer: Any, conversation: Sequence[dict]) -> RenderedChat:
    """Renders ``conversation`` with the chat template and finds each assistant
    turn's content tokens (see the module notes for how).

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template (fast tokenizers
            give exact offsets; slow ones are handled by prefix tokenization).
        conversation: chat messages ``{"role", "content"}``; any number of
            assistant turns.

    Returns:
        A :class:`RenderedChat`; ``spans[k]`` is the token range of the ``k``-th
        assistant turn's content.
    """
    msgs = prepare_messages(tokenizer, conversation)
    full = render_text(tokenizer, msgs)
    char_spans: list[tuple[int, int]] = []
    floor = 0
    for k, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        head = render_text(tokenizer, msgs[:k], add_generation_prompt=True) if k else ""
        start = max(_common_prefix(head, full), floor)
        cs, ce = _locate(full, str(m["content"] or ""), start, f"conversation message {k}")
        char_spans.append((cs, ce))
        floor = ce
    is_fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=is_fast)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]] if is_fast else None
    spans = _char_to_token_spans(tokenizer, full, ids, offsets, char_spans)
    return RenderedChat(full, ids, spans, char_spans, msgs)


def assistant_spans(tokenizer: Any, conversation: Sequence[dict]) -> list[tuple[int, int]]:
    """Token ranges ``(start, stop)`` of each assistant turn's content in the
    template's tokenization of ``conversation`` (see :func:`render_with_spans`)."""
    return render_with_spans(tokenizer, conversation).spans
