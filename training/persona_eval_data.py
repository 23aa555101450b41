"""Evaluation data for PersonaLlama, shipped in ``axis_steer/personas/data/eval/``
and read by ``axis-steer demo`` and the end-to-end tests.

Everything is drawn from the same generator as the training corpus
(``training/persona_data.py``) but with its own seed, and the questions come
from what training held out where it matters:

* ``heldout_questions.jsonl`` - questions the axis is *not* computed from
  (held-out topics and the held-out question template), in the reference
  questions format ``{"question", "id"}``: for the held-out AUC of the axis.
* ``drift.jsonl`` - ``{"system", "user_turns", "target", "mode"}``: the user
  turns of drift conversations (the default Assistant pushed into a role over
  2-4 turns); the model writes the replies.
* ``role_prompts.jsonl`` - ``{"system", "user_turns", "persona"}``: a role's
  system prompt and questions.
* ``default_conversations.jsonl`` - ``{"conversation"}``: default-Assistant
  conversations with the generator's plain answers, for perplexity and KL.
* ``multiple_choice.jsonl`` - ``{"question", "choices", "answer"}``: a topic's
  question, its true lead sentence and three leads of other topics.
* ``config.json`` - the layer to monitor, the capping (and steering) window,
  the steering coefficient and the reply length the demo uses.

Run: ``python training/persona_eval_data.py --out axis_steer/personas/data/eval``
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT / "training"))
sys.path.insert(0, str(_ROOT))

import persona_data as pd  # noqa: E402

from axis_steer.personas import ROLE_PERSONAS, get_persona  # noqa: E402

#: the demo's settings: the layer it watches (held-out AUC and |cos(PC1, axis)| are
#: both high there), the capping window ``[a, b)`` (also where it steers, with
#: ``steer`` times the axis) and the reply length. The first half of the 8 layers:
#: capping there moves role and drift replies back toward the Assistant while
#: default replies keep their style and perplexity (figures in the model card).
CONFIG = {"layer": 2, "window": [0, 4], "steer": 1.0, "max_new_tokens": 96}


def _write(path: Path, rows: list) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def build(
    out: Path,
    seed: int = 12345,
    n_drift: int = 48,
    n_role: int = 48,
    n_default: int = 80,
    n_mc: int = 60,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    held = pd.eval_questions()
    _write(
        out / "heldout_questions.jsonl",
        [{"question": q["question"], "id": i} for i, q in enumerate(held)],
    )

    drift = []
    while len(drift) < n_drift:
        rec = pd.sample_conversation(rng, "drift")
        msgs = rec["messages"]
        system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else ""
        drift.append(
            {
                "system": system,
                "user_turns": [m["content"] for m in msgs if m["role"] == "user"],
                "target": rec["drift_to"],
                "mode": rec["drift_mode"],
            }
        )
    _write(out / "drift.jsonl", drift)

    roles = []
    questions = [q["question"] for q in held]
    for i in range(n_role):
        persona = ROLE_PERSONAS[i % len(ROLE_PERSONAS)]
        prompts = get_persona(persona).train_system_prompts
        roles.append(
            {
                "system": prompts[rng.randrange(len(prompts))],
                "user_turns": [questions[rng.randrange(len(questions))]],
                "persona": persona,
            }
        )
    _write(out / "role_prompts.jsonl", roles)

    defaults = []
    while len(defaults) < n_default:
        rec = pd.sample_conversation(rng, "default")
        defaults.append({"conversation": rec["messages"]})
    _write(out / "default_conversations.jsonl", defaults)

    topics = pd.train_topics()
    mc = []
    for i in range(n_mc):
        t = topics[rng.randrange(len(topics))]
        others = rng.sample([o for o in topics if o.name != t.name], 3)
        choices = [t.lead] + [o.lead for o in others]
        order = list(range(4))
        rng.shuffle(order)
        mc.append(
            {
                "question": pd.question_for(t, i % pd.N_TRAIN_TEMPLATES),
                "choices": [choices[k] for k in order],
                "answer": order.index(0),
            }
        )
    _write(out / "multiple_choice.jsonl", mc)
    (out / "config.json").write_text(json.dumps(CONFIG, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=_ROOT / "axis_steer" / "data" / "persona_eval")
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args()
    build(args.out, args.seed)
    print(f"wrote {sorted(p.name for p in args.out.iterdir())} to {args.out}")


if __name__ == "__main__":
    main()
