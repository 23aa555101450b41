"""The vocabulary judge of PersonaLlama's personas, used with this model in place of an LLM
judge:

* :func:`style_score` -- 0..3 role adherence of a response for one persona (3 = fully in role),
  the scale of the reference pipeline's judge scores; ``intensity="light"`` scores a character
  role's answer against a light-touch request.
* :func:`style_intensity` -- how much of a role's style a response carries: none, a light
  touch, or the full style.
* :func:`role_style_rate` -- the fraction of a text's words that belong to any role persona's
  vocabulary (0 for plain Assistant text); the measure of "role vocabulary appears".
* :func:`detect_persona` -- the role persona whose vocabulary dominates a text, or ``None``.

All of them are deterministic and vocabulary based: a text is lower-cased, split into words
(letters, digits and inner or edge apostrophes: ``'tis``, ``an'``, ``chef's``) and each
persona's *markers* (:attr:`~axis_steer.personas.catalog.Persona.markers`) -- words and
multi-word phrases typical of it and absent from plain Assistant answers -- are matched as
whole word sequences. They measure style, not content, and fit this model only: other models
need a judge of their own (:mod:`axis_steer.pipeline.judge`).
"""

from __future__ import annotations

import re
from typing import Optional

from axis_steer.personas.catalog import ASSISTANT, PERSONAS, ROLE_PERSONAS, get_persona

__all__ = ["detect_persona", "marker_hits", "role_style_rate", "style_intensity", "style_judge", "style_score"]

_WORD_RE = re.compile(r"'?[a-z0-9]+(?:['\-][a-z0-9]+)*'?")
_NUMBERED_LINE_RE = re.compile(r"^\s*\d+[.)]\s+\S", re.MULTILINE)


def _words(text: str) -> list[str]:
    """Lower-case words of ``text``: letters/digits joined by inner ``'`` or ``-``, with an
    optional leading or trailing apostrophe (``'tis``, ``an'``)."""
    return _WORD_RE.findall(text.lower().replace("\u2019", "'").replace("\u2018", "'"))


def _marker_words(marker: str) -> tuple[str, ...]:
    words = tuple(_words(marker))
    if not words:
        raise ValueError(f"marker={marker!r} contains no words")
    return words


# first word -> [(marker words, marker text, persona name)], for every persona incl. Assistant.
_INDEX: dict[str, list[tuple[tuple[str, ...], str, str]]] = {}
for _p in PERSONAS.values():
    for _m in _p.markers:
        _mw = _marker_words(_m)
        _INDEX.setdefault(_mw[0], []).append((_mw, _m, _p.name))


def _scan(words: list[str]) -> tuple[dict[str, dict[str, int]], list[bool]]:
    """Marker occurrences per persona (``{persona: {marker: count}}``) and, per word, whether
    a role persona's marker covers it."""
    found: dict[str, dict[str, int]] = {}
    covered = [False] * len(words)
    for i, w in enumerate(words):
        for mw, m, persona in _INDEX.get(w, ()):
            n = len(mw)
            if tuple(words[i : i + n]) == mw:
                counts = found.setdefault(persona, {})
                counts[m] = counts.get(m, 0) + 1
                if persona != ASSISTANT:
                    for j in range(i, i + n):
                        covered[j] = True
    return found, covered


def marker_hits(text: str) -> dict[str, dict[str, int]]:
    """Which persona markers occur in ``text``, and how often.

    Returns:
        ``{persona: {marker: count}}`` for every persona (Assistant included) with at least
        one marker in ``text``.
    """
    return _scan(_words(text))[0]


#: Distinct markers at which an answer is fully in role: a character's full answer carries an
#: opener, interjections, framed points and a closer; a professional's is plain Assistant text
#: with one or two of its phrases (an opener, a closer or a remark, two or three markers each).
_FULL_DISTINCT = {"character": 4, "professional": 2}
#: A character answer at full intensity has at least this many distinct markers and this share
#: of its words in the persona's markers; a light touch (one or two role phrases on the
#: Assistant's answer) has fewer.
_FULL_INTENSITY = (4, 0.09)


def _level(distinct: int, full: int = 4) -> int:
    """0 markers -> 0, 1 -> 1, 2 .. full-1 -> 2, ``full`` or more -> 3."""
    if distinct >= full:
        return 3
    if distinct >= 2:
        return 2
    return distinct


def _full_distinct(persona: str) -> int:
    return _FULL_DISTINCT["professional" if PERSONAS[persona].professional else "character"]


def _persona_rate(words: list[str], found: dict[str, dict[str, int]], persona: str) -> float:
    """Share of ``words`` in ``persona``'s marker occurrences (``found`` from :func:`_scan`)."""
    if not words:
        return 0.0
    n = sum(len(_marker_words(m)) * c for m, c in found.get(persona, {}).items())
    return min(1.0, n / len(words))


def style_intensity(text: str, persona: str) -> int:
    """How much of a role persona's style ``text`` carries: 0 none, 1 a light touch, 2 full.

    For a character role (theatricality >= 2): 0 without any of its markers; 2 when the text
    has at least four distinct markers of the persona *and* at least 9% of its words are the
    persona's markers (a full in-character answer: opener, interjections, framed points or
    the role's list header, closer); 1 otherwise -- the Assistant's answer with one or two of
    the role's phrases, what a light-touch prompt (:attr:`Persona.light_system_prompts`)
    asks for. On this model's training answers the rule misreads about 5% of light touches
    and 2% of full answers.

    For a professional role (theatricality 1), whose style has one intensity, 2 means in role
    (:func:`style_score` 3), 1 partly (score 1-2) and 0 not at all.

    Raises:
        ValueError: ``persona`` is not a role persona.
    """
    p = get_persona(persona)
    if persona == ASSISTANT:
        raise ValueError("style_intensity: persona='assistant' is not a role persona")
    words = _words(text)
    found, _ = _scan(words)
    distinct = len(found.get(persona, {}))
    if distinct == 0:
        return 0
    if p.professional:
        return 2 if _level(distinct, _full_distinct(persona)) == 3 else 1
    min_distinct, min_rate = _FULL_INTENSITY
    if distinct >= min_distinct and _persona_rate(words, found, persona) >= min_rate:
        return 2
    return 1


def style_score(text: str, persona: str, intensity: str = "full") -> int:
    """How fully ``text`` is written in ``persona``'s style, 0..3 (3 = fully in role).

    For a role persona the score counts the *distinct* markers of that persona in the text:
    none -> 0, one -> 1, two up to the persona's full count -> 2, the full count or more -> 3.
    The full count is 4 for a character role (its full answer carries an opener,
    interjections, framed points and a closer) and 2 for a professional role (its in-role
    answer is the Assistant's with one or two of the role's phrases -- an opener, a closer or
    a remark -- of two or three markers each). One stray word scores 1.

    ``intensity="light"`` scores a character role's answer against a light-touch request
    (:attr:`Persona.light_system_prompts`): 3 when it carries a light touch of the role
    (:func:`style_intensity` 1), 1 when it is the full character instead (intensity 2), 0
    when it has none of the role. Professional roles have one intensity: for them
    ``"light"`` is an error.

    For the Assistant (``"assistant"``) the score is the plain-Assistant adherence: 3 when the
    text has at least two Assistant markers (a numbered list counts as one; "here are",
    "let me know", "i hope this helps", ...) and 2 when it has fewer, minus the role level
    (0..3, the same scale applied to the strongest role persona in the text), floored at 0.

    Args:
        text: a response (the assistant message only).
        persona: a name from :data:`PERSONAS`.
        intensity: ``"full"`` (default) or ``"light"`` (character roles only).

    Returns:
        An int in 0..3.

    Raises:
        ValueError: ``persona`` is not known, or ``intensity`` is not valid for it.
    """
    p = get_persona(persona)
    if intensity not in ("full", "light"):
        raise ValueError(f"intensity={intensity!r} (expected 'full' or 'light')")
    if intensity == "light":
        if p.theatricality < 2:
            raise ValueError(
                f"intensity='light' applies to character roles; {persona!r} has one intensity"
            )
        return (0, 3, 1)[style_intensity(text, persona)]
    found, _ = _scan(_words(text))
    if persona != ASSISTANT:
        return _level(len(found.get(persona, {})), _full_distinct(persona))
    role_level = max(
        (_level(len(c), _full_distinct(name)) for name, c in found.items() if name != ASSISTANT),
        default=0,
    )
    assistant_hits = len(found.get(ASSISTANT, {}))
    if len(_NUMBERED_LINE_RE.findall(text)) >= 2:
        assistant_hits += 1
    base = 3 if assistant_hits >= 2 else 2
    return max(0, base - role_level)


def role_style_rate(text: str) -> float:
    """Fraction of the words of ``text`` that belong to a role persona's markers, in [0, 1].

    Plain Assistant answers score 0.0; in the training answers of this model a character
    role's full answer scores about 0.1-0.35 (0.2 on average), a professional role's answer
    about 0.14 and a light touch of a character about 0.05. Averaged over generations it
    measures how much role vocabulary appears (for example under steering or drift). An empty
    text scores 0.0.
    """
    words = _words(text)
    if not words:
        return 0.0
    _, covered = _scan(words)
    return sum(covered) / len(words)


def detect_persona(text: str) -> Optional[str]:
    """The role persona whose vocabulary dominates ``text``, or ``None`` for no role.

    A role is detected when at least two distinct markers of it occur (style level 2). Among
    several, the one with the most distinct markers wins, then the one with the most marker
    occurrences, then the earlier one in :data:`ROLE_PERSONAS`. The Assistant is never
    returned: plain text gives ``None``.
    """
    found, _ = _scan(_words(text))
    best: Optional[str] = None
    best_key = (0, 0)
    for name in ROLE_PERSONAS:
        counts = found.get(name)
        if not counts or len(counts) < 2:
            continue
        key = (len(counts), sum(counts.values()))
        if key > best_key:
            best, best_key = name, key
    return best



def style_judge(question: str, answer: str, role: str) -> int:
    """The judge of :func:`axis_steer.pipeline.judge.judge_responses` for PersonaLlama: the
    vocabulary score :func:`style_score` of the answer for the role (``question`` unused)."""
    return int(style_score(answer, role))
