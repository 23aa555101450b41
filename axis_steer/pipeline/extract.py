"""Step 2 of computing an axis: mean activations over assistant response
tokens, for the requested layers.

Layer ``i`` is the output of decoder block ``i`` (``hidden_states[i + 1]`` in
transformers). Which tokens: the assistant turn's content only, found from the
chat template (:mod:`axis_steer.pipeline.spans`); padding is never counted.

How the forward pass runs: forward hooks on the needed decoder blocks reduce
each block's output on the spot (a per-response mean over its span tokens, in
float32) and the hook of the last needed block raises, so the blocks after it,
the final norm and the LM head never run — no logits, and no layer's hidden
states are kept beyond its hook. Memory per batch is one layer's activations
plus ``(n_responses, n_layers, d)`` float32 means.

The run-level step :func:`extract_activations` reads ``out_dir/responses/`` and
adds each response's mean into float32 running sums per (role, judge score),
so memory does not grow with the number of responses::

    {out_dir}/activations/sums.safetensors    # sums, counts and the processed keys
    {out_dir}/activations/{role}.pt           # per-response means, only with per_sample="pt"
    {out_dir}/activations/{role}.safetensors  #   ... or per_sample="safetensors"

The sums are grouped by judge score when ``out_dir/scores/{role}.json`` exists
at extraction time (bucket ``score0``..``score3``), else in one ``unscored``
bucket, so the axis step can filter by score without per-response files.

Resumable: a checkpoint of the running sums and the processed keys is written
every ``checkpoint_every`` batches and when the call ends (also by an
exception or Ctrl-C); a later call merges it and skips what was done. Under
``torchrun`` every rank takes the responses whose index ``% world_size`` is its
rank; the sums are reduced with ``all_reduce`` at the end.

Lower-level functions for notebooks: :func:`response_means` (per-turn means of
any conversations) and :func:`token_projections` (per-token projections on
directions, e.g. the unit axis).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from axis_steer.errors import AxisSteerError
from axis_steer.pipeline import _dist
from axis_steer.pipeline.batching import batched, input_device, pad_batch, pad_id
from axis_steer.pipeline.runs import RunFolder, iter_run_responses
from axis_steer.pipeline.spans import render_with_spans
from axis_steer.runtime.checks import (
    as_choice,
    as_float_array,
    as_folder,
    as_int,
    as_layers,
    as_positive_int,
    show,
)
from axis_steer.runtime.formats import (
    Fields,
    check_messages,
    kind_path,
    load_activations,
    load_kind,
    load_scores,
    parse_response_key,
    response_key,
    save_activations,
    save_tensors,
    tensor_of,
)
from axis_steer.runtime.models import block_hidden, find_layers, hidden_size
from axis_steer.runtime.ops import project

__all__ = [
    "ActivationSums",
    "ExtractSummary",
    "extract_activations",
    "iter_response_means",
    "load_sums",
    "response_means",
    "residual_norms",
    "token_projections",
]

_TURNS = ("last", "all", "each")


# ---- the model side: hooks that reduce and stop -------------------------------------------


class _StopForward(Exception):
    """Raised by the hook of the last needed block to end the forward pass."""


def _blocks(model: Any) -> Any:
    return find_layers(model).blocks


def _check_layers(layers: Iterable[int] | None, n: int) -> list[int]:
    """``layers`` (default all) sorted, each once (:func:`~axis_steer.runtime.checks.as_layers`)."""
    if layers is None:
        return list(range(n))
    return sorted(set(as_layers(layers, "layers", n, unique=False)))


@dataclass
class _Segment:
    """Token ranges of one row whose tokens are averaged together."""

    row: int
    ranges: list[tuple[int, int]]

    @property
    def n_tokens(self) -> int:
        return sum(b - a for a, b in self.ranges)


def _forward_reduce(
    model: Any,
    blocks: Any,
    layers: list[int],
    rows: list[list[int]],
    segments: list[_Segment],
    pad: int,
    directions: Any = None,
) -> Any:
    """One padded forward pass (right padding) reduced at each needed layer.

    Returns float32 on the CPU: with ``directions=None`` the segments' mean
    activations ``(n_segments, len(layers), d)``; with ``directions``
    ``(len(layers), d)`` unit vectors, the per-token projections
    ``(n_tokens, len(layers))`` of the segments' tokens in segment order,
    computed by the core's ``project`` (the dot product the caps apply with)."""
    ids, attn = pad_batch(rows, pad, side="right")
    width = ids.shape[1]
    pos_parts, seg_parts = [], []
    for s, seg in enumerate(segments):
        for a, b in seg.ranges:
            pos_parts.append(torch.arange(a, b, dtype=torch.long) + seg.row * width)
            seg_parts.append(torch.full((b - a,), s, dtype=torch.long))
    pos_cpu = torch.cat(pos_parts)
    if directions is None:
        seg_of = torch.cat(seg_parts)
        lengths = torch.tensor([seg.n_tokens for seg in segments], dtype=torch.float32)
        w_cpu = torch.zeros((len(segments), len(pos_cpu)), dtype=torch.float32)
        w_cpu[seg_of, torch.arange(len(pos_cpu))] = 1.0 / lengths[seg_of]
    per_device: dict[Any, tuple] = {}
    results: list[Any] = [None] * len(layers)
    where = {layer: j for j, layer in enumerate(layers)}
    last = layers[-1]

    def hook_for(layer: int) -> Callable:
        def hook(module: Any, args: Any, output: Any) -> None:
            h = block_hidden(output, layer)
            if tuple(h.shape[:2]) != (len(rows), width):
                raise AxisSteerError(
                    f"decoder block {layer} output has shape {tuple(h.shape)}; expected ({len(rows)}, {width}, d)"
                )
            dev = h.device
            if dev not in per_device:
                w = None if directions is None else directions.to(dev, torch.float32)
                per_device[dev] = (pos_cpu.to(dev), w_cpu.to(dev) if directions is None else w)
            p, w = per_device[dev]
            sel = h.reshape(-1, h.shape[-1]).index_select(0, p).float()
            j = where[layer]
            results[j] = (w @ sel) if directions is None else project(sel.contiguous(), w[j])
            if layer == last:
                raise _StopForward

        return hook

    handles = [blocks[layer].register_forward_hook(hook_for(layer)) for layer in layers]
    dev = input_device(model)
    try:
        with torch.inference_mode():
            model(input_ids=ids.to(dev), attention_mask=attn.to(dev), use_cache=False)
    except _StopForward:
        pass
    else:
        raise AxisSteerError(
            f"the forward pass ended without running decoder block {last}; are these the model's blocks?"
        )
    finally:
        for hd in handles:
            hd.remove()
    return torch.stack([r.cpu() for r in results], dim=1)


def _encode(
    tokenizer: Any, conversation: Sequence[dict], turns: str, max_length: int | None
) -> tuple[list[int], list[list[tuple[int, int]]]]:
    """Token ids and, per segment, its token ranges (truncated to ``max_length``)."""
    r = render_with_spans(tokenizer, conversation)
    ids = r.input_ids
    spans = r.spans
    if not spans:
        raise ValueError("conversation: no assistant turn")
    if max_length is not None and len(ids) > max_length:
        ids = ids[:max_length]
        spans = [(min(a, max_length), min(b, max_length)) for a, b in spans]
    if turns == "last":
        segs = [[spans[-1]]]
    elif turns == "all":
        segs = [list(spans)]
    else:
        segs = [[s] for s in spans]
    return ids, segs


def _check_conversations(conversations: Any) -> None:
    """A list of chat message lists (each checked by ``formats.check_messages``)."""
    if isinstance(conversations, (str, bytes, dict)) or not isinstance(conversations, Sequence):
        raise TypeError(f"conversations = {show(conversations)} (expected a list of message lists)")
    for c, conv in enumerate(conversations):
        check_messages(conv, f"conversations[{c}]")


def _max_length(max_length: Any) -> int | None:
    return None if max_length is None else as_positive_int(max_length, "max_length")


def _encode_all(
    tokenizer: Any, conversations: Sequence[Sequence[dict]], turns: str, max_length: int | None
) -> list[tuple[list[int], list[list[tuple[int, int]]]]]:
    as_choice(turns, "turns", _TURNS)
    max_length = _max_length(max_length)
    _check_conversations(conversations)
    return [_encode(tokenizer, c, turns, max_length) for c in conversations]


def _conversation_batches(
    enc: list[tuple[list[int], list[list[tuple[int, int]]]]], batch_size: int, desc: str, progress: bool
) -> Iterator[tuple[list[list[int]], list[_Segment], list[tuple[int, int]]]]:
    """Encoded conversations in batches of similar length: per batch the token
    rows, the segments with tokens and, per segment, ``(conversation index,
    turn index)``."""
    order = sorted(range(len(enc)), key=lambda i: len(enc[i][0]))
    for chunk in tqdm(list(batched(order, batch_size)), desc=desc, disable=not progress):
        segs, owners = [], []
        for r, i in enumerate(chunk):
            for k, ranges in enumerate(enc[i][1]):
                seg = _Segment(r, ranges)
                if seg.n_tokens:
                    segs.append(seg)
                    owners.append((i, k))
        if segs:
            yield [enc[i][0] for i in chunk], segs, owners


def iter_response_means(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[dict]],
    layers: Iterable[int] | None = None,
    *,
    turns: str = "last",
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = False,
) -> Iterator[tuple[list[tuple[int, int]], Any]]:
    """Streams mean activations over assistant tokens, one batch at a time.

    Yields ``(owners, means)``: ``means`` is float32 ``(n, len(layers), d)`` and
    ``owners[s] = (conversation index, turn index)`` says whose mean row ``s``
    is (turn index 0 unless ``turns="each"``). Segments with no tokens are
    left out. Conversations are run sorted by length, so batches mix them."""
    blocks = _blocks(model)
    layers = _check_layers(layers, len(blocks))
    pad = pad_id(tokenizer)
    enc = _encode_all(tokenizer, conversations, turns, max_length)
    for rows, segs, owners in _conversation_batches(enc, batch_size, "activations", progress):
        yield owners, _forward_reduce(model, blocks, layers, rows, segs, pad)


def response_means(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[dict]],
    layers: Iterable[int] | None = None,
    *,
    turns: str = "each",
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = False,
) -> list[Any]:
    """Mean activations over each conversation's assistant tokens.

    Args:
        conversations: chat message lists with one or more assistant turns.
        layers: decoder-block indices (default all).
        turns: ``"each"`` — one mean per assistant turn, ``(n_turns, L, d)`` per
            conversation; ``"last"`` — the last turn's mean ``(L, d)``;
            ``"all"`` — the mean over every assistant token ``(L, d)``.

    Returns:
        A list with one float32 CPU tensor per conversation, ``L = len(layers)``
        rows in increasing layer order. A turn with no tokens gives NaN rows.
    """
    n_layers = len(_check_layers(layers, len(_blocks(model))))
    as_choice(turns, "turns", _TURNS)
    _check_conversations(conversations)
    n_turns = [
        1 if turns != "each" else max(1, sum(m.get("role") == "assistant" for m in c))
        for c in conversations
    ]
    out = [torch.full((n, n_layers, hidden_size(model)), math.nan) for n in n_turns]
    for owners, means in iter_response_means(
        model,
        tokenizer,
        conversations,
        layers,
        turns=turns,
        batch_size=batch_size,
        max_length=max_length,
        progress=progress,
    ):
        for s, (i, k) in enumerate(owners):
            out[i][k] = means[s]
    return out if turns == "each" else [t[0] for t in out]


def token_projections(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[dict]],
    directions: Any,
    layers: Iterable[int],
    *,
    turns: str = "each",
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = False,
) -> list[list[Any]]:
    """Per-token projections ``<h_t, u_L>`` of assistant tokens, float32.

    Args:
        directions: ``(len(layers), d)`` or ``(n_layers, d)`` unit vectors
            (e.g. the unit axis); the rows of ``layers`` are used from the latter.
        layers: decoder-block indices.
        turns: ``"each"`` (one entry per assistant turn), ``"last"`` or ``"all"``
            (one entry, the last turn's or all assistant tokens).

    Returns:
        For each conversation a list of ``(n_tokens, len(layers))`` tensors, one
        per segment (turn).
    """
    blocks = _blocks(model)
    layers = _check_layers(layers, len(blocks))
    u = torch.as_tensor(
        as_float_array(directions, "directions", (None, None), expected="shape (len(layers), d) or (n_layers, d)")
    )
    if u.shape[0] == len(blocks) and u.shape[0] != len(layers):
        u = u[layers]
    if u.shape[0] != len(layers):
        raise ValueError(f"directions: {u.shape[0]} rows for {len(layers)} layers")
    enc = _encode_all(tokenizer, conversations, turns, max_length)
    out: list[list[Any]] = [[torch.zeros((0, len(layers))) for _ in e[1]] for e in enc]
    pad = pad_id(tokenizer)
    for rows, segs, owners in _conversation_batches(enc, batch_size, "projections", progress):
        proj = _forward_reduce(model, blocks, layers, rows, segs, pad, directions=u)
        at = 0
        for (i, k), seg in zip(owners, segs):
            out[i][k] = proj[at : at + seg.n_tokens]
            at += seg.n_tokens
    return out


# ---- running sums ------------------------------------------------------------------------------


@dataclass
class ActivationSums:
    """Running float32 sums of per-response mean activations, by group
    (``"{role}/{bucket}"``, bucket ``score0``..``score3`` or ``unscored``).

    ``sums[g]`` is ``(len(layers), d)``; ``counts[g]`` responses and
    ``tokens[g]`` response tokens went into it; ``keys`` are the processed
    ``"{role}/pos_p{p}_q{q}"``; ``empty`` the processed responses that had no
    tokens (not counted)."""

    layers: list[int]
    hidden_size: int
    sums: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)
    empty: set[str] = field(default_factory=set)
    metadata: dict = field(default_factory=dict)

    def add(self, group: str, mean: Any, n_tokens: int) -> None:
        if group not in self.sums:
            self.sums[group] = torch.zeros(
                (len(self.layers), self.hidden_size), dtype=torch.float32
            )
            self.counts[group] = 0
            self.tokens[group] = 0
        self.sums[group] += mean
        self.counts[group] += 1
        self.tokens[group] += int(n_tokens)

    def merge(self, other: ActivationSums) -> None:
        for g, s in other.sums.items():
            if g in self.sums:
                self.sums[g] += s
                self.counts[g] += other.counts[g]
                self.tokens[g] += other.tokens[g]
            else:
                self.sums[g] = s.clone()
                self.counts[g] = other.counts[g]
                self.tokens[g] = other.tokens[g]
        self.keys |= other.keys
        self.empty |= other.empty

    def roles(self) -> list[str]:
        return sorted({g.split("/", 1)[0] for g in self.sums})

    def role_sum(self, role: str, buckets: Iterable[str] | None = None) -> tuple[Any, int]:
        """Sum and count over a role's buckets (all buckets by default)."""
        total = torch.zeros((len(self.layers), self.hidden_size), dtype=torch.float32)
        n = 0
        for g, s in self.sums.items():
            r, b = g.split("/", 1)
            if r == role and (buckets is None or b in buckets):
                total += s
                n += self.counts[g]
        return total, n

    def buckets(self, role: str) -> dict[str, int]:
        return {g.split("/", 1)[1]: n for g, n in self.counts.items() if g.split("/", 1)[0] == role}

    def save(self, path: str | Path) -> Path:
        """Writes the sums to ``.safetensors`` (atomically)."""
        path = Path(path)
        meta = dict(self.metadata)
        meta.update(
            kind="activation_sums",
            layers=self.layers,
            hidden_size=self.hidden_size,
            counts=self.counts,
            tokens=self.tokens,
            keys=sorted(self.keys),
            empty=sorted(self.empty),
        )
        tensors = {f"sum/{g}": s for g, s in self.sums.items()}
        if not tensors:
            tensors = {"_empty": torch.zeros(0)}
        tmp = path.with_name(path.stem + ".tmp.safetensors")
        save_tensors(tmp, tensors, meta)
        os.replace(tmp, path)
        return path


def load_sums(path: str | Path) -> ActivationSums:
    """Reads :class:`ActivationSums` from ``sums.safetensors`` (a file or its run
    folder), checked: every sum a float ``(len(layers), hidden_size)`` tensor
    with a count."""
    where = kind_path(path, str(RunFolder("").sums))
    tensors, meta = load_kind(
        path, "activation_sums", "an activation-sums file", str(RunFolder("").sums)
    )
    f = Fields(meta, where)
    layers, d = f.ints("layers"), f.int("hidden_size", min=1)
    counts = f.counts("counts", default={})
    sums = {}
    for k in tensors:
        if k.startswith("sum/"):
            sums[k[4:]] = tensor_of(tensors, k, where, (len(layers), d))
            if k[4:] not in counts:
                raise ValueError(f"{where}: {k!r} has no count in metadata 'counts'")
    rest = {
        k: v
        for k, v in meta.items()
        if k not in ("counts", "tokens", "keys", "empty", "layers", "hidden_size")
    }
    return ActivationSums(
        layers,
        d,
        sums,
        counts,
        f.counts("tokens", default={}),
        set(f.strs("keys", default=[])),
        set(f.strs("empty", default=[])),
        rest,
    )


# ---- the step -----------------------------------------------------------------------------------


@dataclass
class ExtractSummary:
    """What :func:`extract_activations` did."""

    out_dir: Path
    layers: list[int]
    n_responses: int  #: responses in the run (for the roles asked)
    n_done_before: int  #: already processed, skipped
    n_new: int  #: processed by this call (all ranks)
    n_tokens: int  #: response tokens averaged by this call (all ranks)
    n_empty: int  #: responses with no tokens (not counted)
    seconds: float
    world_size: int = 1

    @property
    def complete(self) -> bool:
        return self.n_done_before + self.n_new >= self.n_responses

    def __str__(self) -> str:
        rate = self.n_tokens / self.seconds if self.seconds > 0 else 0.0
        ranks = f" on {self.world_size} ranks" if self.world_size > 1 else ""
        lay = f"{len(self.layers)} layers" if len(self.layers) > 3 else f"layers {self.layers}"
        state = (
            "complete"
            if self.complete
            else f"{self.n_responses - self.n_done_before - self.n_new} left"
        )
        return (
            f"extract: {self.n_new} responses{ranks} ({self.n_done_before} already done, {state}), "
            f"{self.n_tokens} response tokens, {lay}, {self.seconds:.1f} s ({rate:.0f} tokens/s)"
            f"{f', {self.n_empty} empty' if self.n_empty else ''} -> {Path(self.out_dir) / 'activations'}"
        )


def _scores_for(run: RunFolder, roles: Iterable[str]) -> dict[str, dict[str, int]]:
    out = {}
    for role in roles:
        p = run.scores_file(role)
        if p.is_file():
            out[role] = load_scores(p)
    return out


def _model_id(model: Any) -> str:
    return str(getattr(getattr(model, "config", None), "_name_or_path", "") or "")


def _merge_parts(
    adir: Path, base: ActivationSums | None, layers: list[int], d: int
) -> tuple[ActivationSums, bool]:
    """Base sums plus any rank checkpoints left by an earlier call."""
    parts = (
        sorted((adir / ".parts").glob("rank*.safetensors")) if (adir / ".parts").is_dir() else []
    )
    state = base if base is not None else ActivationSums(layers, d)
    for p in parts:
        part = load_sums(p)
        if part.layers != state.layers:
            raise ValueError(f"{p}: a checkpoint for layers {part.layers}, not {state.layers}")
        state.merge(part)
    return state, bool(parts)


def _sample_ext(per_sample: str | None) -> str | None:
    if per_sample is None or per_sample is False:
        return None
    if per_sample not in ("pt", "safetensors"):
        raise ValueError(f"per_sample={per_sample!r} (expected None, 'pt' or 'safetensors')")
    return per_sample


def _flush_samples(
    adir: Path, buf: dict[str, dict[str, Any]], ext: str, rank: int, counter: list[int]
) -> None:
    pdir = adir / ".parts"
    pdir.mkdir(parents=True, exist_ok=True)
    for role, acts in buf.items():
        if not acts:
            continue
        counter[0] += 1
        final = pdir / f"samples-r{rank}-{counter[0]:06d}-{role}.{ext}"
        tmp = pdir / f"tmp-r{rank}-{counter[0]:06d}.{ext}"
        if ext == "pt":
            torch.save(acts, tmp)
        else:
            save_activations(tmp, acts)
        os.replace(tmp, final)
    buf.clear()


def _merge_samples(adir: Path, ext: str, layers: list[int]) -> None:
    """Folds per-sample chunks into ``activations/{role}.{ext}``."""
    pdir = adir / ".parts"
    chunks = sorted(pdir.glob(f"samples-r*-*.{ext}")) if pdir.is_dir() else []
    by_role: dict[str, list[Path]] = {}
    for c in chunks:
        role = c.stem.split("-", 3)[3]
        by_role.setdefault(role, []).append(c)
    for role, files in by_role.items():
        target = RunFolder(adir.parent).per_sample_file(role, ext)
        acts = load_activations(target) if target.exists() else {}
        for f in files:
            acts.update(load_activations(f))
        acts = dict(sorted(acts.items(), key=lambda kv: _key_order(kv[0])))
        tmp = adir / f"{role}.tmp.{ext}"
        if ext == "pt":
            torch.save(acts, tmp)
        else:
            save_activations(tmp, acts, {"layers": layers})
        os.replace(tmp, target)
        for f in files:
            f.unlink()


def _key_order(key: str) -> tuple[int, int]:
    return parse_response_key(key)


def _reduce(delta: ActivationSums) -> ActivationSums:
    """Sums every rank's delta (all ranks get the total)."""
    rank, world = _dist.world()
    if world == 1:
        return delta
    infos = _dist.all_gather_object(
        {
            "counts": delta.counts,
            "tokens": delta.tokens,
            "keys": sorted(delta.keys),
            "empty": sorted(delta.empty),
        }
    )
    groups = sorted({g for info in infos for g in info["counts"]})
    total = ActivationSums(delta.layers, delta.hidden_size, metadata=dict(delta.metadata))
    for g in groups:
        buf = delta.sums.get(g)
        buf = (
            buf.clone() if buf is not None else torch.zeros((len(delta.layers), delta.hidden_size))
        )
        _dist.all_reduce_sum_(buf)
        total.sums[g] = buf
        total.counts[g] = sum(info["counts"].get(g, 0) for info in infos)
        total.tokens[g] = sum(info["tokens"].get(g, 0) for info in infos)
    for info in infos:
        total.keys |= set(info["keys"])
        total.empty |= set(info["empty"])
    return total


def extract_activations(
    model: Any,
    tokenizer: Any,
    out_dir: str | Path,
    *,
    layers: Iterable[int] | None = None,
    roles: Iterable[str] | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    turns: str = "last",
    per_sample: str | None = None,
    sample_dtype: Any = None,
    checkpoint_every: int = 50,
    max_items: int | None = None,
    restart: bool = False,
    progress: bool = True,
) -> ExtractSummary:
    """Accumulates mean response activations of a run (see the module docs).

    Args:
        model, tokenizer: the model that wrote the responses (or any model with
            the same chat template).
        out_dir: the run folder; reads ``responses/`` (and ``scores/`` if present),
            writes ``activations/``.
        layers: decoder-block indices to keep (default all). Only blocks up to
            the last one asked for run.
        roles: only these roles (default all in the run).
        batch_size: responses per forward pass (right padded; responses are
            sorted by length within chunks of ``32 * batch_size``).
        max_length: truncate conversations to this many tokens (default none).
        turns: which assistant tokens make a response's mean in a multi-turn
            conversation: ``"last"`` (the labelled response, default) or
            ``"all"`` (every assistant token, the reference's choice). Per-turn
            means of any conversation: :func:`response_means`.
        per_sample: also write each response's mean, ``"pt"`` (reference
            layout ``{role}.pt``: ``{"pos_p{p}_q{q}": (len(layers), d)}``) or
            ``"safetensors"``; default not.
        sample_dtype: dtype of per-sample tensors (default float32).
        checkpoint_every: write a checkpoint every this many batches.
        max_items: stop after this many new responses (per rank).
        restart: discard earlier sums and start over.
        progress: tqdm bar and summary line (rank 0).

    Returns:
        An :class:`ExtractSummary` (its ``str`` is the step's summary line).
    """
    if turns not in ("last", "all"):
        raise ValueError(
            f"turns={turns!r} (expected 'last' or 'all'; per-turn means: response_means())"
        )
    batch_size = as_positive_int(batch_size, "batch_size")
    checkpoint_every = as_positive_int(checkpoint_every, "checkpoint_every")
    max_length = _max_length(max_length)
    if max_items is not None:
        max_items = as_int(max_items, "max_items", min=0)
    out_dir = as_folder(out_dir, "out_dir", must_exist=False)
    ext = _sample_ext(per_sample)
    sample_dtype = sample_dtype or torch.float32
    rank, world = _dist.setup()
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    run = RunFolder(out_dir)
    adir = run.activations
    blocks = _blocks(model)
    layers = _check_layers(layers, len(blocks))
    d = hidden_size(model)
    meta = {
        "model": _model_id(model),
        "n_layers": len(blocks),
        "turns": turns,
        "max_length": max_length,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
    }
    base_path = run.sums

    # rank 0 folds earlier checkpoints into the base file; everyone then reads its keys
    if rank == 0:
        adir.mkdir(parents=True, exist_ok=True)
        if restart:
            for p in [base_path, *adir.glob(".parts/*")]:
                if p.is_file():
                    p.unlink()
        base = load_sums(base_path) if base_path.exists() else None
        if base is not None:
            for k in ("model", "turns", "max_length"):
                if base.metadata.get(k) != meta[k]:
                    raise ValueError(
                        f"{base_path}: made with {k}={base.metadata.get(k)!r}, now {k}={meta[k]!r}; "
                        "pass restart=True to start over (or use the same settings)"
                    )
            if base.layers != layers or base.hidden_size != d:
                raise ValueError(
                    f"{base_path}: made for layers {base.layers} (d={base.hidden_size}), now layers {layers} "
                    f"(d={d}); pass restart=True to start over"
                )
        base, had_parts = _merge_parts(adir, base, layers, d)
        base.metadata.update(meta)
        if had_parts:
            base.save(base_path)
            for p in (adir / ".parts").glob("rank*.safetensors"):
                p.unlink()
        if ext:
            _merge_samples(adir, ext, layers)
    _dist.barrier()
    done: set[str] = set()
    if base_path.exists():
        saved = load_sums(base_path)
        done = saved.keys | saved.empty
    if rank != 0:
        base = None

    todo = []
    n_responses = n_done_before = 0
    role_names: set[str] = set()
    for index, (role, row) in enumerate(iter_run_responses(out_dir, roles)):
        n_responses += 1
        role_names.add(role)
        key = response_key(row["prompt_index"], row["question_index"])
        if f"{role}/{key}" in done:
            n_done_before += 1
        elif index % world == rank:
            todo.append((role, key, row["conversation"]))
    scores = _scores_for(run, sorted(role_names))
    if max_items is not None:
        todo = todo[: max(0, int(max_items))]

    delta = ActivationSums(layers, d, metadata=dict(meta))
    samples: dict[str, dict[str, Any]] = {}
    counter = [0]
    part_path = adir / ".parts" / f"rank{rank}.safetensors"
    pad = pad_id(tokenizer)
    n_tokens = 0
    n_batches = 0

    def checkpoint() -> None:
        if ext:
            _flush_samples(adir, samples, ext, rank, counter)
        if delta.keys or delta.empty:
            part_path.parent.mkdir(parents=True, exist_ok=True)
            delta.save(part_path)

    bar = tqdm(total=len(todo), desc="extract", unit="resp", disable=not progress or rank != 0)
    was_training = model.training
    model.eval()
    try:
        for chunk in batched(todo, 32 * batch_size):
            enc = []
            for role, key, conv in chunk:
                ids, segs = _encode(tokenizer, conv, turns, max_length)
                enc.append((role, key, ids, segs[0]))
            enc.sort(key=lambda e: len(e[2]))
            for batch in batched(enc, batch_size):
                live = []
                for e in batch:
                    if sum(b - a for a, b in e[3]) > 0:
                        live.append(e)
                    else:
                        delta.empty.add(f"{e[0]}/{e[1]}")
                if live:
                    segs = [_Segment(i, e[3]) for i, e in enumerate(live)]
                    means = _forward_reduce(model, blocks, layers, [e[2] for e in live], segs, pad)
                    for (role, key, _, _), seg, m in zip(live, segs, means):
                        s = scores.get(role, {}).get(key)
                        delta.add(
                            f"{role}/{'unscored' if s is None else f'score{s}'}", m, seg.n_tokens
                        )
                        delta.keys.add(f"{role}/{key}")
                        n_tokens += seg.n_tokens
                        if ext:
                            samples.setdefault(role, {})[key] = m.to(sample_dtype).clone()
                bar.update(len(batch))
                n_batches += 1
                if checkpoint_every and n_batches % checkpoint_every == 0:
                    checkpoint()
    except BaseException:
        checkpoint()
        raise
    finally:
        bar.close()
        model.train(was_training)
    if ext:
        _flush_samples(adir, samples, ext, rank, counter)
    total = _reduce(delta)
    if rank == 0:
        base.merge(total)
        base.metadata.update(meta, n_responses=n_responses)
        base.save(base_path)
        pdir = adir / ".parts"
        if pdir.is_dir():
            for p in pdir.glob("rank*.safetensors"):
                p.unlink()
        if ext:
            _merge_samples(adir, ext, layers)
    _dist.barrier()
    summary = ExtractSummary(
        out_dir,
        layers,
        n_responses,
        n_done_before,
        len(total.keys) + len(total.empty),
        sum(total.tokens.values()),
        len(total.empty),
        time.perf_counter() - t0,
        world,
    )
    if progress and rank == 0:
        print(summary)
    return summary


# ---- residual-stream scale ---------------------------------------------------------------------


@torch.no_grad()
def residual_norms(model: Any, inputs: Mapping[str, Any], layers: Sequence[int] | None = None) -> dict[int, float]:
    """Mean L2 norm of the residual stream per layer over the real (non-pad)
    tokens of ``inputs`` (a tokenizer output with ``input_ids`` and
    ``attention_mask``): the scale of :meth:`~axis_steer.runtime.hooks.Attachment.steer`
    with ``units="residual"``."""
    found = find_layers(model)
    want = _check_layers(layers, len(found))
    if not isinstance(inputs, Mapping) or not isinstance(inputs.get("input_ids"), torch.Tensor):
        raise TypeError(
            f"inputs = {show(inputs)} (expected a tokenizer output: a mapping with an input_ids tensor "
            "and its attention_mask)"
        )
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    mask = inputs.get("attention_mask")
    handles = []

    def make(i: int) -> Callable:
        def hook(mod: Any, args: Any, out: Any) -> None:
            n = block_hidden(out, i).float().norm(dim=-1)
            m = mask.to(n.device).bool() if mask is not None else torch.ones_like(n, dtype=torch.bool)
            sums[i] = sums.get(i, 0.0) + float(n[m].sum())
            counts[i] = counts.get(i, 0) + int(m.sum())

        return hook

    try:
        for i in want:
            handles.append(found.blocks[i].register_forward_hook(make(i)))
        model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return {i: sums[i] / max(counts[i], 1) for i in want}
