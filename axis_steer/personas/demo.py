"""The whole job on the built-in persona model (``axis-steer demo --model
persona-llama``): :func:`axis_steer.pipeline.job.run_job` on PersonaLlama, with
its own role set, its vocabulary judge and its evaluation data.

The steps are the job's (axis, held-out checks, calibration, steering,
capped vs uncapped, no caps / always-on / latched caps, capability); what is
PersonaLlama's own:

* the judge of the axis responses is :func:`~axis_steer.personas.judge.style_judge`,
  and replies are scored by the vocabulary measures (:class:`StyleScorer`):
  role adherence is the style score / 3, the role measure of a text is its
  role-vocabulary rate, a text is in a role when one persona's vocabulary
  dominates it, and the Assistant score is the Assistant style score (0..3);
* the data: held-out questions, drift conversations, role prompts, hand-made
  default-Assistant conversations for perplexity and KL, and multiple choice
  on topic facts (``personas/data/eval``, made by ``training/persona_eval_data.py``),
  and the layer, window and steering coefficient in its ``config.json``;
* greedy replies, one CPU thread (the model is tiny).

A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from axis_steer.personas.catalog import ASSISTANT
from axis_steer.personas.judge import detect_persona, role_style_rate, style_judge, style_score
from axis_steer.personas.model import eval_data_dir, load_persona_model, role_data_dir
from axis_steer.pipeline.job import (
    JobData,
    JobSettings,
    JobSummary,
    ReplyScorer,
    claim_folder,
    read_jsonl,
    run_job,
)
from axis_steer.pipeline.judge import rank_auc
from axis_steer.pipeline.roles import load_role_set

__all__ = ["DemoSummary", "StyleScorer", "auc", "run_demo"]

DATA = eval_data_dir()
DemoSummary = JobSummary
#: ROC AUC by pair counting, ties half (:func:`axis_steer.pipeline.judge.rank_auc`).
auc = rank_auc


class StyleScorer(ReplyScorer):
    """PersonaLlama's replies scored by its vocabulary judge (see the module docs)."""

    name = "vocabulary judge"
    labels = {
        "adherence": "role adherence (style score / 3)",
        "role_rate": "role-vocabulary rate",
        "in_role": "replies in a persona's vocabulary",
        "assistant": "Assistant style score (of 3)",
    }

    def adherence(self, texts, roles):
        return np.array([style_score(t, r) / 3 for t, r in zip(texts, roles)], dtype=float)

    def role_rate(self, texts):
        return np.array([role_style_rate(t) for t in texts], dtype=float)

    def in_role(self, texts):
        return np.array([detect_persona(t) is not None for t in texts])

    def assistant(self, texts):
        return np.array([style_score(t, ASSISTANT) for t in texts], dtype=float)


def run_demo(
    out: str | Path = "runs/demo", *, quick: bool = False, device: str = "cpu", seed: int = 0
) -> JobSummary:
    """Runs the whole job on PersonaLlama (see the module docs); returns the summary it prints."""
    out = Path(out)
    cfg = json.loads((DATA / "config.json").read_text())
    claim_folder(out, {"quick": bool(quick), "seed": int(seed), "config": cfg})
    model, tok = load_persona_model(device=device)
    roles = load_role_set(role_data_dir())
    n_q = 3 if quick else 8
    held_q = read_jsonl(DATA / "heldout_questions.jsonl")[: 2 if quick else 6]
    heldout = replace(
        roles, questions=tuple(q["question"] for q in held_q), question_ids=tuple(q["id"] for q in held_q)
    )
    default_convs = [c["conversation"] for c in read_jsonl(DATA / "default_conversations.jsonl")][: 12 if quick else 40]
    role_prompts = [
        {"system": rc["system"], "user_turns": rc["user_turns"], "role": rc["persona"]}
        for rc in read_jsonl(DATA / "role_prompts.jsonl")[: 12 if quick else 36]
    ]
    data = JobData(
        roles=roles.select(n_questions=n_q),
        heldout=heldout,
        default_prompts=[c[:-1] for c in default_convs][: 8 if quick else 24],
        role_prompts=role_prompts,
        drift=read_jsonl(DATA / "drift.jsonl")[: 8 if quick else 16],
        default_conversations=default_convs,
        multiple_choice=read_jsonl(DATA / "multiple_choice.jsonl")[: 12 if quick else 40],
    )
    settings = JobSettings(
        layer=int(cfg["layer"]),
        window=tuple(cfg["window"]),
        steer=float(cfg["steer"]),
        max_new_tokens=int(cfg["max_new_tokens"]),
        eval_tokens=48,
        batch_size=16,
        min_count=max(5, n_q * 5 // 2),
        sampling=None,
        threads=1 if device == "cpu" else "auto",
        compare_role_prompts=8 if quick else 24,
        compare_drift=4 if quick else 8,
        seed=seed,
    )
    return run_job(
        model, tok, out, data=data, judge=style_judge, scorer=StyleScorer(), settings=settings, device=device,
        model_label="persona-llama",
    )
