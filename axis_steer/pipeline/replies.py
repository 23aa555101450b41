"""Greedy replies, one batch of prompts at a time or turn by turn in a scripted
conversation, with or without an attachment: what the evaluation, the demo and
the chat generate with.

Prompts are message lists ending with a user turn (or a plain string, sent as
one user turn), rendered with the model's chat template and its generation
prompt (:func:`axis_steer.pipeline.spans.prompt_ids`); batches are left padded.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from axis_steer.pipeline.batching import batched, input_device, pad_batch, pad_id
from axis_steer.pipeline.spans import prompt_ids
from axis_steer.runtime.hooks import Attachment

__all__ = ["as_messages", "converse", "greedy_ids", "greedy_replies"]


def as_messages(p: Sequence[dict] | str) -> list[dict]:
    """A prompt as a message list: a string becomes one user turn."""
    return [{"role": "user", "content": p}] if isinstance(p, str) else list(p)


@torch.no_grad()
def greedy_ids(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[dict] | str],
    max_new_tokens: int,
    batch_size: int,
    pad: int | None = None,
) -> list[list[int]]:
    """Greedy continuations of ``prompts``, batched with left padding; per prompt,
    the new token ids (``pad``, by default :func:`~axis_steer.pipeline.batching.pad_id`,
    after an early end)."""
    if pad is None:
        pad = pad_id(tokenizer)
    dev = input_device(model)
    outs: list[list[int]] = []
    for chunk in batched(list(prompts), batch_size):
        ids, am = pad_batch([prompt_ids(tokenizer, as_messages(p)) for p in chunk], pad, side="left", device=dev)
        gen = model.generate(
            input_ids=ids,
            attention_mask=am,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
        outs.extend(gen[:, ids.shape[1] :].cpu().tolist())
    return outs


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
    if att is None:
        ids = greedy_ids(model, tok, list(prompts), max_new_tokens, batch_size)
    else:
        with att:
            ids = greedy_ids(model, tok, list(prompts), max_new_tokens, batch_size)
    return [tok.decode(r, skip_special_tokens=True).strip() for r in ids]


@torch.no_grad()
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
    """Greedy replies to ``user_turns`` one after another (each reply fed back
    into the conversation), with ``att`` attached if given; per reply, the mean
    projection at ``layer`` over the tokens that produced it (the generation
    prompt's last token and the reply) when ``monitor`` (one of ``att``'s) is
    given. A scripted, non-interactive :func:`axis_steer.apps.chat.chat_loop`."""
    device = input_device(model)
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    replies, proj = [], []
    pad = pad_id(tok)
    for user in user_turns:
        messages.append({"role": "user", "content": user})
        ids = torch.as_tensor([prompt_ids(tok, messages)], device=device)
        kw = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        if att is not None:
            with att:
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
        else:
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
        reply = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
        replies.append(reply)
        messages.append({"role": "assistant", "content": reply})
        if monitor is not None:
            r = monitor.readings()
            proj.append(float(np.nanmean(r.row(0, layer, "p_in")[ids.shape[1] - 1 :])))
    return replies, proj
