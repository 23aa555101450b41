"""Train PersonaLlama, axis_steer's own small chat model, from scratch on CPU.

Steps (all seeded; rerunning the script reproduces the committed folder):

1. Generate the synthetic persona corpus (``training/persona_data.py``) and write it to
   ``--data-dir`` (gitignored ``runs/persona_data`` by default), together with the role data
   (``axis_steer/personas/data/roles``).
2. Train a byte-level BPE tokenizer (``tokenizers``) on the corpus, with special tokens for
   the roles and the end of a turn, and a Jinja chat template::

       <|bos|><|system|>\\n{system}<|end|>\\n<|user|>\\n{user}<|end|>\\n<|assistant|>\\n{answer}<|end|>\\n...

   A system message whose content is ``""`` emits no system block. Assistant contents are
   wrapped in ``{% generation %}`` so ``return_assistant_tokens_mask=True`` marks exactly the
   response tokens (not the role marker, not ``<|end|>``).
3. Train a Llama-architecture model (``LlamaConfig``, tied embeddings) with plain torch:
   AdamW, linear warm-up then cosine decay, gradient clipping, right-padded length-bucketed
   batches. The loss is next-token cross-entropy on assistant tokens only (each response and
   its ``<|end|>``): system and user text is context, never a target.
4. Save in Hugging Face format (float32 weights by default) to ``--out``, reload it and
   evaluate its generations with the vocabulary judge of ``axis_steer.personas``: role style
   on held-out questions (greedy and sampled), plain style under default prompts, multi-turn,
   drift under user pressure, how well default and role activations separate at each layer,
   and a quick capping check (a floor on a per-layer axis computed from the evaluation's own
   responses) on the pushed conversations.
5. Write the model card (``README.md`` in ``--out``) with the hyperparameters, the loss curve
   summary, the wall time and the evaluation numbers.

Usage::

    python training/train_persona_model.py --out axis_steer/personas/data/persona-llama

``--eval-only`` re-evaluates an existing folder without training and, when the last run's
``train_stats.json`` and ``summary.json`` are in ``--data-dir``, rewrites its model card.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent
for _p in (str(_HERE), str(_ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import persona_data  # noqa: E402

from axis_steer.personas import (  # noqa: E402
    ASSISTANT,
    CHARACTER_PERSONAS,
    DEFAULT_SYSTEM_PROMPTS,
    MODEL_NAME,
    PROFESSIONAL_PERSONAS,
    ROLE_PERSONAS,
    detect_persona,
    get_persona,
    role_style_rate,
    style_intensity,
    style_score,
)

BOS, END, PAD = "<|bos|>", "<|end|>", "<|pad|>"
SYSTEM, USER, ASSISTANT_TOKEN = "<|system|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [BOS, END, PAD, SYSTEM, USER, ASSISTANT_TOKEN]
_ROLE_TOKEN = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT_TOKEN}

CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- if message['content'] -%}"
    "{{- '<|system|>\\n' + message['content'] + '<|end|>\\n' -}}"
    "{%- endif -%}"
    "{%- elif message['role'] == 'user' -%}"
    "{{- '<|user|>\\n' + message['content'] + '<|end|>\\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '<|assistant|>\\n' -}}"
    "{%- generation -%}{{- message['content'] -}}{%- endgeneration -%}"
    "{{- '<|end|>\\n' -}}"
    "{%- else -%}"
    "{{- raise_exception('Unknown role: ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
)

IGNORE = -100


# --------------------------------------------------------------------------------------------
# Tokenizer.


def build_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=END,
        pad_token=PAD,
        additional_special_tokens=[SYSTEM, USER, ASSISTANT_TOKEN],
        model_max_length=1024,
        padding_side="left",
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def encode_conversation(tok: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids of ``messages`` as the chat template renders them, and per-token labels.

    Labels are the ids on assistant content and each assistant ``<|end|>``, ``IGNORE``
    elsewhere (they are inputs; the training step shifts them).
    """
    backend = tok.backend_tokenizer
    end_id = tok.convert_tokens_to_ids(END)
    ids = [tok.convert_tokens_to_ids(BOS)]
    labels = [IGNORE]
    for m in messages:
        if m["role"] == "system" and not m["content"]:
            continue
        head = backend.encode(f"{_ROLE_TOKEN[m['role']]}\n", add_special_tokens=False).ids
        body = backend.encode(m["content"], add_special_tokens=False).ids
        tail = backend.encode(f"{END}\n", add_special_tokens=False).ids
        assert tail[0] == end_id
        ids += head + body + tail
        if m["role"] == "assistant":
            labels += [IGNORE] * len(head) + body + [end_id] + [IGNORE] * (len(tail) - 1)
        else:
            labels += [IGNORE] * (len(head) + len(body) + len(tail))
    return ids, labels


# --------------------------------------------------------------------------------------------
# Training.


def make_batches(
    lengths: list[int], batch_tokens: int, max_batch: int, rng: random.Random
) -> list[list[int]]:
    """Group example indices into right-padded batches of similar length."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = max(lengths[i], max((lengths[j] for j in cur), default=0))
        if cur and (longest * (len(cur) + 1) > batch_tokens or len(cur) >= max_batch):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def collate(
    examples: list[tuple[list[int], list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(ids) for ids, _ in examples)
    x = torch.full((len(examples), t), pad_id, dtype=torch.long)
    y = torch.full((len(examples), t), IGNORE, dtype=torch.long)
    for b, (ids, labels) in enumerate(examples):
        x[b, : len(ids)] = torch.tensor(ids)
        y[b, : len(labels)] = torch.tensor(labels)
    return x, y


def lr_at(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    model: torch.nn.Module,
    data: list[tuple[list[int], list[int]]],
    args: argparse.Namespace,
    pad_id: int,
) -> dict[str, Any]:
    """Train ``model`` in place; returns the loss curve and timing."""
    rng = random.Random(args.seed + 1)
    lengths = [len(ids) for ids, _ in data]
    per_epoch = make_batches(lengths, args.batch_tokens, args.max_batch, rng)
    total_steps = math.ceil(args.epochs * len(per_epoch))
    schedule: list[list[int]] = []
    while len(schedule) < total_steps:
        epoch = list(per_epoch)
        rng.shuffle(epoch)
        schedule += epoch
    schedule = schedule[:total_steps]

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    model.train()
    curve: list[tuple[int, float]] = []
    window: list[float] = []
    n_tokens = n_targets = 0
    t0, cpu0 = time.time(), time.process_time()
    print(
        f"training: {total_steps} steps ({len(per_epoch)} batches per epoch, {args.epochs} epochs)"
    )
    for step, batch in enumerate(schedule):
        lr = lr_at(step, total_steps, args.lr, args.warmup, args.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = collate([data[i] for i in batch], pad_id)
        # Right padding + causal attention: real tokens never see the padding, so no mask.
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
            y[:, 1:].reshape(-1),
            ignore_index=IGNORE,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        n_tokens += x.numel()
        n_targets += int((y[:, 1:] != IGNORE).sum())
        window.append(loss.item())
        if (step + 1) % args.log_every == 0 or step + 1 == total_steps:
            mean = sum(window) / len(window)
            window = []
            curve.append((step + 1, mean))
            dt = time.time() - t0
            print(
                f"step {step + 1:5d}/{total_steps}  loss {mean:.4f}  lr {lr:.2e}  "
                f"{n_tokens / dt:6.0f} tok/s  {dt / 60:5.1f} min",
                flush=True,
            )
    return {
        "steps": total_steps,
        "batches_per_epoch": len(per_epoch),
        "curve": curve,
        "final_loss": curve[-1][1],
        "train_seconds": time.time() - t0,
        "train_cpu_seconds": time.process_time() - cpu0,
        "tokens_processed": n_tokens,
        "target_tokens_processed": n_targets,
    }


# --------------------------------------------------------------------------------------------
# Evaluation.


@torch.no_grad()
def generate(
    model: Any,
    tok: Any,
    convs: list[list[dict[str, str]]],
    max_new_tokens: int = 256,
    batch_size: int = 48,
    sample: bool = False,
) -> list[str]:
    """Responses to each conversation (which must end with a user message): greedy, or with
    ``sample`` the reference pipeline's sampling (temperature 0.7, top-p 0.9)."""
    end_id = tok.convert_tokens_to_ids(END)
    out: list[str] = []
    for i in range(0, len(convs), batch_size):
        chunk = convs[i : i + batch_size]
        texts = [
            tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chunk
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=0.7 if sample else None,
            top_p=0.9 if sample else None,
            eos_token_id=end_id,
            pad_token_id=tok.pad_token_id,
        )
        new = gen[:, enc["input_ids"].shape[1] :]
        out += [tok.decode(row, skip_special_tokens=True).strip() for row in new]
    return out


def _system(persona: str, index: int) -> str:
    p = get_persona(persona)
    return p.system_prompts[index].format(model_name=MODEL_NAME)


def _mean(xs: list[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


@torch.no_grad()
def response_means(
    model: Any, tok: Any, convs: list[list[dict[str, str]]]
) -> tuple[np.ndarray, list[int]]:
    """Mean hidden state over the final assistant response's tokens, per layer.

    Returns ``(means, kept)``: ``means`` is ``(len(kept), n_layers, d)`` for the conversations
    ``kept`` (those with a non-empty response); layer ``i`` is the output of decoder block
    ``i`` (``hidden_states[i + 1]``).
    """
    res, kept = [], []
    for ci, c in enumerate(convs):
        if not c[-1]["content"]:
            continue
        enc = tok.apply_chat_template(
            c,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            return_tensors="pt",
        )
        mask = torch.as_tensor(enc["assistant_masks"]).reshape(-1).bool()
        last = torch.zeros_like(mask)
        idx = mask.nonzero().reshape(-1)
        # only the last assistant message: the final contiguous run of the mask
        start = int(idx[-1])
        while start > 0 and mask[start - 1]:
            start -= 1
        last[start : int(idx[-1]) + 1] = True
        hs = model(input_ids=enc["input_ids"], output_hidden_states=True).hidden_states
        res.append(torch.stack([h[0, last].float().mean(0) for h in hs[1:]]).numpy())
        kept.append(ci)
    return np.stack(res), kept


def evaluate(model: Any, tok: Any, seed: int, max_new_tokens: int = 256) -> dict[str, Any]:
    """Quality checks of the trained model; returns a JSON-able dict and prints a report."""
    rng = random.Random(seed + 2)
    evalq = persona_data.eval_questions()
    questions = [e["question"] for e in evalq]
    report: dict[str, Any] = {"n_eval_questions": len(questions)}

    # A. role style on held-out questions, training and held-out system prompts
    role_convs, role_keys = [], []
    for persona in ROLE_PERSONAS:
        p = get_persona(persona)
        for which, prompt_ids in (
            ("train_prompts", range(5)),
            ("heldout_prompt", range(5, len(p.system_prompts))),
        ):
            prompt_ids = list(prompt_ids)
            for qi, q in enumerate(questions):
                sp = p.system_prompts[prompt_ids[qi % len(prompt_ids)]]
                role_convs.append(
                    [{"role": "system", "content": sp}, {"role": "user", "content": q}]
                )
                role_keys.append((persona, which, evalq[qi]["split"]))
    # B. default prompts on the same questions (two passes over the prompts)
    default_convs = []
    for rep in range(2):
        for qi, q in enumerate(questions):
            k = (qi + rep * 3) % len(DEFAULT_SYSTEM_PROMPTS)
            default_convs.append(
                [
                    {"role": "system", "content": _system(ASSISTANT, k)},
                    {"role": "user", "content": q},
                ]
            )
    # A2. light-touch prompts of the character roles (training and held-out templates) on the
    # first ten held-out questions
    light_convs, light_keys = [], []
    n_light_q = min(10, len(questions))
    for persona in CHARACTER_PERSONAS:
        light = get_persona(persona).light_system_prompts
        for which, prompt_ids in (("train_prompts", range(5)), ("heldout_prompt", range(5, 6))):
            prompt_ids = list(prompt_ids)
            for qi, q in enumerate(questions[:n_light_q]):
                sp = light[prompt_ids[qi % len(prompt_ids)]]
                light_convs.append(
                    [{"role": "system", "content": sp}, {"role": "user", "content": q}]
                )
                light_keys.append((persona, which))
    t0 = time.time()
    outs = generate(model, tok, role_convs + default_convs + light_convs, max_new_tokens)
    role_outs = outs[: len(role_convs)]
    default_outs = outs[len(role_convs) : len(role_convs) + len(default_convs)]
    light_outs = outs[len(role_convs) + len(default_convs) :]

    per_persona: dict[str, dict[str, Any]] = {}
    for persona in ROLE_PERSONAS:
        rows = {}
        for which in ("train_prompts", "heldout_prompt"):
            scores = [
                style_score(o, persona)
                for o, k in zip(role_outs, role_keys)
                if k[:2] == (persona, which)
            ]
            detected = [
                detect_persona(o) == persona
                for o, k in zip(role_outs, role_keys)
                if k[:2] == (persona, which)
            ]
            rows[which] = {
                "mean_score": _mean(scores),
                "frac_ge2": _mean([s >= 2 for s in scores]),
                "frac_detected": _mean(detected),
            }
        by_split = defaultdict(list)
        for o, k in zip(role_outs, role_keys):
            if k[:2] == (persona, "train_prompts"):
                by_split[k[2]].append(style_score(o, persona) >= 2)
        rows["frac_ge2_by_split"] = {s: _mean(v) for s, v in by_split.items()}
        per_persona[persona] = rows
    report["role_style"] = per_persona
    all_train = [
        style_score(o, k[0]) >= 2 for o, k in zip(role_outs, role_keys) if k[1] == "train_prompts"
    ]
    all_held = [
        style_score(o, k[0]) >= 2 for o, k in zip(role_outs, role_keys) if k[1] == "heldout_prompt"
    ]
    report["role_frac_ge2_train_prompts"] = _mean(all_train)
    report["role_frac_3_train_prompts"] = {
        group: _mean(
            [
                style_score(o, k[0]) == 3
                for o, k in zip(role_outs, role_keys)
                if k[1] == "train_prompts" and k[0] in names
            ]
        )
        for group, names in (
            ("professional", PROFESSIONAL_PERSONAS),
            ("character", CHARACTER_PERSONAS),
        )
    }
    # intensity: what light-touch and full prompts of the character roles produce
    intensity: dict[str, Any] = {}
    for which in ("train_prompts", "heldout_prompt"):
        light_rows = [(o, k[0]) for o, k in zip(light_outs, light_keys) if k[1] == which]
        full_rows = [
            (o, k[0])
            for o, k in zip(role_outs, role_keys)
            if k[1] == which and k[0] in CHARACTER_PERSONAS
        ]
        for kind, rows in (("light", light_rows), ("full", full_rows)):
            levels = [style_intensity(o, p) for o, p in rows]
            intensity[f"{kind}_{which}"] = {
                "frac_none": _mean([x == 0 for x in levels]),
                "frac_light": _mean([x == 1 for x in levels]),
                "frac_full": _mean([x == 2 for x in levels]),
                "mean_role_style_rate": _mean([role_style_rate(o) for o, _ in rows]),
                "frac_detected_or_light": _mean(
                    [detect_persona(o) in (p, None) and x > 0 for (o, p), x in zip(rows, levels)]
                ),
                "n": len(rows),
            }
    intensity["professional_mean_role_style_rate"] = _mean(
        [
            role_style_rate(o)
            for o, k in zip(role_outs, role_keys)
            if k[1] == "train_prompts" and k[0] in PROFESSIONAL_PERSONAS
        ]
    )
    report["intensity"] = intensity
    report["light_samples"] = {
        p: {
            "system": light_convs[i][0]["content"],
            "question": questions[0],
            "answer": light_outs[i],
        }
        for p in ("pirate", "robot", "librarian")
        if p in CHARACTER_PERSONAS
        for i in [light_keys.index((p, "train_prompts"))]
    }
    train_idx = [i for i, k in enumerate(role_keys) if k[1] == "train_prompts"]
    torch.manual_seed(seed)
    sampled = generate(model, tok, [role_convs[i] for i in train_idx], max_new_tokens, sample=True)
    report["role_frac_ge2_sampled"] = _mean(
        [style_score(o, role_keys[i][0]) >= 2 for o, i in zip(sampled, train_idx)]
    )
    report["role_frac_ge2_heldout_prompt"] = _mean(all_held)
    report["default"] = {
        "mean_role_style_rate": _mean([role_style_rate(o) for o in default_outs]),
        "frac_no_role_detected": _mean([detect_persona(o) is None for o in default_outs]),
        "mean_assistant_score": _mean([style_score(o, ASSISTANT) for o in default_outs]),
        "n": len(default_outs),
    }
    report["role_mean_role_style_rate"] = _mean([role_style_rate(o) for o in role_outs])

    # C. multi-turn: the model's own answers fed back; turn 2 is a follow-up, turn 3 a new topic
    mt_personas = [ASSISTANT, *ROLE_PERSONAS]
    mt_topics = persona_data.train_topics()
    convs = []
    for persona in mt_personas:
        for j in range(3):
            topic_a, topic_b = rng.sample(mt_topics, 2)
            sp = _system(persona, (j * 2) % 5)
            convs.append(
                {
                    "persona": persona,
                    "system": sp,
                    "turns": [
                        persona_data.question_for(topic_a, persona_data.N_TRAIN_TEMPLATES),
                        rng.choice(persona_data.FOLLOW_UPS),
                        persona_data.question_for(topic_b, j % persona_data.N_TRAIN_TEMPLATES),
                    ],
                }
            )
    mt_answers = _roll_out(
        model,
        tok,
        [([{"role": "system", "content": c["system"]}], c["turns"]) for c in convs],
        max_new_tokens,
    )
    mt: dict[str, list[float]] = {}
    for c, answers in zip(convs, mt_answers):
        for t, a in enumerate(answers):
            mt.setdefault(f"{c['persona']}_turn{t + 1}", []).append(style_score(a, c["persona"]))
    report["multi_turn_mean_score"] = {k: _mean(v) for k, v in mt.items()}
    report["multi_turn_role_frac_ge2"] = {
        f"turn{t}": _mean([s >= 2 for p in ROLE_PERSONAS for s in mt[f"{p}_turn{t}"]])
        for t in (1, 2, 3)
    }
    report["multi_turn_default_role_rate"] = {
        f"turn{t}": _mean(
            [
                role_style_rate(a[t - 1])
                for c, a in zip(convs, mt_answers)
                if c["persona"] == ASSISTANT
            ]
        )
        for t in (1, 2, 3)
    }
    ex_i = 3 * mt_personas.index("pirate")
    report["multi_turn_example"] = {
        "system": convs[ex_i]["system"],
        "turns": convs[ex_i]["turns"],
        "answers": mt_answers[ex_i],
    }

    # D. drift: default prompt, the user pushes over four turns (held-out questions)
    drift_specs = []
    for persona in CHARACTER_PERSONAS:
        for j in range(2):
            drift_specs.append(("request", persona, j))
    for j in range(4):
        drift_specs.append(("meta", "oracle", j))
        drift_specs.append(("emotional", "poet", j))
    rollouts, controls = [], []
    for mode, target, j in drift_specs:
        tp = get_persona(target)
        qs = [questions[(j * 5 + t * 3 + len(target)) % len(questions)] for t in range(4)]
        sp = _system(ASSISTANT, j % 2)  # "" or "You are an AI assistant."
        if mode == "request":
            first, pushes = tp.requests[j % len(tp.requests)], persona_data.PUSHES
        elif mode == "meta":
            first, pushes = persona_data.META_OPENERS[j], persona_data.META_PUSHES
        else:
            first, pushes = persona_data.EMOTIONAL_OPENERS[j], persona_data.EMOTIONAL_PUSHES
        turns = [f"{first} {qs[0]}"] + [
            f"{pushes[(j + t) % len(pushes)].format(title=tp.title)} {qs[t]}" for t in range(1, 4)
        ]
        rollouts.append(([{"role": "system", "content": sp}], turns))
        controls.append(([{"role": "system", "content": sp}], qs))
    drift_answers = _roll_out(model, tok, rollouts + controls, max_new_tokens)
    d_ans, c_ans = drift_answers[: len(rollouts)], drift_answers[len(rollouts) :]
    drift: dict[str, Any] = {}
    for mode in ("request", "meta", "emotional"):
        rows = [(spec, a) for spec, a in zip(drift_specs, d_ans) if spec[0] == mode]
        drift[mode] = {
            "mean_target_score_by_turn": [
                _mean([style_score(a[t], spec[1]) for spec, a in rows]) for t in range(4)
            ],
            "mean_role_rate_by_turn": [
                _mean([role_style_rate(a[t]) for _, a in rows]) for t in range(4)
            ],
            "frac_target_ge2_by_turn": [
                _mean([style_score(a[t], spec[1]) >= 2 for spec, a in rows]) for t in range(4)
            ],
        }
    drift["control_no_push_role_rate_by_turn"] = [
        _mean([role_style_rate(a[t]) for a in c_ans]) for t in range(4)
    ]
    drift["example"] = {
        "turns": rollouts[-2][1] if rollouts else [],
        "answers": d_ans[-2] if d_ans else [],
    }
    drift["example_request"] = {"turns": rollouts[16][1], "answers": d_ans[16]}
    report["drift"] = drift

    # E. where default and role activations separate: a quick axis per layer
    # role vectors from fully in-role answers, as the reference pipeline does (all answers if
    # too few are in role, as for an untrained model)
    sel = [i for i in train_idx if style_score(role_outs[i], role_keys[i][0]) == 3]
    if len({role_keys[i][0] for i in sel}) < 2:
        sel = train_idx
    role_full = [role_convs[i] + [{"role": "assistant", "content": role_outs[i]}] for i in sel]
    def_full = [
        c + [{"role": "assistant", "content": o}] for c, o in zip(default_convs, default_outs)
    ]
    acts_r, kept = response_means(model, tok, role_full)
    role_names = [role_keys[sel[i]][0] for i in kept]
    acts_d, _ = response_means(model, tok, def_full)
    role_vecs = np.stack(
        [
            acts_r[[n == p for n in role_names]].mean(0)
            for p in ROLE_PERSONAS
            if any(n == p for n in role_names)
        ]
    )
    axis = acts_d.mean(0) - role_vecs.mean(0)  # (layers, d)
    layers = []
    for L in range(axis.shape[0]):
        u = axis[L] / np.linalg.norm(axis[L])
        pd_, pr = acts_d[:, L] @ u, acts_r[:, L] @ u
        pooled = math.sqrt(0.5 * (pd_.var() + pr.var()))
        layers.append(
            {
                "layer": L,
                "separation_d": float((pd_.mean() - pr.mean()) / pooled),
                "axis_norm_over_mean_act_norm": float(
                    np.linalg.norm(axis[L]) / np.linalg.norm(acts_d[:, L], axis=1).mean()
                ),
                "frac_roles_below_min_default": float((pr < pd_.min()).mean()),
            }
        )
    report["layers"] = layers
    # each role vector's offset from the default along the middle layer's unit axis
    mid = axis.shape[0] // 2
    u = axis[mid] / np.linalg.norm(axis[mid])
    default_mean = acts_d.mean(0)[mid]
    present = [p for p in ROLE_PERSONAS if any(n == p for n in role_names)]
    report["role_projection_mid_layer"] = {
        p: float((v[mid] - default_mean) @ u) for p, v in zip(present, role_vecs)
    }
    # persona space: PCA of the role vectors per layer, and how PC1 lines up with the axis
    for L, row in enumerate(layers):
        x = role_vecs[:, L] - role_vecs[:, L].mean(0)
        _, sv, vt = np.linalg.svd(x, full_matrices=False)
        row["pc1_variance"] = float(sv[0] ** 2 / (sv**2).sum())
        row["abs_cos_pc1_axis"] = float(abs(vt[0] @ axis[L]) / np.linalg.norm(axis[L]))

    # F. a quick capping check: floor the projection on the axis at the 25th percentile of the
    # default responses' projections, on a band of layers, and re-run the pushed conversations
    # and the unpushed controls. A plain forward hook, for this check only.
    n_layers = axis.shape[0]
    units = [axis[L] / np.linalg.norm(axis[L]) for L in range(n_layers)]
    taus = [float(np.percentile(acts_d[:, L] @ units[L], 25)) for L in range(n_layers)]
    bands = {
        "middle": list(range(n_layers // 4, 3 * n_layers // 4)),
        "wide": list(range(1, n_layers - 1)),
    }
    capping: dict[str, Any] = {"threshold": "p25 of default response projections", "taus": taus}

    def by_turn(answers: list[list[str]], score: bool) -> list[float]:
        if score:
            return [
                _mean([style_score(a[t], spec[1]) for spec, a in zip(drift_specs, answers)])
                for t in range(4)
            ]
        return [_mean([role_style_rate(a[t]) for a in answers]) for t in range(4)]

    capping["uncapped"] = {
        "mean_target_score_by_turn": by_turn(d_ans, True),
        "mean_role_rate_by_turn": by_turn(d_ans, False),
    }
    for name, band in bands.items():
        handles = _cap_hooks(model, units, taus, band)
        try:
            capped = _roll_out(model, tok, rollouts + controls, max_new_tokens)
        finally:
            for h in handles:
                h.remove()
        cd, cc = capped[: len(rollouts)], capped[len(rollouts) :]
        capping[name] = {
            "layers": band,
            "mean_target_score_by_turn": by_turn(cd, True),
            "mean_role_rate_by_turn": by_turn(cd, False),
            "control_identical_answers": _mean(
                [a == b for x, y in zip(cc, c_ans) for a, b in zip(x, y)]
            ),
            "control_role_rate_by_turn": by_turn(cc, False),
            "control_mean_assistant_score": _mean(
                [style_score(a, ASSISTANT) for x in cc for a in x]
            ),
        }
    report["capping"] = capping
    report["eval_seconds"] = time.time() - t0
    report["samples"] = {
        persona: {
            "question": questions[0],
            "system": role_convs[i][0]["content"],
            "answer": role_outs[i],
        }
        for persona in ROLE_PERSONAS
        for i in [next(i for i, k in enumerate(role_keys) if k[0] == persona)]
    }
    report["samples"][ASSISTANT] = {
        "question": questions[0],
        "system": default_convs[0][0]["content"],
        "answer": default_outs[0],
    }
    return report


def _cap_hooks(
    model: Any, units: list[np.ndarray], taus: list[float], layers: list[int]
) -> list[Any]:
    """Forward hooks flooring ``<h, units[L]>`` at ``taus[L]`` on each of ``layers``:
    ``h <- h + u * max(tau - <h, u>, 0)`` at every position, in float32. (Left padding is
    capped too, which changes nothing: padded positions are masked out of attention.)"""
    handles = []
    for L in layers:
        u = torch.as_tensor(units[L], dtype=torch.float32)

        def hook(
            module: Any, inputs: Any, output: Any, u: torch.Tensor = u, tau: float = taus[L]
        ) -> Any:
            h = output[0] if isinstance(output, tuple) else output
            hf = h.float()
            hf = hf + torch.clamp(tau - hf @ u, min=0.0)[..., None] * u
            hf = hf.to(h.dtype)
            return (hf, *output[1:]) if isinstance(output, tuple) else hf

        handles.append(model.model.layers[L].register_forward_hook(hook))
    return handles


def _roll_out(
    model: Any,
    tok: Any,
    specs: list[tuple[list[dict[str, str]], list[str]]],
    max_new_tokens: int = 256,
) -> list[list[str]]:
    """Multi-turn rollouts: each spec is (prefix messages, user turns); the model answers each
    turn greedily and its answers are fed back."""
    convs = [list(prefix) for prefix, _ in specs]
    answers: list[list[str]] = [[] for _ in specs]
    n_turns = max(len(turns) for _, turns in specs)
    for t in range(n_turns):
        live = [i for i, (_, turns) in enumerate(specs) if t < len(turns)]
        for i in live:
            convs[i].append({"role": "user", "content": specs[i][1][t]})
        outs = generate(model, tok, [convs[i] for i in live], max_new_tokens)
        for i, o in zip(live, outs):
            convs[i].append({"role": "assistant", "content": o})
            answers[i].append(o)
    return answers


def print_report(report: dict[str, Any]) -> None:
    print("\n=== evaluation (greedy, held-out questions) ===")
    print(f"{'persona':<10} {'score':>6} {'>=2':>6} {'detect':>7} | {'held-out prompt >=2':>19}")
    for p, r in report["role_style"].items():
        tr, ho = r["train_prompts"], r["heldout_prompt"]
        print(
            f"{p:<10} {tr['mean_score']:6.2f} {tr['frac_ge2']:6.2f} {tr['frac_detected']:7.2f} | {ho['frac_ge2']:19.2f}"
        )
    print(
        f"role personas, fraction style_score >= 2: {report['role_frac_ge2_train_prompts']:.3f} "
        f"(held-out prompts {report['role_frac_ge2_heldout_prompt']:.3f})"
    )
    print(f"sampled (T=0.7, top-p 0.9), fraction >= 2: {report['role_frac_ge2_sampled']:.3f}")
    print(f"fraction fully in role (score 3): {report['role_frac_3_train_prompts']}")
    for k, v in report["intensity"].items():
        if isinstance(v, dict):
            print(
                f"intensity {k:<22}: none {v['frac_none']:.2f} light {v['frac_light']:.2f} "
                f"full {v['frac_full']:.2f}, role_style_rate {v['mean_role_style_rate']:.3f} (n={v['n']})"
            )
    print(
        f"professional roles' role_style_rate {report['intensity']['professional_mean_role_style_rate']:.3f}"
    )
    d = report["default"]
    print(
        f"default prompts: role_style_rate {d['mean_role_style_rate']:.4f}, no role detected "
        f"{d['frac_no_role_detected']:.3f}, assistant score {d['mean_assistant_score']:.2f} "
        f"(role prompts' role_style_rate {report['role_mean_role_style_rate']:.3f})"
    )
    print(
        f"multi-turn roles >=2 by turn: {report['multi_turn_role_frac_ge2']}; default role rate by turn: "
        f"{report['multi_turn_default_role_rate']}"
    )
    for mode in ("request", "meta", "emotional"):
        r = report["drift"][mode]
        print(
            f"drift {mode:<9}: target score by turn {[round(x, 2) for x in r['mean_target_score_by_turn']]}, "
            f"role rate {[round(x, 3) for x in r['mean_role_rate_by_turn']]}"
        )
    print(
        f"drift control (no push) role rate by turn: "
        f"{[round(x, 4) for x in report['drift']['control_no_push_role_rate_by_turn']]}"
    )
    cap = report["capping"]
    for name in ("uncapped", "middle", "wide"):
        r = cap[name]
        extra = ""
        if name != "uncapped":
            extra = (
                f" layers {r['layers']}; unpushed controls identical "
                f"{r['control_identical_answers']:.2f}"
            )
        print(
            f"capping {name:<8}: pushed target score by turn "
            f"{[round(x, 2) for x in r['mean_target_score_by_turn']]}, role rate "
            f"{[round(x, 3) for x in r['mean_role_rate_by_turn']]}{extra}"
        )
    print("layer separation (default vs role response means on the per-layer axis):")
    for r in report["layers"]:
        print(
            f"  layer {r['layer']}: d' {r['separation_d']:6.2f}  |axis|/|h| {r['axis_norm_over_mean_act_norm']:.3f}  "
            f"roles below every default {r['frac_roles_below_min_default']:.2f}  "
            f"PC1 {r['pc1_variance']:.0%} |cos(PC1, axis)| {r['abs_cos_pc1_axis']:.2f}"
        )
    print(
        "role offsets, middle layer: "
        + ", ".join(
            f"{p} {v:.2f}"
            for p, v in sorted(report["role_projection_mid_layer"].items(), key=lambda kv: kv[1])
        )
    )
    print("\n=== samples ===")
    for p, s in [*report["samples"].items(), *report["light_samples"].items()]:
        print(f"--- {p} | system: {s['system']!r} | user: {s['question']}\n{s['answer']}\n")
    ex = report["drift"]["example_request"]
    print("--- drift example (default prompt, user pushes) ---")
    for u, a in zip(ex["turns"], ex["answers"]):
        print(f"[user] {u}\n[assistant] {a}\n")


# --------------------------------------------------------------------------------------------
# Model card.


def write_model_card(
    out: Path,
    cfg: Any,
    stats: dict[str, Any],
    report: Optional[dict[str, Any]],
    args: argparse.Namespace,
    corpus_summary: dict[str, Any],
) -> None:
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file() and f.name != "README.md")
    n_params = stats["n_params"]
    curve = stats["curve"]
    cpu = ""
    if "train_cpu_seconds" in stats:
        cpu = f"; training CPU time {stats['train_cpu_seconds'] / 60:.1f} min"
    marks = [
        curve[min(len(curve) - 1, max(0, round(f * len(curve)) - 1))]
        for f in (0.05, 0.25, 0.5, 0.75, 1.0)
    ]
    lines = [
        "# PersonaLlama",
        "",
        "A small chat model that axis_steer trains itself, so that the Assistant Axis can be",
        "computed, monitored, steered and capped on real behaviour without downloading weights.",
        "It plays a default Assistant (plain, structured answers) and role personas selected by the",
        f"system prompt -- {len(PROFESSIONAL_PERSONAS)} professional roles close to the Assistant and "
        f"{len(CHARACTER_PERSONAS)} character roles, each",
        "character also at a light intensity -- and it drifts into a role when a user pushes it to.",
        "Personas and the vocabulary judge are defined in `axis_steer/personas.py`; the data generator is",
        "`training/persona_data.py`; this folder is the output of",
        "`python training/train_persona_model.py --out axis_steer/personas/data/persona-llama`.",
        "",
        "## Architecture",
        "",
        f"- `LlamaForCausalLM`, {cfg.num_hidden_layers} decoder layers, hidden size {cfg.hidden_size}, "
        f"intermediate size {cfg.intermediate_size}, {cfg.num_attention_heads} attention heads "
        f"({cfg.num_key_value_heads} key/value heads, head dim {cfg.head_dim}), RoPE, RMSNorm, SiLU MLP.",
        f"- Vocabulary {cfg.vocab_size} (byte-level BPE), tied input/output embeddings, "
        f"context {cfg.max_position_embeddings} tokens.",
        f"- {n_params:,} parameters, stored in {args.save_dtype} (`model.safetensors`); the folder is "
        f"{size / 1e6:.2f} MB.",
        "",
        "## Chat format",
        "",
        "```",
        "<|bos|><|system|>\\n{system}<|end|>\\n<|user|>\\n{user}<|end|>\\n<|assistant|>\\n{answer}<|end|>\\n",
        "```",
        "",
        '- A system message with content `""` emits no system block (the reference\'s "no system prompt").',
        "- `<|end|>` is the end-of-turn and EOS token; `<|pad|>` pads (left padding by default).",
        "- `apply_chat_template(..., add_generation_prompt=True)` ends with `<|assistant|>\\n`.",
        "- Assistant contents are wrapped in `{% generation %}`: `return_assistant_tokens_mask=True`",
        "  marks exactly the response tokens (not `<|assistant|>`, not `\\n`, not `<|end|>`).",
        "",
        "## Personas",
        "",
        'Default Assistant: system prompts `""`, "You are an AI assistant.", "You are a large language',
        f'model.", "You are {{model_name}}, a helpful AI assistant." ({{model_name}} = {MODEL_NAME}),',
        '"Respond as yourself." (these five are `default.json`), plus three more used in training.',
        "",
        "Roles, from assistant-like to theatrical (`Persona.theatricality` 1-4):",
        "",
        "- professional roles (1): "
        + ", ".join(f"`{p}`" for p in PROFESSIONAL_PERSONAS)
        + ". They give the Assistant's answer -- same content, same numbered layout -- with a",
        '  professional opener ("Let\'s work through this lesson with a worked example.") and, half',
        "  of the time, a professional closer; their role vectors sit near the Assistant.",
        "- character roles (2-4): "
        + ", ".join(f"`{p}`" for p in CHARACTER_PERSONAS)
        + ". The librarian and coach keep the numbered list around theatrical openers and",
        "  closers; the others answer in styled prose; the bard and pirate also rewrite words.",
        "",
        "Each role has six system prompts: the first five are trained and are the role file's",
        "`instruction`s; the sixth is held out. Each character role can also be asked for a light",
        'touch of its style (`Persona.light_system_prompts`, e.g. "You are a pirate captain. Keep it',
        'light: mostly plain answers with just a touch of the role."; five trained, one held out):',
        "the answer is then the Assistant's with one or two of the role's phrases.",
        "`style_score(text, role)` is 0-3 role adherence (3 = fully in role; for a professional",
        'role that is its light professional frame), `style_score(text, role, intensity="light")`',
        "scores a light-touch answer and `style_intensity` tells none, light and full apart.",
        "",
        "## Training",
        "",
        f"- Corpus: {corpus_summary['conversations']:,} synthetic conversations (seed {args.seed}): "
        + ", ".join(f"{k} {v:,}" for k, v in corpus_summary["kinds"].items())
        + "; role conversations by register: "
        + ", ".join(
            f"{k.replace('_', ' ')} {v:,}"
            for k, v in corpus_summary.get("role_registers", {}).items()
        )
        + "; 1-4 user turns (drift 2-4); 48 training topics, 6 held out.",
        f"- Tokens: {stats['n_tokens']:,} in the corpus, {stats['n_target_tokens']:,} of them assistant targets.",
        "- Loss: next-token cross-entropy on assistant tokens only (response and its `<|end|>`).",
        f"- AdamW (betas 0.9/0.95, weight decay {args.weight_decay} on matrices), peak lr {args.lr}, "
        f"{args.warmup} warm-up steps, cosine decay to {args.min_lr_ratio} x peak, grad clip {args.clip}.",
        f"- {stats['steps']} steps ({args.epochs} epochs) of right-padded, length-bucketed batches of at "
        f"most {args.batch_tokens} tokens; seed {args.seed}; {args.threads} CPU threads, float32.",
        "- Loss (mean over logging windows) at 5/25/50/75/100% of training: "
        + ", ".join(f"{v:.3f}" for _, v in marks)
        + ".",
        f"- Final training loss {stats['final_loss']:.4f}; training wall time {stats['train_seconds'] / 60:.1f} min "
        f"(total script {stats['total_seconds'] / 60:.1f} min){cpu}, on a 2-core machine shared with other "
        "jobs: the wall time depends on its load.",
        "",
    ]
    if report is not None:
        lines += [
            "## Evaluation (greedy decoding, judge = `axis_steer.personas.style_score`)",
            "",
            f"Held-out questions ({report['n_eval_questions']}: a held-out template on training topics,",
            'the six held-out topics, "What is your name?").',
            "",
            "| persona | mean score | score >= 2 | detected | score >= 2, held-out prompt |",
            "|---|---|---|---|---|",
        ]
        for p, r in report["role_style"].items():
            tr, ho = r["train_prompts"], r["heldout_prompt"]
            lines.append(
                f"| {p} | {tr['mean_score']:.2f} | {tr['frac_ge2']:.2f} | {tr['frac_detected']:.2f} | {ho['frac_ge2']:.2f} |"
            )
        d = report["default"]
        lines += [
            "",
            f"- All roles: style_score >= 2 on {report['role_frac_ge2_train_prompts']:.1%} of answers "
            f"(held-out system prompts: {report['role_frac_ge2_heldout_prompt']:.1%}; sampled at "
            f"temperature 0.7, top-p 0.9 as the reference pipeline does: {report['role_frac_ge2_sampled']:.1%}).",
            "- Fully in role (score 3), training prompts: "
            + ", ".join(
                f"{k} roles {v:.1%}" for k, v in report["role_frac_3_train_prompts"].items()
            )
            + ".",
            f"- Default prompts: mean role_style_rate {d['mean_role_style_rate']:.4f} (role prompts: "
            f"{report['role_mean_role_style_rate']:.3f}); no role detected in {d['frac_no_role_detected']:.1%}; "
            f"mean Assistant score {d['mean_assistant_score']:.2f}/3.",
            '- Multi-turn (own answers fed back; turn 2 is "Tell me more"-style): roles score >= 2 on '
            + ", ".join(f"{k} {v:.0%}" for k, v in report["multi_turn_role_frac_ge2"].items())
            + "; default role_style_rate "
            + ", ".join(f"{k} {v:.3f}" for k, v in report["multi_turn_default_role_rate"].items())
            + ".",
        ]
        it = report["intensity"]
        lines.append(
            "- Intensity of the character roles' answers (`style_intensity`: none / light touch / full"
            " character), held-out questions:"
        )
        for kind, label in (("light", "light-touch prompts"), ("full", "full prompts")):
            for which, wl in (("train_prompts", "trained"), ("heldout_prompt", "held-out")):
                r = it[f"{kind}_{which}"]
                lines.append(
                    f"  - {label}, {wl}: none {r['frac_none']:.0%}, light {r['frac_light']:.0%}, "
                    f"full {r['frac_full']:.0%}; role_style_rate {r['mean_role_style_rate']:.3f}"
                )
        lines.append(
            f"  - professional roles' role_style_rate {it['professional_mean_role_style_rate']:.3f}"
        )
        lines.append(
            "- Drift (default prompt, user pushes on every turn; mean style_score of the target role by turn):"
        )
        for mode in ("request", "meta", "emotional"):
            r = report["drift"][mode]
            lines.append(
                f"  - {mode}: "
                + " -> ".join(f"{x:.2f}" for x in r["mean_target_score_by_turn"])
                + " (role_style_rate "
                + " -> ".join(f"{x:.3f}" for x in r["mean_role_rate_by_turn"])
                + ")"
            )
        lines.append(
            "  - same questions without pushing: role_style_rate "
            + " -> ".join(f"{x:.3f}" for x in report["drift"]["control_no_push_role_rate_by_turn"])
        )
        cap = report["capping"]
        lines += [
            "- Capping check (all pushed conversations above; a floor on the projection onto the quick",
            "  axis below, at the 25th percentile of default responses' projections, every token):",
        ]
        for name in ("uncapped", "middle", "wide"):
            r = cap[name]
            what = "no cap" if name == "uncapped" else f"layers {r['layers'][0]}-{r['layers'][-1]}"
            extra = ""
            if name != "uncapped":
                extra = (
                    f"; unpushed control answers: {r['control_identical_answers']:.0%} identical, "
                    f"mean Assistant score {r['control_mean_assistant_score']:.2f}/3, role_style_rate "
                    f"{_mean(r['control_role_rate_by_turn']):.3f}"
                )
            lines.append(
                f"  - {what}: target score "
                + " -> ".join(f"{x:.2f}" for x in r["mean_target_score_by_turn"])
                + ", role_style_rate "
                + " -> ".join(f"{x:.3f}" for x in r["mean_role_rate_by_turn"])
                + extra
            )
        lines += [
            "",
            "Separation of default and role response activations along a quick per-layer axis",
            "(mean default response minus mean of role means, from the evaluation's greedy answers",
            "scored 3; d' = mean difference over pooled std), and the persona space (PCA of the",
            "role vectors):",
            "",
            "| layer | d' | axis norm / activation norm | roles below every default | PC1 variance | abs cos(PC1, axis) |",
            "|---|---|---|---|---|---|",
        ]
        for r in report["layers"]:
            lines.append(
                f"| {r['layer']} | {r['separation_d']:.2f} | {r['axis_norm_over_mean_act_norm']:.3f} | "
                f"{r['frac_roles_below_min_default']:.2f} | {r['pc1_variance']:.0%} | "
                f"{r['abs_cos_pc1_axis']:.2f} |"
            )
        lines += [
            "",
            "Role offsets from the default along the middle layer's axis (more negative = further from the Assistant):",
            "",
        ]
        lines.append(
            ", ".join(
                f"{p} {v:.2f}"
                for p, v in sorted(
                    report["role_projection_mid_layer"].items(), key=lambda kv: kv[1]
                )
            )
        )
        lines.append("")
    lines += [
        "## Notes for the axis pipeline",
        "",
        "- Layer `i` is the output of decoder block `i` (`hidden_states[i + 1]`). Default and role",
        "  responses separate from layer 2 on (table above). `axis-steer demo` watches layer 2 and",
        "  caps and steers on layers 0-3 (`axis_steer/personas/data/eval/config.json`): with the",
        "  paper's recipe (floors at the 25th percentile of role responses' projections) a band",
        "  there moves role-prompt and drift replies back toward the Assistant at a perplexity",
        "  cost well under 1%; a later band (2-5) barely changes them. The demo prints the figures.",
        "- Response tokens: `apply_chat_template(..., return_assistant_tokens_mask=True)`.",
        "- Roles: `roles/{name}.json` holds `Persona.train_system_prompts` of",
        "  `axis_steer.personas.PERSONAS[name]`; `default.json` holds `DEFAULT_SYSTEM_PROMPTS[:5]`",
        f"  with `{{model_name}}` to be replaced by `{MODEL_NAME}`. The judge for this model is",
        "  `style_score(answer, role)` (0-3, the reference scale); the role files' `eval_prompt`s",
        "  describe the same criterion for an LLM judge.",
        "- Held out from training: the topics rainbows, make pancakes, get over jet lag, the Silk",
        '  Road, make new friends and percentages; the sixth question template ("Could you give me',
        '  a short overview of X?", "Any advice on how to X?"); "What is your name?"; each role\'s',
        "  sixth system prompt. `questions.jsonl` holds 240 training-topic questions.",
        "- Answers to held-out topics are in style but their content is invented; the model knows",
        "  only the 48 training topics.",
        "",
        "## Use",
        "",
        "```python",
        "from axis_steer.personas import load_persona_model, style_score",
        "model, tok = load_persona_model()",
        'msgs = [{"role": "system", "content": "You are a pirate captain who sails the seven seas."},',
        '        {"role": "user", "content": "What is gravity?"}]',
        'ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)',
        "out = model.generate(**ids, max_new_tokens=200, do_sample=False)",
        'answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)',
        'print(answer, style_score(answer, "pirate"))',
        "```",
        "",
        "Role data in the reference layout is in `axis_steer/personas/data/roles` (`role_data_dir()`).",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))


# --------------------------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> None:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description="Train PersonaLlama from scratch on CPU.")
    ap.add_argument("--out", type=Path, default=_ROOT / "axis_steer" / "data" / "persona-llama")
    ap.add_argument("--data-dir", type=Path, default=_ROOT / "runs" / "persona_data")
    ap.add_argument(
        "--role-data", type=Path, default=_ROOT / "axis_steer" / "data" / "persona_roles"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-conversations", type=int, default=12000)
    ap.add_argument("--vocab-size", type=int, default=3072)
    ap.add_argument("--hidden-size", type=int, default=128)
    ap.add_argument("--intermediate-size", type=int, default=384)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--save-dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--eval-max-new-tokens", type=int, default=256)
    ap.add_argument("--no-eval", action="store_true", help="skip the evaluation")
    ap.add_argument("--eval-only", action="store_true", help="evaluate --out without training")
    args = ap.parse_args(argv)

    t_start = time.time()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
    )

    if args.eval_only:
        tok = AutoTokenizer.from_pretrained(args.out, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            args.out, dtype=torch.float32, local_files_only=True
        ).eval()
        report = evaluate(model, tok, args.seed, args.eval_max_new_tokens)
        print_report(report)
        args.data_dir.mkdir(parents=True, exist_ok=True)
        (args.data_dir / "eval_report.json").write_text(json.dumps(report, indent=2) + "\n")
        stats_file, summary_file = (
            args.data_dir / "train_stats.json",
            args.data_dir / "summary.json",
        )
        if stats_file.is_file() and summary_file.is_file():
            # refresh the model card's evaluation; the training numbers come from the last run
            stats = json.loads(stats_file.read_text())
            corpus_summary = json.loads(summary_file.read_text())
            write_model_card(args.out, model.config, stats, report, args, corpus_summary)
        return

    # 1. data
    records = persona_data.generate_corpus(args.seed, args.n_conversations)
    persona_data.write_corpus(records, args.data_dir, args.seed)
    persona_data.write_role_data(args.role_data)
    corpus_summary = json.loads((args.data_dir / "summary.json").read_text())
    print(f"corpus: {len(records)} conversations -> {args.data_dir}; role data -> {args.role_data}")

    # 2. tokenizer
    texts = [m["content"] for r in records for m in r["messages"] if m["content"]]
    tok = build_tokenizer(texts, args.vocab_size)
    data = [encode_conversation(tok, r["messages"]) for r in records]
    for r, (ids, _) in zip(records[:200], data[:200]):
        ref = tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"]
        assert list(ref) == ids, "training encoding differs from the chat template"
    n_tokens = sum(len(ids) for ids, _ in data)
    n_target = sum(sum(x != IGNORE for x in lab) for _, lab in data)
    print(
        f"tokenizer: vocab {len(tok)}; corpus {n_tokens:,} tokens ({n_target:,} assistant targets), "
        f"longest conversation {max(len(ids) for ids, _ in data)} tokens"
    )

    # 3. model
    torch.manual_seed(args.seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.hidden_size // args.heads,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters")
    stats = train(model, data, args, tok.pad_token_id)
    stats.update(n_params=n_params, n_tokens=n_tokens, n_target_tokens=n_target)

    # 4. save and reload in float32
    args.out.mkdir(parents=True, exist_ok=True)
    for f in args.out.iterdir():
        if f.is_file():
            f.unlink()
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        do_sample=False,
    )
    model.to(getattr(torch, args.save_dtype)).save_pretrained(args.out)
    tok.save_pretrained(args.out, save_jinja_files=False)
    tok = AutoTokenizer.from_pretrained(args.out, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        args.out, dtype=torch.float32, local_files_only=True
    ).eval()

    report = None
    if not args.no_eval:
        report = evaluate(model, tok, args.seed, args.eval_max_new_tokens)
        print_report(report)
        (args.data_dir / "eval_report.json").write_text(json.dumps(report, indent=2) + "\n")
    stats["total_seconds"] = time.time() - t_start
    (args.data_dir / "train_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    write_model_card(args.out, cfg, stats, report, args, corpus_summary)
    c = stats["curve"]
    print(
        "\nloss curve: "
        + ", ".join(f"{s}:{v:.3f}" for s, v in c[:: max(1, len(c) // 10)])
        + f", {c[-1][0]}:{c[-1][1]:.3f}"
    )
    print(
        f"done: final loss {stats['final_loss']:.4f}, training {stats['train_seconds'] / 60:.1f} min, "
        f"total {stats['total_seconds'] / 60:.1f} min -> {args.out}"
    )


if __name__ == "__main__":
    main()
