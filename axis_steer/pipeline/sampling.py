"""Decoding settings shared by every step that generates: the end-of-turn
ids, a greedy ``GenerationConfig`` built from the model's own, and seeded
per-item sampling.

Seeded sampling draws each row's tokens from that row's own pre-drawn
uniforms (inverse CDF over temperature-scaled, nucleus-truncated
probabilities; temperature then top-p, as in transformers), so a reply does
not depend on the batch it ran in, its position in it or the batch size (up
to floating-point differences in the logits between batch shapes). Two runs
of the same item with the same seed -- with and without an intervention --
use the same random numbers: their differences come from the intervention
alone (common random numbers), which is what a paired comparison needs.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch

__all__ = ["decoding_config", "eos_ids", "item_uniforms", "seeded_sampler"]


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a reply: the generation config's end tokens, then the tokenizer's."""
    ids: list[int] = []
    gen = getattr(model, "generation_config", None)
    for src in (getattr(gen, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if src is None:
            continue
        for i in [src] if isinstance(src, int) else list(src):
            if int(i) not in ids:
                ids.append(int(i))
    return ids


def decoding_config(model: Any, tokenizer: Any, max_new_tokens: int) -> Any:
    """A copy of the model's ``generation_config`` for greedy decoding of
    exactly what the logits say (no temperature, top-p or top-k left over
    from the model's defaults), ending at :func:`eos_ids` and padding with the
    tokenizer's pad id (sampling is added as a logits processor)."""
    from axis_steer.pipeline.batching import pad_id

    gc = copy.deepcopy(model.generation_config)
    gc.do_sample = False
    gc.num_beams = 1
    gc.max_new_tokens = int(max_new_tokens)
    gc.max_length = None
    gc.temperature, gc.top_p, gc.top_k = None, None, None
    gc.eos_token_id = eos_ids(model, tokenizer) or None
    gc.pad_token_id = int(pad_id(tokenizer))
    return gc


def item_uniforms(seeds: Sequence[int], n: int, device: Any = None) -> torch.Tensor:
    """``(len(seeds), n)`` float64 uniforms, row ``i`` from ``seeds[i]`` alone."""
    u = torch.stack(
        [torch.rand(int(n), generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64) for s in seeds]
    )
    return u.to(device) if device is not None else u


_HEAD = 256


def _sorted_head(probs: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The probabilities in descending order and their token ids: only the
    first :data:`_HEAD` when they already hold ``top_p`` of every row's mass
    (then the nucleus lies inside them and sampling from them is exact; a
    full sort of a 50k vocabulary per row per step is most of the sampler's
    cost), else all of them (ties in stable order, as ``torch.sort``)."""
    if top_p < 1.0 and probs.shape[-1] > 4 * _HEAD:
        hp, hi = torch.topk(probs, _HEAD, dim=-1, sorted=True)
        # ties inside the head in stable (lowest id first) order, like torch.sort(stable=True)
        order = torch.sort(hi, dim=-1).indices
        hp, hi = hp.gather(-1, order), hi.gather(-1, order)
        order = torch.sort(hp, dim=-1, descending=True, stable=True).indices
        hp, hi = hp.gather(-1, order), hi.gather(-1, order)
        # the sampler keeps a token while the mass before it is < top_p: the head is
        # enough when the mass before its last token already reaches top_p
        if bool(((hp.cumsum(-1)[..., -1] - hp[..., -1]) >= top_p).all()):
            return hp, hi
    return torch.sort(probs, dim=-1, descending=True, stable=True)


def seeded_sampler(uniforms: torch.Tensor, prompt_len: int, temperature: float, top_p: float) -> Any:
    """A logits processor that samples row ``b``'s ``t``-th new token from
    ``uniforms[b, t]`` and puts all the mass on it, so ``generate``'s greedy
    step picks it. ``prompt_len`` is the padded prompt width."""
    from transformers import LogitsProcessor

    if not (temperature > 0 and 0 < top_p <= 1):
        raise ValueError(f"temperature={temperature}, top_p={top_p} (expected temperature > 0 and 0 < top_p <= 1)")

    class SeededSampler(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            t = input_ids.shape[1] - prompt_len
            probs = torch.softmax(scores.float() / float(temperature), dim=-1)
            sp, si = _sorted_head(probs, top_p)
            cum = sp.cumsum(-1)
            if top_p < 1.0:
                sp = sp * ((cum - sp) < top_p)
                cum = sp.cumsum(-1)
            r = (uniforms[:, t : t + 1].to(cum.dtype) * cum[:, -1:]).contiguous()
            j = torch.searchsorted(cum.contiguous(), r, right=True).clamp_(max=sp.shape[-1] - 1)
            tok = si.gather(1, j)
            out = torch.full_like(scores, -float("inf"))
            return out.scatter_(1, tok, 0.0)

    return SeededSampler()
