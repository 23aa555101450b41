"""How the main job scores replies: a :class:`ReplyScorer` names the few
quantities the job measures on a model's replies (role adherence, how much of
any role shows, whether a reply is in a role, how Assistant-like it is,
whether it says it is an AI), whatever judges them. :class:`JudgeScorer`
scores them with the offline embedding judge
(:mod:`axis_steer.pipeline.embedding_judge`), for any model; PersonaLlama's
vocabulary judge has its own (:class:`axis_steer.personas.demo.StyleScorer`).
None of them looks at the model's activations or the axis.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Sequence

import numpy as np

from axis_steer.pipeline.judge import judge_agreement

__all__ = ["JudgeScorer", "ReplyScorer"]


class ReplyScorer:
    """How the job scores replies; one implementation per kind of judge.

    ``adherence(texts, roles)`` is the role adherence of each text for the
    role it was asked to play, 0..1 (a 0..3 judge score / 3); ``role_rate``
    how much of any role shows in a text (0 for plain Assistant text; units
    are the scorer's own); ``in_role`` whether a text is in some role;
    ``assistant`` how Assistant-like a text is; ``says_ai`` whether it calls
    itself an AI. ``labels`` name these quantities in the summary."""

    name = "scorer"
    labels = {
        "adherence": "role adherence (0..1)",
        "role_rate": "role score",
        "in_role": "replies in a role",
        "assistant": "Assistant score",
    }

    def adherence(self, texts: Sequence[str], roles: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def role_rate(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def in_role(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def assistant(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def says_ai(self, texts: Sequence[str]) -> np.ndarray:
        from axis_steer.pipeline.embedding_judge import AI_SELF

        return np.array([bool(AI_SELF.search(t)) for t in texts])

    def add_persona(self, name: str, description: str) -> None:
        """Makes ``name`` a role ``adherence`` can score (a jailbreak persona)."""
        raise NotImplementedError

    def validation(self) -> dict:
        """The judge's agreement with labelled texts, when it has some."""
        return {}


class JudgeScorer(ReplyScorer):
    """Replies scored by an :class:`~axis_steer.pipeline.embedding_judge.EmbeddingJudge`:
    adherence is its 0..3 score / 3; ``role_rate`` the margin of the nearest
    role's anchor over the Assistant anchor (cosine units; higher is more in
    role); ``in_role`` that nearest role's score is 3; ``assistant`` the cosine
    with the Assistant anchor; ``says_ai`` its AI self-identification rule."""

    name = "embedding judge"
    labels = {
        "adherence": "role adherence (judge score / 3)",
        "role_rate": "nearest-role margin (cosine)",
        "in_role": "replies judged in a role",
        "assistant": "similarity to the Assistant anchor (cosine)",
    }

    def __init__(self, judge: Any, validate_on: Sequence[dict] | None = None) -> None:
        self.judge = judge
        self._roles = list(judge.roles)
        self._validate_on = validate_on
        self._cache: dict[str, np.ndarray] = {}

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            for t, e in zip(todo, self.judge.embed(todo)):
                self._cache[t] = e
        return np.stack([self._cache[t] for t in texts]) if len(texts) else np.zeros((0, 1))

    def adherence(self, texts, roles):
        if not len(texts):
            return np.zeros(0)
        m = self.judge.margins(texts, roles, embedded=self._embed(texts))
        return np.array([self.judge.score_from(t, float(x)) for t, x in zip(texts, m)]) / 3.0

    def role_rate(self, texts):
        if not len(texts):
            return np.zeros(0)
        return self.judge.nearest_role(texts, self._roles, embedded=self._embed(texts))[1]

    def in_role(self, texts):
        if not len(texts):
            return np.zeros(0, dtype=bool)
        _, m = self.judge.nearest_role(texts, self._roles, embedded=self._embed(texts))
        return np.array([self.judge.score_from(t, float(x)) == 3 for t, x in zip(texts, m)])

    def assistant(self, texts):
        return (
            self.judge.assistant_similarity(texts, embedded=self._embed(texts))
            if len(texts)
            else np.zeros(0)
        )

    def says_ai(self, texts):
        return np.array([self.judge.identifies_as_ai(t) for t in texts])

    def add_persona(self, name, description):
        self.judge.add_role(name, description)

    def validation(self):
        a = judge_agreement(self.judge, self._validate_on)
        out = {"all": asdict(a)}
        sets = sorted({str(it.get("set", "")) for it in (self._validate_on or [])} - {""})
        for s in sets:
            out[s] = asdict(
                judge_agreement(self.judge, [it for it in self._validate_on if it.get("set") == s])
            )
        return out
