"""Which tokens are real: the padding of one forward call, read from the
attention masks the model got.

Padding is never capped, steered or recorded. For each forward call of the
backbone (the module that runs the blocks) the hooks need a ``(batch, seq)``
boolean mask of the call's ``seq`` new tokens (True = real) and the number of
positions before them. :func:`read_padding` takes them from, in order:

1. a 2-D ``attention_mask`` ``(batch, past + seq)`` the backbone got: its last
   ``seq`` columns (the past is its width minus ``seq``);
2. the 2-D mask the top-level model got in the same call (``attention_mask``,
   or ``decoder_attention_mask`` for the decoder of an encoder-decoder model):
   multimodal models hand their text model a dict of 4-D masks, RWKV's and
   Mamba's decode steps never pass the mask on, BERT-style encoders get an
   extended 4-D one;
3. a 4-D mask, or a dict of them, the backbone got (a static cache's
   ``generate``, pipelines that build their own): :func:`from_4d`;
4. nothing: every token is real.

The rule for a 4-D mask ``(batch, heads, q, kv)`` (or 3-D ``(batch, q, kv)``),
boolean (True = attend) or additive float (0, or a bias above -1e4, where
attended; -1e4 or below, ``finfo.min`` or ``-inf``, where masked): the new
tokens sit at key columns ``past .. past + seq - 1`` (the last ``seq`` columns,
or from a static cache's position), and token ``j`` is real when query row
``j`` may attend its own column (the diagonal) — a padded query position is
masked everywhere, a real one always sees itself; a ``q = 1`` mask (the same
key mask for every query, as bidirectional encoders use) gives each token the
validity of its own column. Query rows that attend every key while a later
real row masks their column are padding whose fully masked row was opened up
(as SDPA's workaround for fully masked rows does) and count as padding. In
eager mode the mask is checked, and refused with :class:`AxisSteerError` when
the validity is not unambiguous: heads that disagree, a real token that attends
a position the rule calls padding, a float mask of 0s and 1s (multiplicative or
additive?), or a shape that fits neither rule. Compiled code (no host
synchronisation there) applies the rule without the checks.
"""

from __future__ import annotations

from typing import Any

import torch

from axis_steer.errors import AxisSteerError

ADDITIVE_MASKED = -1.0e4  #: an additive mask value at or below this masks the key


def _two_d(mask: Any, batch: int, seq: int) -> torch.Tensor | None:
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[0] == batch and mask.shape[1] >= seq:
        return mask
    return None


def _pick(mask: Any) -> Any:
    """The one mask to read from a dict of masks (one per attention type)."""
    if isinstance(mask, dict):
        tensors = [v for v in mask.values() if isinstance(v, torch.Tensor)]
        full = mask.get("full_attention")
        if isinstance(full, torch.Tensor):
            return full
        if tensors:
            return tensors[0]
        others = [v for v in mask.values() if v is not None]
        return others[0] if others else None
    return mask


def _allowed(mask: torch.Tensor, check: bool) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return mask
    if not mask.is_floating_point():
        return mask != 0
    if check:
        finite = mask[torch.isfinite(mask)]
        if finite.numel() and bool(((finite == 0) | (finite == 1)).all()) and bool((finite == 1).any()):
            raise AxisSteerError(
                "the 4-D attention mask holds only 0s and 1s as floats: it is not clear whether it is "
                "multiplicative (1 = attend) or additive (0 = attend). Pass a boolean mask, an additive one "
                "(0 where attended, -inf or finfo.min where masked), or the 2-D attention_mask."
            )
    return mask > ADDITIVE_MASKED


def _columns(kv: int, seq: int, past: Any, device: torch.device) -> torch.Tensor:
    """Key columns of the call's new tokens: after the cache's ``past`` tokens
    (a static cache's mask spans the whole cache), else the last ``seq``."""
    steps = torch.arange(seq, device=device)
    if isinstance(past, torch.Tensor):
        return past.to(device).reshape(()) + steps
    if isinstance(past, int) and past + seq <= kv:
        return steps + past
    return steps + (kv - seq)


def from_4d(mask: torch.Tensor, batch: int, seq: int, past: Any = None, *, check: bool = True) -> torch.Tensor:
    """``(batch, seq)`` bool, True for real tokens, from a 4-D (or 3-D)
    attention mask (see the module docs for the rule). ``past``: the cache's
    tokens before the call (a device tensor for static caches), or None: the
    new tokens are then the mask's last ``seq`` columns."""
    m = mask[:, None] if mask.dim() == 3 else mask
    if m.dim() != 4:
        raise AxisSteerError(f"attention mask of shape {tuple(mask.shape)}: expected 2-D, 3-D or 4-D")
    b, h, q, kv = m.shape
    if b not in (1, batch) or q not in (1, seq) or kv < seq:
        raise AxisSteerError(
            f"the 4-D attention mask has shape {tuple(mask.shape)}, which fits neither (batch, heads, seq, kv) "
            f"nor (batch, heads, 1, kv) for a call of {batch} x {seq} tokens; axis_steer cannot tell which tokens "
            "are padding. Pass the 2-D attention_mask (batch, length) instead."
        )
    allowed = _allowed(m, check)
    if check and h > 1 and not bool((allowed == allowed[:, :1]).all()):
        raise AxisSteerError(
            "the 4-D attention mask differs between heads; axis_steer cannot tell which tokens are padding. "
            "Pass the 2-D attention_mask instead."
        )
    a = allowed[:, 0]  # (b, q, kv)
    cols = _columns(kv, seq, past, a.device)
    if q == 1:
        valid = a[:, 0, :].index_select(1, cols)  # each token's own key column
    else:
        rows = a.index_select(2, cols)  # (b, seq queries, seq new-token keys)
        valid = rows.diagonal(dim1=1, dim2=2).clone()
        if check and seq > 1:
            later = torch.ones(seq, seq, dtype=torch.bool, device=a.device).tril(-1)  # [j, p]: j > p
            opened = a.all(-1) & (valid[:, :, None] & ~rows & later).any(1)
            valid &= ~opened
            bad = valid[:, :, None] & ~valid[:, None, :] & rows  # a real row attends a pad column
            if bool(bad.any()):
                raise AxisSteerError(
                    "in the 4-D attention mask, real tokens attend positions that the mask's diagonal marks as "
                    "padding; it is not a padding mask axis_steer can read. Pass the 2-D attention_mask instead."
                )
    if valid.shape[0] != batch:
        valid = valid.expand(batch, seq)
    return valid


def cache_past(cache: Any) -> int | torch.Tensor | None:
    """Tokens already in a cache: a host int for dynamic caches, a device
    counter for static ones, None when the cache cannot tell (hybrid and
    recurrent caches raise or have no counter)."""
    if cache is None:
        return None
    get = getattr(cache, "get_seq_length", None)
    if callable(get):
        try:
            n = get()
        except Exception:  # e.g. a cache of recurrent layers only
            return None
        return n if isinstance(n, torch.Tensor) else int(n)
    if isinstance(cache, (tuple, list)) and cache and isinstance(cache[0], (tuple, list)) and cache[0]:
        first = cache[0][0]
        if isinstance(first, torch.Tensor) and first.dim() >= 2:
            return int(first.shape[-2])
    return None


def read_padding(
    backbone_mask: Any,
    top_mask: Any,
    batch: int,
    seq: int,
    past: int | torch.Tensor | None = None,
    *,
    check: bool = True,
) -> tuple[torch.Tensor | None, int | torch.Tensor, str]:
    """``(valid, past, source)`` for one call of ``batch`` x ``seq`` new tokens:
    ``valid`` (batch, seq) bool or None (every token real), the number of
    positions before the new tokens (the column of the first one in the
    sequence), and which source gave the mask (see the module docs). ``past``:
    what the cache says (:func:`cache_past`), or None; a 2-D mask's width wins
    over it (the monitor's positions are the mask's columns)."""
    for mask, source in ((backbone_mask, "the backbone's 2-D attention_mask"), (top_mask, "the top-level model's 2-D mask")):
        m = _two_d(mask, batch, seq)
        if m is not None:
            width = m.shape[1]
            return m[:, width - seq :].bool(), width - seq, source
    picked = _pick(backbone_mask)
    if picked is None:
        return None, past if past is not None else 0, "no mask: every token is real"
    if not isinstance(picked, torch.Tensor):
        raise AxisSteerError(
            f"the backbone got an attention mask of type {type(picked).__name__} and no 2-D attention_mask; "
            "axis_steer cannot read padding from it. Call the model with a 2-D attention_mask (batch, length)."
        )
    if picked.dim() == 2:
        raise AxisSteerError(
            f"the 2-D attention mask has shape {tuple(picked.shape)} for a call of {batch} x {seq} tokens; "
            "expected (batch, past + seq)"
        )
    kv = picked.shape[-1]
    if past is None or (not isinstance(past, torch.Tensor) and past + seq > kv):
        past = kv - seq
    return from_4d(picked, batch, seq, past, check=check), past, "a 4-D attention mask (its diagonal)"
