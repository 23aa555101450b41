"""Finding the decoder blocks of a model, by structure.

Layer ``i`` is the output of decoder block ``i`` (0-based): the residual stream
after the block, before the final norm, ``output_hidden_states[i + 1]`` in
transformers. :func:`find_layers` locates the blocks without looking at model
names: it unwraps wrappers (``torch.compile``'s ``OptimizedModule``, peft's
``PeftModel``, ``DataParallel``), asks transformers for the language decoder
(``get_decoder()``, which also picks the language model out of multimodal
models), and takes the ``ModuleList`` of identical blocks whose length is the
text config's number of layers. An explicit ``layers=`` override (a
``ModuleList`` or an attribute path such as ``"model.layers"``) skips the search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from axis_steer.errors import AxisSteerError


@dataclass
class Layers:
    """Where the decoder blocks of a model are."""

    blocks: nn.ModuleList  #: the decoder blocks, in order
    backbone: nn.Module  #: the module whose forward runs the blocks (owns ``blocks``)
    model: nn.Module  #: the unwrapped model
    path: str  #: attribute path of ``blocks`` from ``model`` (for messages)
    hidden_size: int

    def __len__(self) -> int:
        return len(self.blocks)

    def device(self, i: int) -> torch.device:
        """The device that runs block ``i`` (accelerate's execution device for
        offloaded blocks)."""
        return module_device(self.blocks[i])


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
        if isinstance(v, int) and v > 0:
            return v
    return None


def expected_layers(model: nn.Module) -> int | None:
    return _config_int(text_config(model), "num_hidden_layers", "n_layer", "num_layers", "n_layers")


def hidden_size(model: nn.Module) -> int:
    """The residual-stream width ``d`` of the language model."""
    model = unwrap(model)
    d = _config_int(text_config(model), "hidden_size", "n_embd", "d_model", "dim")
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


def _homogeneous(ml: nn.ModuleList) -> bool:
    return len(ml) > 0 and len({type(m) for m in ml}) == 1


def _has_attention(block: nn.Module) -> bool:
    return any(("attn" in n.lower() or "attention" in n.lower()) for n, _ in block.named_children())


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


def find_layers(model: nn.Module, layers: nn.ModuleList | str | None = None) -> Layers:
    """Locates the decoder blocks of ``model`` (see the module docs).

    ``layers`` overrides the search: a ``ModuleList`` inside the model, or its
    attribute path from the unwrapped model (``"model.layers"``). Raises
    :class:`AxisSteerError` listing what was looked for when nothing fits."""
    base = unwrap(model)
    if layers is not None:
        blocks = _resolve_path(base, layers) if isinstance(layers, str) else layers
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            raise ValueError(f"layers: {type(blocks).__name__} (expected a non-empty torch.nn.ModuleList of blocks)")
        backbone, path = _parent_of(base, blocks)
        return Layers(blocks, backbone, base, path, hidden_size(base))

    want = expected_layers(base)
    search_roots: list[nn.Module] = []
    get_decoder = getattr(base, "get_decoder", None)
    if callable(get_decoder):
        try:
            dec = get_decoder()
        except Exception:  # some models raise when they have no decoder
            dec = None
        if isinstance(dec, nn.Module):
            search_roots.append(dec)
    search_roots.append(base)

    seen_lists: list[str] = []
    for root in search_roots:
        candidates = []
        for name, mod in root.named_modules():
            if isinstance(mod, nn.ModuleList) and _homogeneous(mod):
                seen_lists.append(f"{name or '<root>'} ({len(mod)} x {type(mod[0]).__name__})")
                candidates.append((name, mod))
        exact = [(n, m) for n, m in candidates if want is not None and len(m) == want]
        if not exact:
            exact = [(n, m) for n, m in candidates if _has_attention(m[0])]
            exact.sort(key=lambda nm: -len(nm[1]))
            exact = exact[:1]
        if exact:
            exact.sort(key=lambda nm: nm[0].count("."))
            blocks = exact[0][1]
            backbone, path = _parent_of(base, blocks)
            return Layers(blocks, backbone, base, path, hidden_size(base))

    raise AxisSteerError(
        f"cannot find the decoder blocks of {type(base).__name__}: looked for a torch.nn.ModuleList of "
        f"identical blocks{f' of length {want} (config num_hidden_layers)' if want else ''} under "
        f"model.get_decoder() and the model itself, or else one whose blocks have an attention child; "
        f"found: {', '.join(dict.fromkeys(seen_lists)) or 'no ModuleList'}. Pass layers='path.to.blocks' "
        "(or the ModuleList itself) to name them."
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
    (transformers v5), the first element of a tuple (v4), or a model output's
    first field; always ``(batch, seq, d)``. Never a silent ``output[0]`` of a
    tensor (that would be its first batch row)."""
    if isinstance(output, torch.Tensor):
        hidden = output
    elif isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
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
            "block's output layout is not one axis_steer understands; name the right blocks with layers=..."
        )
    return hidden
