"""Verifiable instructions: prompts whose instructions a program can check,
in the manner of IFEval ("answer in all lowercase", "exactly 3 bullet
points", "end with the phrase ..."), with the checkers here in plain Python
(no NLTK, nothing downloaded).

An item is ``{"prompt": str, "checks": [{"type": name, ...arguments}], "id"}``;
a reply *follows* an item when every check passes (IFEval's strict
prompt-level accuracy), and each check is also counted on its own
(instruction-level accuracy). :data:`CHECKS` lists the check types;
:func:`builtin_instructions` the 50 items that ship with axis_steer
(``data/eval/instructions.jsonl``, written for this project; about a third are
followed by a 135M chat model).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["CHECKS", "builtin_instructions", "check_reply", "load_instructions"]

_WORD = re.compile(r"[A-Za-z0-9]+(?:['\u2019][A-Za-z]+)?")
_BULLET = re.compile(r"^\s*[-*\u2022]\s+\S")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+\S")


def _words(r: str) -> list[str]:
    return _WORD.findall(r)


def _letters(r: str) -> str:
    return "".join(c for c in r if c.isalpha())


def _paragraphs(r: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", r.strip()) if p.strip()]


def _sentences(r: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", r.strip()) if _words(s)]


def _has_word(r: str, word: str) -> int:
    return len(re.findall(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", r, flags=re.IGNORECASE))


def _json_keys(r: str, keys: Sequence[str]) -> bool:
    m = re.search(r"\{.*\}", r, re.DOTALL)
    if m is None:
        return False
    try:
        obj = json.loads(m.group(0))
    except ValueError:
        return False
    return isinstance(obj, dict) and set(keys) <= set(obj)


#: check type -> (checker(reply, **arguments) -> bool, argument names)
CHECKS: dict[str, tuple[Callable[..., bool], tuple[str, ...]]] = {
    "lowercase": (lambda r: bool(_letters(r)) and _letters(r) == _letters(r).lower(), ()),
    "uppercase": (lambda r: bool(_letters(r)) and _letters(r) == _letters(r).upper(), ()),
    "max_words": (lambda r, n: 0 < len(_words(r)) <= n, ("n",)),
    "min_words": (lambda r, n: len(_words(r)) >= n, ("n",)),
    "word_count": (lambda r, n: len(_words(r)) == n, ("n",)),
    "include_word": (lambda r, word, times=1: _has_word(r, word) >= times, ("word",)),
    "exclude_word": (lambda r, word: bool(r.strip()) and _has_word(r, word) == 0, ("word",)),
    "start_with": (lambda r, text: r.strip().lower().startswith(text.lower()), ("text",)),
    "end_with": (lambda r, text: r.strip().endswith(text), ("text",)),
    "no_commas": (lambda r: bool(r.strip()) and "," not in r, ()),
    "no_letter": (lambda r, letter: bool(r.strip()) and letter.lower() not in r.lower(), ("letter",)),
    "json_keys": (lambda r, keys: _json_keys(r, keys), ("keys",)),
    "paragraphs": (lambda r, n: len(_paragraphs(r)) == n, ("n",)),
    "bullets": (lambda r, n: sum(bool(_BULLET.match(x)) for x in r.splitlines()) == n, ("n",)),
    "numbered": (lambda r, n: sum(bool(_NUMBERED.match(x)) for x in r.splitlines()) == n, ("n",)),
    "max_sentences": (lambda r, n: 0 < len(_sentences(r)) <= n, ("n",)),
    "title": (lambda r: re.search(r"<<[^<>\n]+>>", r) is not None, ()),
    "quoted": (lambda r: len(r.strip()) > 1 and r.strip()[0] == '"' and r.strip()[-1] == '"', ()),
    "exact": (lambda r, text: r.strip() == text, ("text",)),
    "ends_with_question": (lambda r: r.strip().endswith("?"), ()),
    "postscript": (lambda r, marker="P.S.": marker in r, ()),
    "placeholders": (lambda r, n: len(re.findall(r"\[[^\[\]\n]+\]", r)) >= n, ("n",)),
    "comma_list": (
        lambda r, n: len([x for x in r.strip().rstrip(".").split(",") if x.strip()]) == n and len(_words(r)) <= 3 * n,
        ("n",),
    ),
}


def _check_item(obj: Any, where: str) -> dict:
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not isinstance(obj.get("checks"), list):
        raise ValueError(f"{where}: expected {{'prompt': text, 'checks': [{{'type': ...}}, ...]}}")
    if not obj["checks"]:
        raise ValueError(f"{where}: no checks")
    for c in obj["checks"]:
        kind = c.get("type") if isinstance(c, dict) else None
        if kind not in CHECKS:
            raise ValueError(f"{where}: check {c!r} (expected a type among {', '.join(sorted(CHECKS))})")
        missing = [a for a in CHECKS[kind][1] if a not in c]
        if missing:
            raise ValueError(f"{where}: check {kind!r} lacks {missing}")
    return obj


def load_instructions(path: str | Path) -> list[dict]:
    """Reads a JSONL of instruction items (see the module docs), checking every check's type and arguments."""
    from axis_steer.runtime.formats import iter_jsonl

    return [_check_item(obj, f"{path}:{lineno}") for lineno, obj in iter_jsonl(path)]


def builtin_instructions() -> list[dict]:
    """The 50 built-in items (``data/eval/instructions.jsonl``)."""
    return load_instructions(Path(__file__).resolve().parent / "data" / "eval" / "instructions.jsonl")


def check_reply(item: dict, reply: str) -> list[bool]:
    """Whether ``reply`` passes each of ``item``'s checks, in order."""
    out = []
    for c in item["checks"]:
        fn, _ = CHECKS[c["type"]]
        kw = {k: v for k, v in c.items() if k != "type"}
        out.append(bool(fn(reply, **kw)))
    return out
