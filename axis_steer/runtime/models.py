"""Finding the decoder blocks of a model, by structure, and saying what was found.

Layer ``i`` is the output of block ``i`` (0-based): the residual stream after
the block, before the final norm. In most transformers models that is
``output_hidden_states[i + 1]``; in some (Mamba, Mamba2, FalconMamba) the tuple
is laid out differently, and the convention holds by the block, not by the tuple.

:func:`find_layers` locates the blocks without looking at model names:

1. it unwraps wrappers (``torch.compile``'s ``OptimizedModule``, peft's
   ``PeftModel``, ``DataParallel``);
2. it picks the stack: for an encoder-decoder model (``config.is_encoder_decoder``)
   the decoder by default, or the encoder with ``stack="encoder"``
   (``get_decoder()`` / ``get_encoder()``); otherwise the language model
   ``get_decoder()`` names (which picks the text model out of multimodal
   models), else the whole model;
3. in that stack it takes the ``torch.nn.ModuleList`` of blocks — modules that
   hold sub-modules of their own, so a list of bare norms or attention layers is
   not taken for blocks — whose length is the config's number of layers for that
   stack. Block classes may differ (hybrid stacks: Jamba, Zamba, OLMo-hybrid,
   Mllama's self- and cross-attention layers). The shallowest such list wins; two
   at the same depth (several stacks, as in byte-latent models) are refused, as
   is a stack that is not one residual stream of shape ``(batch, seq, d)``
   (:data:`UNSUPPORTED`).

An explicit ``layers=`` (a ``ModuleList`` or an attribute path such as
``"model.layers"``) skips the search and the refusals. :func:`describe` says
what was found and how the hooks will read each call's padding.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from axis_steer.errors import AxisSteerError

STACKS = ("decoder", "encoder")

_COUNT_FIELDS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers", "num_decoder_layers",
                 "num_blocks")
_STACK_COUNT_FIELDS = {
    "decoder": ("num_decoder_layers", "decoder_layers"),
    "encoder": ("num_encoder_layers", "encoder_layers", "num_layers", "num_hidden_layers"),
}

#: Layouts of the residual stream that capping one ``(batch, seq, d)`` stream
#: cannot serve, by the config field that announces them (or, where no field
#: does, the config's ``model_type``), with the reason given to the user.
UNSUPPORTED: dict[str, str] = {
    "hc_mult": "its residual stream is hc_mult parallel streams (hyper-connections): each block reads and "
    "writes a (batch, seq, streams, d) tensor, so there is no single stream to cap",
    "hc_count": "its residual stream is hc_count parallel streams mixed by hyper-connections (block outputs "
    "are (batch, seq, hc_count * d)), so there is no single stream to cap",
    "altup_num_inputs": "its residual stream is altup_num_inputs parallel predictions (AltUp): each block "
    "reads and writes a (streams, batch, seq, d) tensor, so there is no single stream to cap",
    "H_cycles": "it runs its blocks several times per forward call (H_cycles x L_cycles reasoning cycles over "
    "two stacks), so 'the output of block i' is not one tensor per call",
    "prompt_types": "it prepends prompt_types x prompt_length learned prompt positions to every sequence, so "
    "the blocks' positions are not the tokens' positions",
    "model_type:xlnet": "its blocks are sequence-first, (seq, batch, d), with a second (query) stream beside "
    "the content stream",
    "model_type:prophetnet": "its decoder runs the main stream and ngram predicting streams in one "
    "sequence ((1 + ngram) * seq positions per block)",
    "model_type:reformer": "its reversible layers keep the residual stream as two halves (the model's hidden "
    "states are their concatenation, 2 * hidden_size wide), so no block outputs the stream",
}


@dataclass
class Layers:
    """Where the blocks of a model are, and how a forward call reaches them."""

    blocks: nn.ModuleList  #: the blocks, in order
    backbone: nn.Module  #: the module whose forward runs the blocks (owns ``blocks``)
    model: nn.Module  #: the unwrapped model
    path: str  #: attribute path of ``blocks`` from ``model`` (for messages)
    hidden_size: int
    stack: str | None = None  #: "decoder" / "encoder" of an encoder-decoder model, else None
    found: str = ""  #: how the blocks were found (for describe)

    def __len__(self) -> int:
        return len(self.blocks)

    def device(self, i: int) -> torch.device:
        """The device that runs block ``i`` (accelerate's execution device for
        offloaded blocks)."""
        return module_device(self.blocks[i])

    @property
    def mask_arg(self) -> str:
        """The top-level model's argument that holds this stack's 2-D padding mask."""
        return "decoder_attention_mask" if self.stack == "decoder" else "attention_mask"

    @property
    def ids_arg(self) -> str:
        return "decoder_input_ids" if self.stack == "decoder" else "input_ids"


def unwrap(model: nn.Module) -> nn.Module:
    """The model under compile / peft / DataParallel wrappers."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif hasattr(model, "get_base_model") and callable(model.get_base_model):
            base = model.get_base_model()
            if base is model or not isinstance(base, nn.Module):
                break
            model = base
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
    return model


def text_config(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is None:
        return None
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def _config_int(config: Any, *names: str) -> int | None:
    for n in names:
        v = getattr(config, n, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def is_encoder_decoder(model: nn.Module) -> bool:
    config = getattr(unwrap(model), "config", None)
    return bool(getattr(config, "is_encoder_decoder", False)) and callable(getattr(model, "get_encoder", None))


def expected_layers(model: nn.Module, stack: str | None = None) -> set[int]:
    """The block counts the config gives for ``stack`` (all its counts for a
    single-stack model)."""
    config = text_config(model)
    if stack is not None:
        n = _config_int(config, *_STACK_COUNT_FIELDS[stack])
        return {n} if n else set()
    return {v for v in (_config_int(config, f) for f in _COUNT_FIELDS) if v}


def hidden_size(model: nn.Module) -> int:
    """The residual-stream width ``d`` of the language model."""
    model = unwrap(model)
    d = _config_int(text_config(model), "hidden_size", "n_embd", "d_model", "dim", "emb_dim")
    if d is None:
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        d = getattr(emb, "embedding_dim", None)
    if not d:
        raise AxisSteerError("cannot tell the model's hidden size: no hidden_size/n_embd/d_model in its config")
    return int(d)


def module_device(module: nn.Module) -> torch.device:
    hook = getattr(module, "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    if dev is not None:
        return torch.device(dev) if not isinstance(dev, int) else torch.device("cuda", dev)
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def _is_block(m: nn.Module) -> bool:
    """A block holds sub-modules that hold sub-modules (an attention or mixer
    with its projections, an MLP): a bare norm or projection is not one, nor is
    an attention layer made of projections only."""
    if isinstance(m, (nn.ModuleList, nn.ModuleDict, nn.Sequential)):
        return False
    return any(any(True for _ in c.children()) for c in m.children())


def _resolve_path(model: nn.Module, path: str) -> Any:
    obj: Any = model
    for part in path.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"layers={path!r}: {type(obj).__name__} has no attribute {part!r}")
        obj = getattr(obj, part)
    return obj


def _parent_of(root: nn.Module, target: nn.Module) -> tuple[nn.Module, str]:
    for name, mod in root.named_modules():
        for child_name, child in mod.named_children():
            if child is target:
                return mod, f"{name}.{child_name}" if name else child_name
    raise AxisSteerError("the decoder blocks are not inside the model given")


def _family(base: nn.Module) -> str:
    mt = getattr(getattr(base, "config", None), "model_type", None)
    return f"{type(base).__name__} (model_type {mt!r})" if mt else type(base).__name__


def unsupported_layout(model: nn.Module) -> str | None:
    """Why the model's residual stream is not one ``(batch, seq, d)`` tensor per
    block that axis_steer can cap, or None (see :data:`UNSUPPORTED`)."""
    base = unwrap(model)
    configs = [c for c in (getattr(base, "config", None), text_config(base)) if c is not None]
    for config in [c for j, c in enumerate(configs) if all(c is not d for d in configs[:j])]:
        for key, why in UNSUPPORTED.items():
            if key.startswith("model_type:"):
                if getattr(config, "model_type", None) == key.split(":", 1)[1]:
                    return why
            elif _config_int(config, key) is not None and not (key in ("hc_mult", "hc_count") and getattr(config, key) == 1):
                return why
    return None


def _stack_root(base: nn.Module, stack: str | None) -> tuple[str | None, list[nn.Module], str]:
    """The chosen stack and the modules to search in, with a phrase for messages."""
    if is_encoder_decoder(base):
        stack = stack or "decoder"
        if stack not in STACKS:
            raise ValueError(f"stack={stack!r} (expected 'decoder' or 'encoder')")
        root = base.get_decoder() if stack == "decoder" else base.get_encoder()
        if not isinstance(root, nn.Module):
            raise AxisSteerError(f"{_family(base)}: get_{stack}() gave no module to search for the {stack} blocks")
        return stack, [root], f"the {stack} (get_{stack}())"
    if stack is not None:
        raise ValueError(
            f"stack={stack!r}: {_family(base)} is not an encoder-decoder model, it has one stack (leave stack unset)"
        )
    roots: list[nn.Module] = []
    get_decoder = getattr(base, "get_decoder", None)
    if callable(get_decoder):
        try:
            dec = get_decoder()
        except Exception:  # some models raise when they have no decoder
            dec = None
        if isinstance(dec, nn.Module) and dec is not base:
            roots.append(dec)
    roots.append(base)
    return None, roots, "model.get_decoder() and the model itself"


def find_layers(model: nn.Module, layers: nn.ModuleList | str | None = None, *, stack: str | None = None) -> Layers:
    """Locates the blocks of ``model`` (see the module docs).

    ``layers`` overrides the search: a ``ModuleList`` inside the model, or its
    attribute path from the unwrapped model (``"model.layers"``). ``stack``
    chooses the stack of an encoder-decoder model (``"decoder"``, the default,
    or ``"encoder"``). Raises :class:`AxisSteerError` naming the model and the
    way out when nothing fits or the model's layout is not supported."""
    base = unwrap(model)
    if layers is not None:
        blocks = _resolve_path(base, layers) if isinstance(layers, str) else layers
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            raise ValueError(f"layers: {type(blocks).__name__} (expected a non-empty torch.nn.ModuleList of blocks)")
        backbone, path = _parent_of(base, blocks)
        if stack is None and is_encoder_decoder(base):
            enc = base.get_encoder()
            stack = "encoder" if any(m is blocks for m in enc.modules()) else "decoder"
        elif stack is not None and stack not in STACKS:
            raise ValueError(f"stack={stack!r} (expected 'decoder' or 'encoder')")
        return Layers(blocks, backbone, base, path, hidden_size(base), stack, "named with layers=")

    why = unsupported_layout(base)
    if why is not None:
        raise AxisSteerError(
            f"{_family(base)} is not supported: {why}. axis_steer caps, steers and monitors one residual stream "
            "of shape (batch, seq, hidden) per block. If some modules of this model do output such a stream, "
            "name them with layers='path.to.modulelist'."
        )
    stack, roots, where = _stack_root(base, stack)
    want = expected_layers(base, stack)
    seen: list[str] = []
    for root in roots:
        lists = [(n, m) for n, m in root.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
        prefix = _parent_of(base, root)[1] + "." if root is not base else ""
        seen += [f"{prefix}{n} ({len(m)} x {'/'.join(sorted({type(b).__name__ for b in m}))})" for n, m in lists]
        blocks = [(n, m) for n, m in lists if all(_is_block(b) for b in m)]
        if want:
            fits = [(n, m) for n, m in blocks if len(m) in want]
            how = "the ModuleList of blocks as long as the config's layer count"
        else:
            fits, how = blocks, "the ModuleList of blocks (the config gives no layer count)"
        if not fits:
            continue
        depth = min(n.count(".") for n, _ in fits)
        top = [(n, m) for n, m in fits if n.count(".") == depth]
        if len(top) > 1:
            paths = ", ".join(f"{prefix}{n} ({len(m)} blocks)" for n, m in top)
            raise AxisSteerError(
                f"{_family(base)} has several stacks of blocks at the same depth: {paths}; axis_steer cannot tell "
                "which one carries the residual stream whose layers an axis is for. Name it with "
                "layers='path.to.blocks'."
            )
        blocks_ml = top[0][1]
        backbone, path = _parent_of(base, blocks_ml)
        return Layers(blocks_ml, backbone, base, path, hidden_size(base), stack, how)

    counts = f" of length {' or '.join(map(str, sorted(want)))} (the config's layer count)" if want else ""
    hint = _parallel_lists_hint(base, roots, want)
    raise AxisSteerError(
        f"cannot find the blocks of {_family(base)}: looked under {where} for a torch.nn.ModuleList of blocks"
        f"{counts} (blocks: modules with sub-modules of their own; the classes may differ); "
        f"found: {', '.join(dict.fromkeys(seen)) or 'no ModuleList'}.{hint} Pass layers='path.to.blocks' "
        "(or the ModuleList itself) to name them."
    )


def _parallel_lists_hint(base: nn.Module, roots: list[nn.Module], want: set[int]) -> str:
    """For models that keep the parts of each block in parallel lists
    (``attentions[i]``, ``ffns[i]``, ``norms[i]``): which list to name."""
    for root in roots:
        by_parent: dict[str, list[str]] = {}
        for n, m in root.named_modules():
            if isinstance(m, nn.ModuleList) and len(m) in want:
                by_parent.setdefault(n.rpartition(".")[0], []).append(n)
        for names in by_parent.values():
            if len(names) > 1:
                prefix = _parent_of(base, root)[1] + "." if root is not base else ""
                names = [prefix + n for n in names]
                return (
                    f" Its blocks are split over parallel lists ({', '.join(names)}); the residual stream after "
                    "block i is the output of the last part that block i runs, if that part adds the residual "
                    f"itself (post-norm models: the last norm, e.g. layers='{names[-1]}')."
                )
    return ""


@dataclass
class Description:
    """What :func:`describe` found: the blocks axis_steer hooks and how it
    reads each forward call's padding. ``str()`` gives a readable report."""

    model: str  #: the model's class (and model_type)
    stack: str  #: which stack: "decoder" / "encoder" of an encoder-decoder model, or "the only stack"
    path: str  #: attribute path of the blocks
    n_layers: int
    block_classes: list[str]
    backbone: str  #: the module that runs the blocks (its forward gets the pre-hook)
    hidden_size: int
    found: str  #: how the blocks were found
    padding: list[str]  #: where each call's padding is read from, in order

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def __str__(self) -> str:
        lines = [
            f"model:    {self.model}",
            f"stack:    {self.stack}",
            f"blocks:   {self.n_layers} at {self.path} ({', '.join(self.block_classes)}); found as {self.found}",
            f"layers:   layer i = the output of block i, i = 0..{self.n_layers - 1} (hidden size {self.hidden_size})",
            f"backbone: {self.backbone} (runs the blocks; its calls are read for batch, length and padding)",
            "padding:  read per call from the first of",
            *(f"          {k}. {p}" for k, p in enumerate(self.padding, 1)),
        ]
        return "\n".join(lines)


def describe(model: nn.Module | Layers, layers: nn.ModuleList | str | None = None, *, stack: str | None = None) -> Description:
    """What axis_steer will hook on ``model`` (same arguments as
    :func:`find_layers`, or its result): which blocks, how many, which stack,
    and how the padding of each call will be read (:mod:`axis_steer.runtime.masks`)."""
    found = model if isinstance(model, Layers) else find_layers(model, layers, stack=stack)
    backbone = type(found.backbone).__name__
    takes = [p for p in inspect.signature(found.backbone.forward).parameters if p != "self"]
    padding = []
    if "attention_mask" in takes:
        padding.append(f"the 2-D attention_mask {backbone}.forward gets (its last seq columns)")
    if found.model is not found.backbone:
        padding.append(f"the 2-D {found.mask_arg} that {type(found.model).__name__}.forward gets in the same call")
    if "attention_mask" in takes:
        padding.append(f"a 4-D attention mask (or a dict of them) {backbone}.forward gets: its diagonal")
    padding.append("every token is real (no mask)")
    config = getattr(found.model, "config", None)
    mt = getattr(config, "model_type", None)
    return Description(
        model=type(found.model).__name__ + (f" (model_type {mt!r})" if mt else ""),
        stack=found.stack or "the only stack",
        path=found.path,
        n_layers=len(found),
        block_classes=sorted({type(b).__name__ for b in found.blocks}),
        backbone=backbone,
        hidden_size=found.hidden_size,
        found=found.found or "the ModuleList of blocks",
        padding=padding,
    )


def n_layers(model: nn.Module) -> int:
    return len(find_layers(model))


def input_device(model: nn.Module) -> torch.device:
    """The device that input ids go to (the input embedding's)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and hasattr(emb, "weight"):
        return emb.weight.device
    return next(model.parameters()).device


def block_hidden(output: Any, index: int) -> torch.Tensor:
    """The residual stream in a decoder block's output: the output itself
    (transformers v5), the first element of a tuple (v4) or of a list (OpenAI
    GPT), or a model output's first field; always ``(batch, seq, d)``. Never a
    silent ``output[0]`` of a tensor (that would be its first batch row)."""
    if isinstance(output, torch.Tensor):
        hidden = output
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        hidden = output[0]
    elif hasattr(output, "to_tuple") and isinstance(output.to_tuple()[0], torch.Tensor):
        hidden = output.to_tuple()[0]
    else:
        raise AxisSteerError(
            f"block {index} returned a {type(output).__name__}; expected a tensor, a tuple starting with "
            "the hidden states, or a model output whose first field is the hidden states"
        )
    if hidden.dim() != 3:
        raise AxisSteerError(
            f"block {index} output has shape {tuple(hidden.shape)}; expected (batch, seq, hidden). The "
            "block's output layout is not one axis_steer understands (several parallel streams, or a layout "
            "other than batch-first); name blocks that output one stream with layers=..."
        )
    return hidden
