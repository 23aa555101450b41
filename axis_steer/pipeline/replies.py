"""Replies to prompts and scripted conversations, with or without an
attachment, greedy or with seeded sampling: what the evaluation, the main job
and the chat generate with.

Prompts are message lists ending with a user turn (or a plain string, sent as
one user turn), rendered with the model's chat template and its generation
prompt (:func:`axis_steer.pipeline.spans.prompt_ids`). Prompts are batched by
length (sorted by token count, so little padding; results come back in the
caller's order) and left padded. A reply is cut before its first end-of-turn
token (:func:`axis_steer.pipeline.sampling.eos_ids`).

Sampling (``sampling=Sampling(...)``) is seeded per item
(:mod:`axis_steer.pipeline.sampling`): a reply does not depend on its batch,
and the same item with and without an intervention uses the same random
numbers (a paired comparison). With a monitor, each reply also gets its mean
projection at one layer over the tokens that produced it (the generation
prompt's last token and the reply's tokens).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from axis_steer.pipeline.batching import input_device, pad_batch, pad_id
from axis_steer.pipeline.sampling import decoding_config, eos_ids, item_uniforms, seeded_sampler
from axis_steer.pipeline.spans import prompt_ids
from axis_steer.runtime.hooks import Attachment

__all__ = [
    "Replies",
    "Sampling",
    "as_messages",
    "converse",
    "converse_batch",
    "generate_replies",
    "greedy_ids",
    "paired_replies",
    "greedy_replies",
    "reply_seed",
]


@dataclass(frozen=True)
class Sampling:
    """Seeded nucleus sampling: temperature, then top-p; ``seed`` is the run's
    seed, from which each item's own seed derives (:func:`reply_seed`)."""

    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0


def reply_seed(seed: int, *key: Any) -> int:
    """A 63-bit seed for one item, from the run's seed and the item's key."""
    h = hashlib.sha256("/".join(map(str, (int(seed), *key))).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


@dataclass
class Replies:
    """Per prompt, in the caller's order: the reply's text, its token ids
    (before the end of turn), whether it ended by itself (an end-of-turn
    token) rather than at ``max_new_tokens``, and, with a monitor, its mean
    projection (NaN without one)."""

    texts: list[str]
    ids: list[list[int]]
    ended: list[bool]
    projection: list[float]

    @property
    def n_tokens(self) -> int:
        return sum(len(r) for r in self.ids)


def as_messages(p: Sequence[dict] | str) -> list[dict]:
    """A prompt as a message list: a string becomes one user turn."""
    return [{"role": "user", "content": p}] if isinstance(p, str) else list(p)


@torch.no_grad()
def generate_replies(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[dict] | str],
    att: Attachment | None = None,
    *,
    max_new_tokens: int = 96,
    batch_size: int = 16,
    sampling: Sampling | None = None,
    keys: Sequence[Any] | None = None,
    monitor: Any = None,
    layer: int | None = None,
    switch: Sequence[Any] = (),
    on: Sequence[bool] | None = None,
    progress: str | None = None,
) -> Replies:
    """Replies to ``prompts`` (greedy, or seeded sampling), with ``att``
    attached if given.

    Args:
        keys: one hashable key per prompt naming the item (default its
            index); with ``sampling``, an item's random numbers come from
            ``reply_seed(sampling.seed, key)``, so pass the same keys to
            compare the same items under two conditions.
        monitor, layer: a monitor of ``att`` (or of another attached
            attachment) and the layer to read; the mean projection of each reply.
        switch, on: interventions of ``att`` (the handles its ``cap`` /
            ``steer`` / ``cap_config`` returned) and one flag per prompt: the
            interventions act only on the rows whose flag is True (per-row
            control), so the same prompts with and without them share one
            batch (:func:`paired_replies`). Per-row control is cleared after
            the call.
        progress: a tqdm bar with this description (none by default).
    """
    prompts = [as_messages(p) for p in prompts]
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size={batch_size}, max_new_tokens={max_new_tokens} (expected positive numbers)")
    keys = list(range(len(prompts))) if keys is None else list(keys)
    if len(keys) != len(prompts):
        raise ValueError(f"keys: {len(keys)} for {len(prompts)} prompts (expected one per prompt)")
    if on is not None and (att is None or not switch or len(on) != len(prompts)):
        raise ValueError(
            "on: one flag per prompt, with att and the interventions to switch (switch=) "
            f"({0 if on is None else len(on)} flags for {len(prompts)} prompts, {len(switch)} interventions)"
        )
    # the interventions' own on/off state holds on the rows flagged on
    states = [h.enabled for h in switch] if on is not None else []
    if any(not isinstance(x, bool) for x in states):
        raise ValueError("switch: an intervention already has per-row flags (enable(True/False) it first)")
    dev = input_device(model)
    pad = pad_id(tokenizer)
    ends = set(eos_ids(model, tokenizer))
    gc = decoding_config(model, tokenizer, max_new_tokens)
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    ids_out: list[list[int]] = [[] for _ in prompts]
    ended = [False] * len(prompts)
    proj = [float("nan")] * len(prompts)
    bar = tqdm(total=len(prompts), desc=progress, unit="reply", disable=progress is None)
    for b0 in range(0, len(order), batch_size):
        idx = order[b0 : b0 + batch_size]
        ids, am = pad_batch([encoded[i] for i in idx], pad, side="left", device=dev)
        width = ids.shape[1]
        procs = []
        if sampling is not None:
            seeds = [reply_seed(sampling.seed, keys[i]) for i in idx]
            u = item_uniforms(seeds, max_new_tokens, dev)
            procs.append(seeded_sampler(u, width, sampling.temperature, sampling.top_p))
        kw: dict[str, Any] = {"input_ids": ids, "attention_mask": am, "generation_config": gc}
        if procs:
            from transformers import LogitsProcessorList

            kw["logits_processor"] = LogitsProcessorList(procs)
        if on is not None:
            att.clear_rows()
            flags = torch.tensor([bool(on[i]) for i in idx])
            for h, state in zip(switch, states):
                h.enable(flags & state)
        try:
            if att is not None:
                with att:
                    out = model.generate(**kw)
            else:
                out = model.generate(**kw)
        finally:
            if on is not None:
                att.clear_rows()
                for h, state in zip(switch, states):
                    h.enable(state)
        new = out[:, width:].cpu().tolist()
        readings = monitor.readings() if monitor is not None else None
        for row, i in enumerate(idx):
            toks = new[row]
            cut = next((k for k, t in enumerate(toks) if t in ends), None)
            ended[i] = cut is not None
            ids_out[i] = toks[: cut if cut is not None else len(toks)]
            if readings is not None:
                values = readings.row(row, layer, "p_in")
                start = len(encoded[i]) - 1
                seg = values[start : start + len(ids_out[i]) + 1]
                proj[i] = float(np.nanmean(seg)) if seg.size else float("nan")
        bar.update(len(idx))
    bar.close()
    texts = [tokenizer.decode(r, skip_special_tokens=True).strip() for r in ids_out]
    return Replies(texts, ids_out, ended, proj)


def paired_replies(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[dict] | str],
    att: Attachment,
    switch: Sequence[Any],
    *,
    keys: Sequence[Any] | None = None,
    **kw: Any,
) -> tuple[Replies, Replies]:
    """The replies to ``prompts`` without and with the interventions
    ``switch`` of ``att``, generated together: each prompt twice in the same
    batches, the interventions on for the second copy only (with sampling,
    both copies use the prompt's random numbers). Returns ``(plain, intervened)``."""
    n = len(prompts)
    keys = list(range(n)) if keys is None else list(keys)
    r = generate_replies(
        model,
        tokenizer,
        list(prompts) * 2,
        att,
        keys=keys * 2,
        switch=switch,
        on=[False] * n + [True] * n,
        **kw,
    )

    def half(a: int, b: int) -> Replies:
        return Replies(r.texts[a:b], r.ids[a:b], r.ended[a:b], r.projection[a:b])

    return half(0, n), half(n, 2 * n)


def greedy_ids(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[dict] | str],
    max_new_tokens: int,
    batch_size: int,
    pad: int | None = None,
) -> list[list[int]]:
    """Greedy continuations of ``prompts``: per prompt, the new token ids up to
    and including the first end-of-turn token (a reply that ends differs from
    one that goes on). ``pad`` is accepted for older callers and unused."""
    r = generate_replies(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    end = (eos_ids(model, tokenizer) or [pad_id(tokenizer)])[0]
    return [ids + [end] if e else ids for ids, e in zip(r.ids, r.ended)]


def greedy_replies(
    model: Any,
    tok: Any,
    prompts: Sequence[Sequence[dict] | str],
    att: Attachment | None = None,
    *,
    max_new_tokens: int = 96,
    batch_size: int = 16,
) -> list[str]:
    """Greedy replies to many prompts at once, batched, with ``att`` attached if given."""
    return generate_replies(model, tok, prompts, att, max_new_tokens=max_new_tokens, batch_size=batch_size).texts


@torch.no_grad()
def converse_batch(
    model: Any,
    tok: Any,
    conversations: Sequence[tuple[str, Sequence[str]]],
    att: Attachment | None = None,
    *,
    monitor: Any = None,
    layer: int | None = None,
    max_new_tokens: int = 96,
    batch_size: int = 16,
    sampling: Sampling | None = None,
    keys: Sequence[Any] | None = None,
    switch: Sequence[Any] = (),
    on: Sequence[bool] | None = None,
    progress: str | None = None,
) -> tuple[list[list[str]], list[list[float]]]:
    """Scripted conversations, all advanced one turn at a time in batches:
    each ``(system, user_turns)`` gets a reply to its first user turn, which is
    fed back before the second, and so on (``system`` ``""`` = no system
    message). Returns per conversation its replies and (with a monitor) each
    reply's mean projection at ``layer``. ``keys`` name the conversations for
    seeded sampling (turn ``t`` of conversation ``k`` uses key ``(k, t)``);
    ``switch`` and ``on`` (one flag per conversation) as in
    :func:`generate_replies`; ``progress`` shows a bar per turn with this
    description."""
    keys = list(range(len(conversations))) if keys is None else list(keys)
    histories = [[{"role": "system", "content": s}] if s else [] for s, _ in conversations]
    replies: list[list[str]] = [[] for _ in conversations]
    proj: list[list[float]] = [[] for _ in conversations]
    n_turns = max((len(t) for _, t in conversations), default=0)
    for t in range(n_turns):
        live = [c for c, (_, turns) in enumerate(conversations) if t < len(turns)]
        for c in live:
            histories[c].append({"role": "user", "content": conversations[c][1][t]})
        r = generate_replies(
            model,
            tok,
            [histories[c] for c in live],
            att,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            sampling=sampling,
            keys=[(keys[c], t) for c in live],
            monitor=monitor,
            layer=layer,
            switch=switch,
            on=None if on is None else [on[c] for c in live],
            progress=None if progress is None else f"{progress}, turn {t + 1}/{n_turns}",
        )
        for j, c in enumerate(live):
            histories[c].append({"role": "assistant", "content": r.texts[j]})
            replies[c].append(r.texts[j])
            proj[c].append(r.projection[j])
    return replies, proj


def converse(
    model: Any,
    tok: Any,
    system: str,
    user_turns: Sequence[str],
    att: Attachment | None = None,
    monitor: Any = None,
    layer: int | None = None,
    max_new_tokens: int = 96,
) -> tuple[list[str], list[float]]:
    """One scripted conversation, greedy (:func:`converse_batch` with one
    conversation): its replies and, with ``monitor``, each reply's mean
    projection at ``layer``. A non-interactive :func:`axis_steer.apps.chat.chat_loop`."""
    replies, proj = converse_batch(
        model, tok, [(system, list(user_turns))], att, monitor=monitor, layer=layer, max_new_tokens=max_new_tokens
    )
    return replies[0], (proj[0] if monitor is not None else [])
