"""Capping, steering, ablation and live monitoring on a Hugging Face model, as
forward hooks. This is where capping happens.

An :class:`Attachment` holds every intervention for one model and an axis::

    att = Attachment(model, axis)                     # axis: formats.Axis or (n_layers, d)
    cap = att.cap(range(46, 54), thresholds)          # floor on the Assistant projection
    mon = att.monitor([32])                           # drift readings per token
    with att:                                         # hooks on; removed however the block exits
        model.generate(**inputs)
    readings = mon.readings()

At attach time each decoder block with something to do gets ONE forward hook
that runs all its interventions in ONE call of the fused operator
(``torch.ops.axis_steer.apply_``), in place on the block's output. At each
layer the order is: steering, then ablation / set-projection, then capping
(so a cap's floor holds on what the layer passes on); within a kind, the order
the interventions were added (a reference config's vectors keep their list
order). Monitoring records, about the layer's unit axis, the projection
before the layer's interventions, after them, and whether a cap fired.

Retuning touches tensors only: thresholds, coefficients, enable flags and
directions live in tensors on each layer's device, and the setters copy into
them. No hook is added or removed, so a compiled model does not recompile
(going from one value per layer to per-row values changes a shape, and that
recompiles once).

Which tokens: the backbone (the module that runs the blocks) gets a forward
pre-hook that reads, once per forward call, the batch size, the number of new
tokens ``S``, the past length (from the cache) and the 2-D ``attention_mask``;
the last ``S`` columns of the mask mark padding, which is never capped, steered
or recorded. During ``generate`` the prefill call sees the prompt and each
decode call one token; capping applies to all of them. Pass ``attention_mask``
with padded batches: without it every position counts as a real token.

Composition: two attachments on one model share the same hooks (one per
layer); at each layer they run in the order they were attached.

torch.compile: attach before compiling (or before the first
``generate(cache_implementation="static")`` call, which compiles). Hooks added
after compiling are invisible to the compiled code; :meth:`Attachment.attach`
refuses a model it can tell was compiled (``allow_compiled=True`` overrides).
Detaching flips a flag that the compiled code is guarded on, so compiled code
that ran the hooks recompiles rather than silently keep capping.
"""

from __future__ import annotations

import inspect
import math
import weakref
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from axis_steer.errors import AxisSteerError
from axis_steer.runtime import _torch_ops  # registers torch.ops.axis_steer.*
from axis_steer.runtime.checks import check_bounds, unit_vector
from axis_steer.runtime.formats import Axis, CapConfig
from axis_steer.runtime.models import Layers, block_hidden, find_layers, module_device, unwrap
from axis_steer.runtime.monitor import Monitor, static_buffer
from axis_steer.runtime.steps import CLAMP, PROJECT, SET, SIDES, STEER

_OPS = torch.ops.axis_steer
_DIRECT = _torch_ops.apply_direct_
_KIND_ORDER = {STEER: 0, SET: 1, CLAMP: 2}
_UNITS = ("axis", "residual")


# ---- per-forward state (set by the backbone pre-hook) --------------------------------------


class _ForwardState:
    """What one forward call of the backbone looks like, for the layer hooks."""

    __slots__ = ("batch", "seq", "mask", "past", "_mask_on", "active")

    def __init__(self) -> None:
        self.batch = 0
        self.seq = 0
        self.mask: torch.Tensor | None = None  # (batch, seq) bool, True = real token
        self.past: int | torch.Tensor = 0
        self._mask_on: dict[torch.device, torch.Tensor] = {}
        self.active = False

    def mask_on(self, device: torch.device) -> torch.Tensor | None:
        m = self.mask
        if m is None or m.device == device:
            return m
        cached = self._mask_on.get(device)
        if cached is None:
            cached = m.to(device)
            self._mask_on[device] = cached
        return cached


# ---- one model's hooks, shared by its attachments -------------------------------------------


class _ModelHooks:
    """The hooks on one model: a pre-hook on the backbone and one forward hook
    per decoder block that has work, running every attachment in order."""

    def __init__(self, layers: Layers) -> None:
        self.layers = layers
        self.attachments: list[Attachment] = []
        self.state = _ForwardState()
        self.enabled = True  # compiled code is guarded on this (see module docs)
        self.layer_handles: dict[int, Any] = {}
        self.pre_handle = None
        self.offsets: dict[torch.device, torch.Tensor] = {}
        self._arg_names = [
            p
            for p in inspect.signature(layers.backbone.forward).parameters
            if p not in ("self",)
        ]

    # -- registration

    def refresh(self) -> None:
        """(Re)registers hooks so that exactly the blocks with work have one."""
        wanted = set()
        for att in self.attachments:
            wanted.update(att._programs)
            for mon in att._monitors:
                for layer in mon.layers:
                    self.offset_on(self.layers.device(layer))
        for i in list(self.layer_handles):
            if i not in wanted:
                self.layer_handles.pop(i).remove()
        for i in sorted(wanted):
            if i not in self.layer_handles:
                self.layer_handles[i] = self.layers.blocks[i].register_forward_hook(
                    _LayerHook(self, i), prepend=True
                )
        if self.pre_handle is None and wanted:
            self.pre_handle = self.layers.backbone.register_forward_pre_hook(
                self.pre_hook, with_kwargs=True, prepend=True
            )

    def remove_all(self) -> None:
        self.enabled = False
        for h in self.layer_handles.values():
            h.remove()
        self.layer_handles.clear()
        if self.pre_handle is not None:
            self.pre_handle.remove()
            self.pre_handle = None

    def offset_on(self, device: torch.device) -> torch.Tensor:
        off = self.offsets.get(device)
        if off is None:
            off = static_buffer(torch.zeros((), dtype=torch.int64, device=device))
            self.offsets[device] = off
        return off

    # -- the backbone pre-hook

    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not self.enabled:
            return None
        named = dict(kwargs)
        for name, value in zip(self._arg_names, args):
            named.setdefault(name, value)
        ids = named.get("input_ids")
        embeds = named.get("inputs_embeds")
        ref = ids if ids is not None else embeds
        if ref is None:
            raise AxisSteerError(
                f"{type(module).__name__}.forward was called without input_ids or inputs_embeds; "
                "axis_steer needs one of them to know the batch and sequence length"
            )
        st = self.state
        st.batch, st.seq = int(ref.shape[0]), int(ref.shape[1])
        am = named.get("attention_mask")
        if isinstance(am, torch.Tensor) and am.dim() == 2 and am.shape[-1] >= st.seq:
            st.mask = am[:, am.shape[-1] - st.seq :].bool()
        else:
            st.mask = None
        st._mask_on = {}
        cache = named.get("past_key_values")
        st.past = _past_length(cache)
        st.active = True
        for att in self.attachments:
            att._check_batch(st.batch)
            for mon in att._monitors:
                mon._begin_forward(st, ids, cache)
        for off in self.offsets.values():
            if isinstance(st.past, torch.Tensor):
                off.copy_(st.past)
            else:
                off.fill_(st.past)
        return None


def _past_length(cache: Any) -> int | torch.Tensor:
    """Tokens already in the cache: a host int for dynamic caches, a device
    counter for static ones (read without a host synchronisation)."""
    if cache is None:
        return 0
    get = getattr(cache, "get_seq_length", None)
    if callable(get):
        n = get()
        return n if isinstance(n, torch.Tensor) else int(n)
    if isinstance(cache, (tuple, list)) and cache and isinstance(cache[0], (tuple, list)):
        return int(cache[0][0].shape[-2])
    return 0


_REGISTRY: weakref.WeakKeyDictionary[nn.ModuleList, _ModelHooks] = weakref.WeakKeyDictionary()


# ---- the layer hook -------------------------------------------------------------------------


class _LayerHook:
    """Forward hook of block ``index``: unpacks the block's output, runs each
    attachment's program in one fused call, and repacks when out of place."""

    def __init__(self, hooks: _ModelHooks, index: int) -> None:
        self.hooks = hooks
        self.index = index

    def __call__(self, module: nn.Module, args: tuple, output: Any) -> Any:
        hooks = self.hooks
        if not hooks.enabled:
            return None
        hidden = _hidden_of(output, hooks, self.index)
        st = hooks.state
        grad = torch.is_grad_enabled() and hidden.requires_grad
        recompute = grad and torch._C._current_graph_task_id() != -1
        eager = not torch.compiler.is_compiling()
        result = hidden
        for att in hooks.attachments:
            prog = att._programs.get(self.index)
            if prog is None:
                continue
            mask = st.mask_on(result.device) if st.mask is not None else None
            rec = None if recompute else prog.record
            if grad:
                if rec is not None:
                    with torch.no_grad():
                        probe = result.detach().clone()
                        _OPS.apply_(probe, prog.dirs, prog.ops, prog.params, mask, *rec, hooks.offset_on(probe.device))
                result, _ = _OPS.apply(result, prog.dirs, prog.ops, prog.params, mask)
            elif eager and type(result) is torch.Tensor:
                # the operator's body without the dispatcher: the host time per
                # call is what capping costs in eager generation
                if rec is None:
                    _DIRECT(result, prog.dirs, prog.codes, prog.params, mask, None, None, None, None)
                else:
                    _DIRECT(result, prog.dirs, prog.codes, prog.params, mask, *rec, hooks.offset_on(result.device))
            elif rec is None:
                _OPS.apply_(result, prog.dirs, prog.ops, prog.params, mask)
            else:
                _OPS.apply_(result, prog.dirs, prog.ops, prog.params, mask, *rec, hooks.offset_on(result.device))
        if result is hidden:
            return None
        return _repack(output, result)


def _hidden_of(output: Any, hooks: _ModelHooks, index: int) -> torch.Tensor:
    """The block's residual stream (models.block_hidden), checked against the
    forward call's batch, length and hidden size."""
    hidden = block_hidden(output, index)
    st = hooks.state
    d = hooks.layers.hidden_size
    if hidden.shape[-1] != d or (st.active and tuple(hidden.shape[:2]) != (st.batch, st.seq)):
        raise AxisSteerError(
            f"block {index} output has shape {tuple(hidden.shape)}; expected (batch, seq, hidden) = "
            f"({st.batch}, {st.seq}, {d}). The block's output layout is not one axis_steer understands; "
            "name the right blocks with layers=..."
        )
    return hidden


def _repack(output: Any, hidden: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return hidden
    if isinstance(output, tuple) and not hasattr(output, "to_tuple"):
        return (hidden, *output[1:])
    first = next(iter(output.keys()))
    new = type(output)(**dict(output))
    new[first] = hidden
    return new


# ---- programs ----------------------------------------------------------------------------------


@dataclass
class _Entry:
    """One step contributed by an intervention: at ``layer``, op with a
    direction and its two parameters (host values; a tensor is per row)."""

    layer: int
    op: int
    direction: torch.Tensor  # (d,) float32, CPU master copy
    a: Any = 0.0
    b: Any = 0.0
    enabled: Any = True  # bool, or (batch,) bool tensor per row
    on_axis: bool = False  # a unit-axis CLAMP/SET step, usable as the monitor's step 0


@dataclass
class _Program:
    """One layer's fused program on the layer's device."""

    dirs: torch.Tensor  # (K, d) float32
    ops: list[int]
    codes: tuple[int, ...]  # ops, for the direct entry point
    params: torch.Tensor  # (K, 2) or (K, 2, batch, 1) float32
    entries: list[_Entry | None]  # None for the monitor's own PROJECT step
    record: tuple | None = None  # (p_in, p_out, fired) monitor buffers


def _disabled_values(op: int) -> tuple[float, float]:
    if op == CLAMP:
        return -math.inf, math.inf
    if op == SET:
        return math.nan, 0.0  # a NaN target leaves rows unchanged
    return 0.0, 0.0  # STEER: alpha 0; PROJECT: unused


# ---- interventions (handles) --------------------------------------------------------------------


class _Intervention:
    """Base of the handles :class:`Attachment` returns."""

    def __init__(self, att: Attachment, entries: list[_Entry]) -> None:
        self._att = att
        self._entries = entries

    @property
    def layers(self) -> list[int]:
        return sorted({e.layer for e in self._entries})

    def enable(self, on: bool | Sequence[bool] | torch.Tensor = True) -> None:
        """Switches the intervention on or off: ``True``/``False`` for all rows,
        or one flag per batch row (turns on per-row control for this batch
        size). Touches the parameter tensors only."""
        flag = self._att._row_values(on, "on", dtype=torch.bool)
        for e in self._entries:
            e.enabled = flag
        self._att._write_params({e.layer for e in self._entries})

    def disable(self) -> None:
        self.enable(False)

    @property
    def enabled(self) -> Any:
        return self._entries[0].enabled if self._entries else False

    def remove(self) -> None:
        """Takes the intervention out of the attachment (re-registers hooks as
        needed: in compiled code, a structural change that recompiles)."""
        self._att._remove(self)


class Cap(_Intervention):
    """Activation capping at some layers (see :meth:`Attachment.cap`)."""

    def __init__(self, att: Attachment, entries: list[_Entry], side: str) -> None:
        super().__init__(att, entries)
        self.side = side

    @property
    def thresholds(self) -> dict[int, tuple[Any, Any]]:
        """``{layer: (lo, hi)}`` as set (floats, or per-row tensors)."""
        return {e.layer: (e.a, e.b) for e in self._entries}

    def set_thresholds(self, thresholds: Any) -> None:
        """New thresholds, in the form :meth:`Attachment.cap` takes them; per-row
        values are ``(batch,)`` tensors (or a ``(batch, n_layers)`` tensor)."""
        layers = [e.layer for e in self._entries]
        bounds = self._att._bounds(layers, thresholds, self.side)
        for e, (lo, hi) in zip(self._entries, bounds):
            e.a, e.b = lo, hi
        self._att._write_params(set(layers))


class Steer(_Intervention):
    """Steering at some layers (see :meth:`Attachment.steer`)."""

    def __init__(self, att: Attachment, entries: list[_Entry], units: str, scale: dict[int, float]) -> None:
        super().__init__(att, entries)
        self.units = units
        self._scale = scale

    def set_coefficient(self, coef: Any) -> None:
        """A new coefficient (scalar, per layer, or per row), in this steering's units."""
        layers = [e.layer for e in self._entries]
        per_layer = self._att._per_layer(layers, coef, "coef")
        for e, c in zip(self._entries, per_layer):
            e.a = self._att._row_values(c, "coef") * self._scale[e.layer]
        self._att._write_params(set(layers))


class Ablation(_Intervention):
    """Set-projection / ablation at some layers (see :meth:`Attachment.ablate`)."""

    def set_target(self, target: Any) -> None:
        layers = [e.layer for e in self._entries]
        per_layer = self._att._per_layer(layers, target, "target")
        for e, t in zip(self._entries, per_layer):
            e.a = self._att._row_values(t, "target")
        self._att._write_params(set(layers))


# ---- the attachment -------------------------------------------------------------------------------


class Attachment:
    """All interventions for one model (see the module docs for an example).

    ``axis`` is an :class:`~axis_steer.runtime.formats.Axis` or a raw ``(n_layers, d)``
    tensor pointing toward the Assistant (stored raw; its unit rows are used for
    projections). It may be omitted when only explicit directions are used
    (:meth:`cap_config`). ``layers`` overrides decoder-block discovery."""

    def __init__(self, model: nn.Module, axis: Axis | torch.Tensor | None = None, *, layers: Any = None) -> None:
        self.model = model
        self._layers = find_layers(model, layers)
        n, d = len(self._layers), self._layers.hidden_size
        if axis is not None and not isinstance(axis, Axis):
            axis = Axis(torch.as_tensor(axis))
        if axis is not None:
            if tuple(axis.vectors.shape) != (n, d):
                raise ValueError(
                    f"axis: shape {tuple(axis.vectors.shape)} does not fit this model (expected (n_layers, "
                    f"hidden_size) = ({n}, {d})); was it computed for another model?"
                )
            if not torch.isfinite(axis.vectors).all():
                raise ValueError("axis: holds NaN or infinite values")
        self.axis = axis
        self._interventions: list[_Intervention] = []
        self._monitors: list[Monitor] = []
        self._programs: dict[int, _Program] = {}
        self._hooks: _ModelHooks | None = None
        self._entered = False
        self._rows: int | None = None  # batch size of per-row control, None = per layer only
        self._units: dict[int, torch.Tensor] = {}

    # -- helpers for arguments

    @property
    def n_layers(self) -> int:
        return len(self._layers)

    def _layer_list(self, layers: int | Iterable[int] | None, what: str) -> list[int]:
        if layers is None:
            raise ValueError(f"{what}: layers is required (an int, a range or a list of layer indices)")
        out = [layers] if isinstance(layers, int) else list(layers)
        if not out:
            raise ValueError(f"{what}: layers is empty")
        for layer in out:
            if not isinstance(layer, (int, np.integer)) or not 0 <= int(layer) < self.n_layers:
                raise ValueError(
                    f"{what}: layer {layer!r} is out of range (the model has {self.n_layers} layers, 0..{self.n_layers - 1})"
                )
        if len(set(out)) != len(out):
            raise ValueError(f"{what}: layers {out} repeat a layer")
        return [int(x) for x in out]

    def _unit_axis(self, layer: int) -> torch.Tensor:
        if self.axis is None:
            raise ValueError("this attachment has no axis: pass axis= or give an explicit direction=")
        u = self._units.get(layer)
        if u is None:
            u = self.axis.unit(layer)
            self._units[layer] = u
        return u

    def _direction(self, direction: Any, layer: int, unit: bool, what: str) -> torch.Tensor:
        d = self._layers.hidden_size
        v = torch.as_tensor(direction.vectors[layer] if isinstance(direction, Axis) else direction)
        if v.dim() == 2:
            v = v[layer]
        if v.dim() != 1 or v.shape[0] != d:
            raise ValueError(f"{what}: direction of shape {tuple(v.shape)} (expected ({d},) or (n_layers, {d}))")
        v = v.detach().to(torch.float32).cpu()
        u = unit_vector(v, f"{what}: direction at layer {layer}")
        return u if unit else v

    def _per_layer(self, layers: list[int], values: Any, what: str) -> list[Any]:
        """One value per layer from a scalar, a sequence over ``layers``, a
        ``{layer: value}`` mapping, a per-layer sequence over all layers, or a
        ``(batch, len(layers))`` per-row tensor."""
        if isinstance(values, Mapping):
            missing = [layer for layer in layers if layer not in values]
            if missing:
                raise ValueError(f"{what}: no value for layers {missing}")
            return [values[layer] for layer in layers]
        if isinstance(values, (int, float, np.floating, np.integer)) or (
            isinstance(values, torch.Tensor) and values.dim() == 0
        ):
            return [values] * len(layers)
        if isinstance(values, torch.Tensor) and values.dim() == 2:
            if values.shape[1] != len(layers):
                raise ValueError(
                    f"{what}: per-row tensor of shape {tuple(values.shape)} (expected (batch, {len(layers)}))"
                )
            return [values[:, j] for j in range(len(layers))]
        seq = list(values)
        if len(seq) == len(layers):
            return seq
        if len(seq) == self.n_layers:
            return [seq[layer] for layer in layers]
        raise ValueError(
            f"{what}: {len(seq)} values for {len(layers)} layers (expected a scalar, one per layer given, "
            f"one per model layer ({self.n_layers}), or a {{layer: value}} dict)"
        )

    def _row_values(self, value: Any, what: str, dtype: torch.dtype = torch.float32) -> Any:
        """A scalar stays a Python value; a sequence/tensor is one value per batch
        row and switches the attachment to per-row control."""
        if isinstance(value, (bool, np.bool_)) and dtype == torch.bool:
            return bool(value)
        if isinstance(value, (int, float, np.floating, np.integer)) and dtype != torch.bool:
            return float(value)
        t = torch.as_tensor(value).detach().cpu()
        if t.dim() == 0:
            return bool(t) if dtype == torch.bool else float(t)
        if t.dim() != 1:
            raise ValueError(f"{what}: per-row values must be 1-D (batch,), got shape {tuple(t.shape)}")
        if self._rows is not None and t.shape[0] != self._rows:
            raise ValueError(
                f"{what}: {t.shape[0]} per-row values, but per-row control is set for batch {self._rows} "
                "(call clear_rows() first to change the batch size)"
            )
        self._rows = int(t.shape[0])
        return t.to(dtype)

    def _bounds(self, layers: list[int], thresholds: Any, side: str) -> list[tuple[Any, Any]]:
        if side not in SIDES:
            raise ValueError(f"side={side!r} (expected one of {SIDES})")
        if side == "band":
            if isinstance(thresholds, tuple) and len(thresholds) == 2:
                los = self._per_layer(layers, thresholds[0], "thresholds[0]")
                his = self._per_layer(layers, thresholds[1], "thresholds[1]")
            else:
                pairs = self._per_layer(layers, thresholds, "thresholds")
                if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
                    raise ValueError("thresholds: a band needs (lo, hi) pairs, or a (lo_values, hi_values) tuple")
                los, his = [p[0] for p in pairs], [p[1] for p in pairs]
        else:
            vals = self._per_layer(layers, thresholds, "thresholds")
            los = vals if side == "floor" else [-math.inf] * len(layers)
            his = vals if side == "ceiling" else [math.inf] * len(layers)
        out = []
        for layer, lo, hi in zip(layers, los, his):
            lo_v, hi_v = self._row_values(lo, "thresholds"), self._row_values(hi, "thresholds")
            check_bounds(lo_v, hi_v, f"thresholds at layer {layer}")
            out.append((lo_v, hi_v))
        return out

    # -- building

    def cap(
        self,
        layers: int | Iterable[int],
        thresholds: Any,
        *,
        side: str = "floor",
        direction: Any = None,
    ) -> Cap:
        """Caps the projection on the unit axis (or ``direction``) at ``layers``.

        ``side="floor"`` (default, the paper's cap): ``<h, â> >= threshold``;
        ``"ceiling"``: ``<= threshold``; ``"band"``: thresholds are ``(lo, hi)``.
        ``thresholds``: a scalar, one value per layer given, one per model layer,
        or a ``{layer: value}`` dict. Per batch row: a ``(batch, n_layers_given)``
        tensor, or ``(batch,)`` tensors as the values of the dict. Units: the
        residual stream's (a projection on a unit vector). ``±inf`` on the open
        side means no bound."""
        layers = self._layer_list(layers, "cap")
        bounds = self._bounds(layers, thresholds, side)
        entries = []
        for layer, (lo, hi) in zip(layers, bounds):
            on_axis = direction is None
            u = self._unit_axis(layer) if on_axis else self._direction(direction, layer, True, "cap")
            entries.append(_Entry(layer, CLAMP, u, lo, hi, True, on_axis))
        return self._add(Cap(self, entries, side))

    def cap_config(self, config: CapConfig) -> Cap:
        """Applies a capping configuration exactly: each entry keeps
        ``<h, direction>`` within ``[lo, hi]`` at its layer, several on one layer
        in list order. A reference experiment (``ReferenceCappingConfig.experiment``)
        is a ceiling at ``cap`` on each normalised stored vector — with the
        released ``v = -axis`` vectors, a floor at ``-cap`` on the +axis."""
        if not config.entries:
            raise ValueError("config: no capping entries (was every intervention without a 'cap'?)")
        entries = []
        for j, e in enumerate(config.entries):
            (layer,) = self._layer_list([e.layer], f"config entry {j}")
            u = self._direction(e.direction, layer, True, f"config entry {j}")
            lo, hi = float(e.lo), float(e.hi)
            check_bounds(lo, hi, f"config entry {j} (layer {layer})")
            on_axis = self.axis is not None and bool(torch.equal(u, self._unit_axis(layer)))
            entries.append(_Entry(layer, CLAMP, u, lo, hi, True, on_axis))
        side = config.metadata.get("side", "band")
        return self._add(Cap(self, entries, side if side in SIDES else "band"))

    def steer(
        self,
        layers: int | Iterable[int],
        coef: Any,
        *,
        units: str = "axis",
        residual_norms: Mapping[int, float] | Sequence[float] | None = None,
        direction: Any = None,
    ) -> Steer:
        """Adds the axis (or ``direction``) to the residual stream at ``layers``.

        ``units="axis"``: ``h += coef * axis[L]`` with the raw axis row, so
        ``coef`` is in units of ``||axis[L]||`` (the reference's convention).
        ``units="residual"``: ``h += coef * r_L * â_L`` with ``r_L`` the mean
        residual-stream norm at ``L`` (``residual_norms``, e.g. from
        :func:`axis_steer.pipeline.extract.residual_norms`), so ``coef`` is a fraction of a typical
        activation (the paper's convention). Negative ``coef`` steers away
        from the Assistant."""
        if units not in _UNITS:
            raise ValueError(f"units={units!r} (expected 'axis' or 'residual')")
        layers = self._layer_list(layers, "steer")
        coefs = self._per_layer(layers, coef, "coef")
        norms = None
        if units == "residual":
            if residual_norms is None:
                raise ValueError(
                    "units='residual' needs residual_norms (mean residual norm per layer; "
                    "measure them with axis_steer.pipeline.extract.residual_norms(model, inputs))"
                )
            norms = self._per_layer(layers, residual_norms, "residual_norms")
        entries, scale = [], {}
        for j, (layer, c) in enumerate(zip(layers, coefs)):
            if units == "axis":
                if direction is None:
                    w = self.axis.vectors[layer].float().cpu() if self.axis is not None else None
                    if w is None:
                        raise ValueError("steer: this attachment has no axis; pass direction=")
                else:
                    w = self._direction(direction, layer, False, "steer")
                s = 1.0
            else:
                w = self._unit_axis(layer) if direction is None else self._direction(direction, layer, True, "steer")
                s = float(norms[j])
                if not math.isfinite(s) or s <= 0:
                    raise ValueError(f"residual_norms at layer {layer} = {s} (expected a positive number)")
            if not torch.isfinite(w).all():
                raise ValueError(f"steer: the vector at layer {layer} holds NaN or inf")
            scale[layer] = s
            value = self._row_values(c, "coef")
            _check_finite(value, "coef", layer)
            entries.append(_Entry(layer, STEER, w, value * s, 0.0, True, False))
        return self._add(Steer(self, entries, units, scale))

    def ablate(self, layers: int | Iterable[int], *, target: Any = 0.0, direction: Any = None) -> Ablation:
        """Sets the projection on the unit axis (or ``direction``) to ``target``
        at ``layers``: ``h += â (target - <h, â>)``; ``target=0`` removes the
        component (directional ablation)."""
        layers = self._layer_list(layers, "ablate")
        targets = self._per_layer(layers, target, "target")
        entries = []
        for layer, t in zip(layers, targets):
            on_axis = direction is None
            u = self._unit_axis(layer) if on_axis else self._direction(direction, layer, True, "ablate")
            value = self._row_values(t, "target")
            _check_finite(value, "target", layer)
            entries.append(_Entry(layer, SET, u, value, 0.0, True, on_axis))
        return self._add(Ablation(self, entries))

    def monitor(self, layers: int | Iterable[int] | None = None, *, capacity: int = 1024) -> Monitor:
        """Records drift readings at ``layers`` (default: the middle layer).
        ``capacity`` is the initial number of tokens held per sequence (grown as
        needed in eager mode; with a static cache it is the cache length)."""
        if self.axis is None:
            raise ValueError("monitor: this attachment has no axis to project on")
        if layers is None:
            layers = [self.n_layers // 2]
        layers = self._layer_list(layers, "monitor")
        if capacity < 1:
            raise ValueError(f"capacity={capacity} (expected a positive number of tokens)")
        mon = Monitor(self, layers, capacity)
        self._monitors.append(mon)
        self._rebuild()
        return mon

    def _add(self, item: _Intervention) -> _Intervention:
        self._interventions.append(item)
        self._rebuild()
        return item

    def _remove(self, item: Any) -> None:
        if item in self._interventions:
            self._interventions.remove(item)
        if item in self._monitors:
            self._monitors.remove(item)
        self._rebuild()

    def clear_rows(self) -> None:
        """Leaves per-row control (so any batch size works again). Per-row
        thresholds or coefficients must first be replaced by per-layer values;
        per-row enable flags are reset to "on"."""
        for item in self._interventions:
            for e in item._entries:
                for name in ("a", "b"):
                    v = getattr(e, name)
                    if isinstance(v, torch.Tensor):
                        raise AxisSteerError(
                            f"layer {e.layer} still has per-row values; set per-layer values "
                            "(set_thresholds / set_coefficient / set_target) before clear_rows()"
                        )
                if isinstance(e.enabled, torch.Tensor):
                    e.enabled = True
        self._rows = None
        self._rebuild()

    # -- programs and parameters

    def _rebuild(self) -> None:
        """Builds each layer's program from the interventions and monitors."""
        by_layer: dict[int, list[_Entry]] = {}
        for item in self._interventions:
            for e in item._entries:
                by_layer.setdefault(e.layer, []).append(e)
        monitored = {layer for m in self._monitors for layer in m.layers}
        programs: dict[int, _Program] = {}
        for layer in sorted(set(by_layer) | monitored):
            entries = sorted(by_layer.get(layer, []), key=lambda e: _KIND_ORDER[e.op])
            steps: list[_Entry | None] = list(entries)
            if layer in monitored and not (entries and entries[0].on_axis):
                steps.insert(0, None)  # PROJECT on the unit axis
            dev = self._layers.device(layer)
            dirs = static_buffer(torch.stack([self._unit_axis(layer) if s is None else s.direction for s in steps]).to(dev))
            ops = [PROJECT if s is None else s.op for s in steps]
            prog = _Program(dirs, ops, tuple(ops), torch.empty(0), steps)
            programs[layer] = prog
        self._programs = programs
        self._write_params(set(programs))
        self._bind_records()
        if self._hooks is not None:
            self._hooks.refresh()

    def _bind_records(self) -> None:
        if self._hooks is not None:
            for mon in self._monitors:
                for layer in mon.layers:
                    self._hooks.offset_on(self._layers.device(layer))
        for prog in self._programs.values():
            prog.record = None
        for mon in self._monitors:
            for layer in mon.layers:
                prog = self._programs.get(layer)
                if prog is not None and layer in mon._bufs:
                    prog.record = mon._bufs[layer]

    def _write_params(self, layers: set[int]) -> None:
        rows = self._rows
        for layer in layers:
            prog = self._programs.get(layer)
            if prog is None:
                continue
            shape = (len(prog.ops), 2) + ((rows, 1) if rows is not None else ())
            host = torch.zeros(shape, dtype=torch.float32)
            for k, e in enumerate(prog.entries):
                if e is None:
                    continue
                off_a, off_b = _disabled_values(e.op)
                for j, (val, off) in enumerate(((e.a, off_a), (e.b, off_b))):
                    v = torch.as_tensor(val, dtype=torch.float32)
                    en = torch.as_tensor(e.enabled, dtype=torch.bool)
                    full = torch.where(en, v, torch.tensor(off, dtype=torch.float32))
                    host[k, j] = full.reshape(-1, 1) if rows is not None and full.dim() else full
            if prog.params.shape == host.shape and prog.params.device == prog.dirs.device:
                prog.params.copy_(host)
            else:
                prog.params = static_buffer(host.to(prog.dirs.device))

    def _check_batch(self, batch: int) -> None:
        if self._rows is not None and batch != self._rows:
            raise AxisSteerError(
                f"per-row values were set for a batch of {self._rows} but the model got a batch of {batch}; "
                "set per-row values for this batch (or per-layer values and clear_rows())"
            )

    # -- attach / detach

    def attach(self, *, allow_compiled: bool = False) -> Attachment:
        """Registers the hooks (one per block with work, plus one pre-hook on the
        backbone). Entering an attached attachment again is an error."""
        if self._entered:
            raise AxisSteerError("this attachment is already attached; detach() it first")
        if not allow_compiled:
            why = _compiled_marker(self.model, self._layers.model)
            if why:
                raise AxisSteerError(
                    f"the model looks compiled ({why}); hooks added after compiling are silently ignored by "
                    "the compiled code. Attach before compiling, or pass allow_compiled=True if you will "
                    "recompile (e.g. after torch._dynamo.reset())."
                )
        blocks = self._layers.blocks
        hooks = _REGISTRY.get(blocks)
        if hooks is None:
            hooks = _ModelHooks(self._layers)
            _REGISTRY[blocks] = hooks
        self._hooks = hooks
        hooks.attachments.append(self)
        hooks.enabled = True
        self._entered = True
        try:
            hooks.refresh()
        except BaseException:
            self.detach()
            raise
        return self

    def detach(self) -> None:
        """Removes this attachment's hooks (the shared hooks go when the last
        attachment on the model detaches). Safe to call twice."""
        hooks = self._hooks
        self._entered = False
        self._hooks = None
        if hooks is None:
            return
        if self in hooks.attachments:
            hooks.attachments.remove(self)
        if hooks.attachments:
            hooks.refresh()
        else:
            hooks.remove_all()
            _REGISTRY.pop(hooks.layers.blocks, None)

    @property
    def attached(self) -> bool:
        return self._entered

    @property
    def interventions(self) -> tuple[_Intervention, ...]:
        """The caps and steers added so far (the handles ``cap``, ``steer``, ...
        returned), in the order they were added."""
        return tuple(self._interventions)

    def __enter__(self) -> Attachment:
        return self.attach()

    def __exit__(self, *exc: Any) -> None:
        self.detach()


def _check_finite(v: Any, what: str, layer: int) -> None:
    if not torch.isfinite(torch.as_tensor(v, dtype=torch.float64)).all():
        raise ValueError(f"{what} at layer {layer}: {v!r} (expected finite values)")


def _compiled_marker(model: nn.Module, base: nn.Module) -> str:
    if type(model).__name__ == "OptimizedModule":
        return "it is a torch.compile OptimizedModule"
    for m in (model, base):
        if "_compiled_call" in getattr(m, "__dict__", {}):
            return "generate() compiled its forward (static cache)"
        fwd = m.__dict__.get("forward") if hasattr(m, "__dict__") else None
        if fwd is not None and hasattr(fwd, "_torchdynamo_orig_callable"):
            return "its forward was replaced by torch.compile(model.forward)"
    return ""


def attach(model: nn.Module, axis: Any = None, **kw: Any) -> Attachment:
    """Shorthand: ``Attachment(model, axis, **kw)`` (use as ``with attach(...) as att``)."""
    return Attachment(model, axis, **kw)


__all__ = ["Attachment", "Cap", "Steer", "Ablation", "Monitor", "attach", "unwrap", "module_device"]
