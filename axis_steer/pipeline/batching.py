"""Turning token-id lists into model inputs: the pad id, padded batches with
their attention mask, and where the inputs go. Every step that runs a model
pads through here.

Generation pads on the left (new tokens follow the last real one); scoring and
extraction pad on the right (positions stay those of the unpadded sequence).
Padding never counts: the attention mask marks it, and the hooks never cap,
steer or record it.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch

from axis_steer.runtime.checks import as_choice, as_int, as_positive_int
from axis_steer.runtime.models import input_device

__all__ = ["batched", "input_device", "pad_batch", "pad_id"]


def pad_id(tokenizer: Any) -> int:
    """The id to pad with: the tokenizer's pad token, else its (first) end token, else 0."""
    for v in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(v, (list, tuple)):
            v = v[0] if v else None
        if v is not None:
            return int(v)
    return 0


def pad_batch(
    seqs: Sequence[Sequence[int]], pad: int, *, side: str, device: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both ``(len(seqs), longest)`` int64, the
    sequences padded with ``pad`` on ``side`` (``"left"`` or ``"right"``)."""
    as_choice(side, "side", ("left", "right"))
    pad = as_int(pad, "pad")
    if not seqs:
        raise ValueError("seqs: empty (expected at least one sequence of token ids)")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s)
        if n == 0:
            continue
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        ids[i, cols] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, cols] = 1
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
    return ids, mask


def batched(seq: Sequence[Any], n: int) -> Iterator[list[Any]]:
    """Consecutive chunks of ``n`` items (the last one shorter)."""
    n = as_positive_int(n, "batch_size")
    for i in range(0, len(seq), n):
        yield list(seq[i : i + n])
