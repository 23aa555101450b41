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
tokens ``S`` (from its ``input_ids``, ``inputs_embeds`` or hidden states), the
padding and the past length (:mod:`axis_steer.runtime.masks`: the backbone's
2-D ``attention_mask``, else the 2-D mask the top-level model got in the same
call, which a pre-hook on it keeps, else a 4-D mask or a dict of them, else
none). Padding is never capped, steered or recorded. During ``generate`` the
prefill call sees the prompt and each decode call one token; capping applies to
all of them. Pass ``attention_mask`` with padded batches: without any mask
every position counts as a real token.

Threads: the per-forward state is per thread, so one attachment serves
forwards running at once from several threads (a web server's, an evaluation
harness's), each with its own padding. Attaching, detaching and retuning are not
thread-safe: do them from one thread while no forward runs. A monitor records
one thread's sequences at a time and refuses, loudly, a forward from another
thread that would mix into them.

Drift policies (:mod:`axis_steer.runtime.policies`): ``att.latch(...)`` watches
the projection at a detection layer per sequence, and interventions made with
``policy=`` run only on the rows (and from the token) where it latched; the
latch's scan runs in the same fused call as the detection layer's program.

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
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from axis_steer.errors import AxisSteerError
from axis_steer.runtime import _torch_ops  # registers torch.ops.axis_steer.*
from axis_steer.runtime.checks import (
    as_choice,
    as_direction,
    as_float,
    as_float_array,
    as_layer,
    as_layers,
    as_mask,
    as_positive_int,
    as_real,
    check_bounds,
    show,
    unit_vector,
)
from axis_steer.runtime.formats import Axis, CapConfig, CapEntry
from axis_steer.runtime.masks import cache_past, read_padding
from axis_steer.runtime.models import (
    Layers,
    block_hidden,
    describe,
    find_layers,
    module_device,
    unwrap,
)
from axis_steer.runtime.monitor import Monitor, static_buffer
from axis_steer.runtime.policies import Latch
from axis_steer.runtime.steps import CLAMP, PROJECT, SET, SIDES, STEER

_OPS = torch.ops.axis_steer
_DIRECT = _torch_ops.apply_direct_
_KIND_ORDER = {STEER: 0, SET: 1, CLAMP: 2}
_UNITS = ("axis", "residual")


# ---- per-forward state (set by the backbone pre-hook) --------------------------------------


class _ForwardState:
    """What one forward call of the backbone looks like, for the layer hooks.
    One per thread (see :class:`_ModelHooks`)."""

    __slots__ = ("batch", "seq", "mask", "past", "_mask_on", "active", "top_mask", "top_ids", "source")

    def __init__(self) -> None:
        self.batch = 0
        self.seq = 0
        self.mask: torch.Tensor | None = None  # (batch, seq) bool, True = real token
        self.past: int | torch.Tensor = 0
        self._mask_on: dict[torch.device, torch.Tensor] = {}
        self.active = False
        self.top_mask: torch.Tensor | None = None  # the top-level model's 2-D mask, during its call
        self.top_ids: torch.Tensor | None = None
        self.source = ""  # where the last call's padding was read from (masks.read_padding)

    def mask_on(self, device: torch.device) -> torch.Tensor | None:
        m = self.mask
        if m is None or m.device == device:
            return m
        cached = self._mask_on.get(device)
        if cached is None:
            cached = m.to(device)
            self._mask_on[device] = cached
        return cached


# names under which backbones take what the pre-hook reads
_SIZE_ARGS = ("input_ids", "inputs_embeds", "hidden_states")
_CACHE_ARGS = ("past_key_values", "cache_params", "past_key_value")


# ---- one model's hooks, shared by its attachments -------------------------------------------


class _ModelHooks:
    """The hooks on one model: a pre-hook (and an always-called forward hook)
    on the backbone, one forward hook per block that has work, running every
    attachment in order, and a pre-hook on the top-level model that keeps its
    2-D attention mask for the backbone's call inside it.

    Threads: the per-forward state is per thread (``threading.local``), so
    forwards running at once from several threads each see their own batch,
    padding and cache. Compiled code reads one shared state (dynamo cannot
    trace thread-local storage); run compiled forwards from one thread. A
    :class:`~axis_steer.runtime.monitor.Monitor` records one thread's sequences
    at a time and refuses a forward from another thread that would mix into them."""

    def __init__(self, layers: Layers) -> None:
        self.layers = layers
        self.attachments: list[Attachment] = []
        self._local = threading.local()
        self._shared = _ForwardState()  # the state of compiled code
        self._last = self._shared  # the last call's, for recomputation on autograd's threads
        self.enabled = True  # compiled code is guarded on this (see module docs)
        self.layer_handles: dict[int, Any] = {}
        self.backbone_handles: list[Any] = []
        self.offsets: dict[torch.device, torch.Tensor] = {}
        # (offset, its NumPy view for a CPU one, written in place in eager mode)
        self.offset_items: list[tuple[torch.Tensor, np.ndarray | None]] = []
        self._arg_names = _arg_names(layers.backbone)
        if not any(n in self._arg_names for n in _SIZE_ARGS) and not _has_positional(layers.backbone):
            raise AxisSteerError(
                f"{type(layers.backbone).__name__}.forward (which runs the blocks at {layers.path}) takes none of "
                f"{', '.join(_SIZE_ARGS)}: axis_steer cannot tell the batch and sequence length of its calls. "
                "Name other blocks with layers=..."
            )
        self._seen = _TokensSeen()
        self._top = layers.model if layers.model is not layers.backbone else None
        self._top_names = _arg_names(self._top) if self._top is not None else []

    @property
    def state(self) -> _ForwardState:
        """This thread's per-forward state (the shared one in compiled code)."""
        if torch.compiler.is_compiling():
            return self._shared
        st = getattr(self._local, "state", None)
        if st is None:
            st = self._local.state = _ForwardState()
        return st

    # -- registration

    def refresh(self) -> None:
        """(Re)registers hooks so that exactly the blocks with work have one."""
        wanted = set()
        for att in self.attachments:
            wanted.update(att._programs)
            for mon in att._monitors:
                for layer in mon.layers:
                    self.offset_on(self.layers.device(layer))
            for layer, prog in att._programs.items():
                if prog.latches or prog.gates:
                    self.offset_on(self.layers.device(layer))
        for i in list(self.layer_handles):
            if i not in wanted:
                self.layer_handles.pop(i).remove()
        for i in sorted(wanted):
            if i not in self.layer_handles:
                self.layer_handles[i] = self.layers.blocks[i].register_forward_hook(
                    _LayerHook(self, i), prepend=True
                )
        if not self.backbone_handles and wanted:
            backbone = self.layers.backbone
            self.backbone_handles = [
                backbone.register_forward_pre_hook(self.pre_hook, with_kwargs=True, prepend=True),
                backbone.register_forward_hook(self.post_hook, always_call=True),
            ]
            if self._top is not None:
                self.backbone_handles += [
                    self._top.register_forward_pre_hook(self.top_pre_hook, with_kwargs=True, prepend=True),
                    self._top.register_forward_hook(self.top_post_hook, always_call=True),
                ]

    def remove_all(self) -> None:
        self.enabled = False
        for h in self.layer_handles.values():
            h.remove()
        self.layer_handles.clear()
        for h in self.backbone_handles:
            h.remove()
        self.backbone_handles = []

    def offset_on(self, device: torch.device) -> torch.Tensor:
        off = self.offsets.get(device)
        if off is None:
            off = static_buffer(torch.zeros((), dtype=torch.int64, device=device))
            self.offsets[device] = off
            self.offset_items.append((off, off.numpy() if off.device.type == "cpu" else None))
        return off

    # -- the top-level model's hooks: its 2-D mask, for the backbone call inside it

    def top_pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not self.enabled:
            return None
        named = _bind(self._top_names, args, kwargs)
        st = self.state
        mask = named.get(self.layers.mask_arg)
        ids = named.get(self.layers.ids_arg)
        st.top_mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        st.top_ids = ids if isinstance(ids, torch.Tensor) and ids.dim() == 2 else None
        return None

    def top_post_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        st = self.state
        st.top_mask = st.top_ids = None
        return None

    # -- the backbone's hooks

    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not self.enabled:
            return None
        named = _bind(self._arg_names, args, kwargs)
        st = self.state
        ids = named.get("input_ids")
        ref = next((named[n] for n in _SIZE_ARGS if isinstance(named.get(n), torch.Tensor)), None)
        if ref is None:
            ref = next((a for a in args if isinstance(a, torch.Tensor) and a.dim() == 3), None)
        if ref is None or ref.dim() < 2:
            raise AxisSteerError(
                f"{type(module).__name__}.forward was called without input_ids, inputs_embeds or hidden states; "
                "axis_steer needs one of them to know the batch and sequence length"
            )
        st.batch, st.seq = int(ref.shape[0]), int(ref.shape[1])
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            # the backbone got embeddings: the token ids are the top-level call's, if any
            top = st.top_ids
            fits = top is not None and top.shape[0] == st.batch and top.shape[1] >= st.seq
            ids = top[:, top.shape[1] - st.seq :] if fits else None
        cache = next((named[n] for n in _CACHE_ARGS if named.get(n) is not None), None)
        eager = not torch.compiler.is_compiling()
        past = cache_past(cache)
        if past is None and cache is not None and eager:
            past = self._seen.past(cache)
        st.mask, st.past, st.source = read_padding(
            named.get("attention_mask"), st.top_mask, st.batch, st.seq, past, check=eager
        )
        st._mask_on = {}
        st.active = True
        for att in self.attachments:
            att._check_batch(st.batch)
            for mon in att._monitors:
                mon._begin_forward(st, ids, cache)
            for pol in att._policies:
                if pol.runs_at is not None:
                    pol._begin_forward(st, cache)
        self._last = st
        if cache is not None and eager and not isinstance(st.past, torch.Tensor):
            self._seen.note(cache, st.past + st.seq)
        host = type(st.past) is int and eager
        for off, view in self.offset_items:
            if host and view is not None:
                view[()] = st.past  # a CPU offset in eager mode: no operator call
            elif isinstance(st.past, torch.Tensor):
                off.copy_(st.past)
            else:
                off.fill_(st.past)
        return None

    def post_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        if torch.compiler.is_compiling():
            return None
        for att in self.attachments:
            for mon in att._monitors:
                mon._end_forward()
        return None


class _TokensSeen:
    """Tokens that went through each cache object while attached: the past
    length of recurrent caches that cannot count their own (Mamba's, xLSTM's
    raise on ``get_seq_length``), used when no 2-D mask gives it."""

    def __init__(self) -> None:
        self._n: dict[int, tuple[Any, int]] = {}

    def past(self, cache: Any) -> int | None:
        fresh = getattr(cache, "has_previous_state", None)
        if callable(fresh):
            try:
                if not fresh():
                    return 0
            except Exception:  # a cache with no recurrent layer
                pass
        entry = self._n.get(id(cache))
        return entry[1] if entry is not None and entry[0]() is cache else None

    def note(self, cache: Any, n: int) -> None:
        key = id(cache)
        try:
            ref = weakref.ref(cache, lambda _, key=key: self._n.pop(key, None))
        except TypeError:  # lists, tuples: no weak references (and no use: they are rebuilt per step)
            return
        self._n[key] = (ref, int(n))


def _arg_names(module: nn.Module) -> list[str]:
    return [p for p in inspect.signature(module.forward).parameters if p != "self"]


def _has_positional(module: nn.Module) -> bool:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    return any(p.kind in kinds for p in inspect.signature(module.forward).parameters.values())


def _bind(names: list[str], args: tuple, kwargs: dict) -> dict:
    named = dict(kwargs)
    for name, value in zip(names, args):
        named.setdefault(name, value)
    return named


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
        hidden = block_hidden(output, self.index)
        grad = torch.is_grad_enabled() and hidden.requires_grad
        recompute = grad and torch._C._current_graph_task_id() != -1
        st = hooks.state
        if recompute and not st.active:  # checkpointing recomputes on autograd's device threads
            st = hooks._last
        _check_shape(hidden, st, hooks.layers.hidden_size, self.index)
        eager = not torch.compiler.is_compiling()
        result = hidden
        for att in hooks.attachments:
            prog = att._programs.get(self.index)
            if prog is None:
                continue
            mask = st.mask_on(result.device) if st.mask is not None else None
            if eager and not grad and type(result) is torch.Tensor:
                # the operator's body without the dispatcher: the host time per
                # call is what capping costs in eager generation
                args = prog.direct if prog.direct_epoch == att._epoch else _direct_args(att, prog, result.device)
                _DIRECT(result, prog.dirs, prog.codes, prog.params, mask, *args)
                continue
            rec = None if recompute else prog.record
            if prog.latches or prog.gates:
                result = _run_gated(att, prog, result, mask, rec, grad, recompute)
            elif grad:
                if rec is not None:
                    with torch.no_grad():
                        probe = result.detach().clone()
                        _OPS.apply_(probe, prog.dirs, prog.ops, prog.params, mask, *rec, hooks.offset_on(probe.device))
                result, _ = _OPS.apply(result, prog.dirs, prog.ops, prog.params, mask)
            elif rec is None:
                _OPS.apply_(result, prog.dirs, prog.ops, prog.params, mask)
            else:
                _OPS.apply_(result, prog.dirs, prog.ops, prog.params, mask, *rec, hooks.offset_on(result.device))
        if result is hidden:
            return None
        return _repack(output, result)


def _run_gated(
    att: Attachment, prog: _Program, h: torch.Tensor, mask: Any, rec: Any, grad: bool, recompute: bool
) -> torch.Tensor:
    """A layer's program with drift policies, through the dispatcher (traced or
    compiled code) or autograd: the latches whose detection layer this is
    (their scan first), then the steps, gated steps reading their policy's
    gate at the columns of this call. Under autograd the latches advance once
    (not again when checkpointing recomputes the layer). Eager calls take the
    direct entry point instead (_direct_args), latches and steps in one call."""
    off = att._hooks.offset_on(h.device)
    gates = [pol._gate_on(h.device) for pol in prog.gates]
    gate_of = list(prog.gate_of) if prog.gates else None
    record = rec if rec is not None else (None, None, None)
    if grad:
        with torch.no_grad():
            if not recompute:
                for pol in prog.latches:
                    params, state, ring, gate, u, p = pol._latch_args()
                    _OPS.latch_(h.detach(), params, off, state, ring, gate, u, p, mask)
            if rec is not None and prog.ops:
                probe = h.detach().clone()
                _OPS.apply_(probe, prog.dirs, prog.ops, prog.params, mask, *rec, off, gates, gate_of)
        if prog.ops:
            h, _ = _OPS.apply(h, prog.dirs, prog.ops, prog.params, mask, gates, gate_of, off)
        return h
    for pol in prog.latches:
        params, state, ring, gate, u, p = pol._latch_args()
        _OPS.latch_(h, params, off, state, ring, gate, u, p, mask)
    if prog.ops:
        _OPS.apply_(h, prog.dirs, prog.ops, prog.params, mask, *record, off, gates, gate_of)
    return h


def _direct_args(att: Attachment, prog: _Program, device: torch.device) -> tuple:
    """The direct entry point's arguments after the mask, for ``prog`` on
    ``device`` (record outputs, offset, gates, latches): kept on the program
    while the attachment's buffers stay (the attachment's epoch), except where
    a gate is copied from another device in every forward call."""
    if not (prog.gates or prog.latches):
        args = (None, None, None, None) if prog.record is None else (*prog.record, att._hooks.offset_on(device))
    else:
        record = prog.record if prog.record is not None else (None, None, None)
        gates = tuple(pol._gate_on(device) for pol in prog.gates)
        latches = tuple(_shared_direction(prog, pol._latch_args()) for pol in prog.latches)
        args = (*record, att._hooks.offset_on(device), gates, prog.gate_of or (), latches)
    if all(pol.device == device for pol in prog.gates):
        prog.direct, prog.direct_epoch = args, att._epoch
    return args


def _shared_direction(prog: _Program, latch: tuple) -> tuple:
    """A latch's arguments with its direction replaced by the same direction
    in the program's ``dirs`` when a projecting step uses it: the core then
    checks the direction once."""
    u = latch[4]
    if u is None:
        return latch
    for k, op in enumerate(prog.ops):
        if op != STEER and torch.equal(prog.dirs[k], u):
            return (*latch[:4], prog.dirs[k], latch[5])
    return latch


def _check_shape(hidden: torch.Tensor, st: _ForwardState, d: int, index: int) -> None:
    """The block's residual stream against the forward call's batch, length and hidden size."""
    if hidden.shape[-1] != d or (st.active and tuple(hidden.shape[:2]) != (st.batch, st.seq)):
        raise AxisSteerError(
            f"block {index} output has shape {tuple(hidden.shape)}; expected (batch, seq, hidden) = "
            f"({st.batch}, {st.seq}, {d}) for this call. Either these blocks do not carry the residual stream "
            "(name the right ones with layers=...), or the model's own forward changes the batch or the length "
            "between its input and its blocks (transformers' RWKV decode step broadcasts a batch of B to B x B "
            "rows, say: its batched generate is wrong with or without axis_steer; generate one sequence at a time)"
        )


def _repack(output: Any, hidden: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return hidden
    if isinstance(output, list):
        return [hidden, *output[1:]]
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
    policy: Latch | None = None  # runs only where this drift policy's gate is open


@dataclass
class _Program:
    """One layer's fused program on the layer's device."""

    dirs: torch.Tensor  # (K, d) float32
    ops: list[int]
    codes: tuple[int, ...]  # ops, for the direct entry point
    params: torch.Tensor  # (K, 2) or (K, 2, batch, 1) float32
    entries: list[_Entry | None]  # None for the monitor's own PROJECT step
    record: tuple | None = None  # (p_in, p_out, fired) monitor buffers
    latches: list[Latch] = field(default_factory=list)  # policies detecting here, run first
    gates: list[Latch] = field(default_factory=list)  # policies whose gates the steps read
    gate_of: tuple[int, ...] | None = None  # per step, its index in gates (-1: ungated)
    direct: tuple | None = None  # the direct entry's arguments, valid while direct_epoch is current
    direct_epoch: int = -1


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

    @property
    def policy(self) -> Latch | None:
        """The drift policy this intervention runs under (None: unconditional)."""
        return self._entries[0].policy if self._entries else None

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
            e.a = self._att._finite_rows(c, f"coef at layer {e.layer}") * self._scale[e.layer]
        self._att._write_params(set(layers))


class Ablation(_Intervention):
    """Set-projection / ablation at some layers (see :meth:`Attachment.ablate`)."""

    def set_target(self, target: Any) -> None:
        layers = [e.layer for e in self._entries]
        per_layer = self._att._per_layer(layers, target, "target")
        for e, t in zip(self._entries, per_layer):
            e.a = self._att._finite_rows(t, f"target at layer {e.layer}")
        self._att._write_params(set(layers))


# ---- the attachment -------------------------------------------------------------------------------


class Attachment:
    """All interventions for one model (see the module docs for an example).

    ``axis`` is an :class:`~axis_steer.runtime.formats.Axis` or a raw ``(n_layers, d)``
    tensor pointing toward the Assistant (stored raw; its unit rows are used for
    projections). It may be omitted when only explicit directions are used
    (:meth:`cap_config`). ``layers`` overrides block discovery
    (:func:`axis_steer.runtime.models.find_layers`); ``stack`` chooses the stack
    of an encoder-decoder model: ``"decoder"`` (default) or ``"encoder"``.
    :meth:`describe` says what was found."""

    def __init__(
        self, model: nn.Module, axis: Axis | torch.Tensor | None = None, *, layers: Any = None, stack: str | None = None
    ) -> None:
        self.model = model
        self._layers = find_layers(model, layers, stack=stack)
        n, d = len(self._layers), self._layers.hidden_size
        if axis is not None and not isinstance(axis, Axis):
            axis = Axis(axis)
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
        self._policies: list[Latch] = []
        self._epoch = 0  # bumped whenever a buffer a program's call reads may have moved

    def describe(self) -> str:
        """Which blocks are hooked (path, count, stack), how each call's padding
        is read, and, once a forward has run, where the last one's was read from."""
        text = str(describe(self._layers))
        hooks = self._hooks
        if hooks is not None and hooks.state.source:
            text += f"\nlast call (this thread): {hooks.state.batch} x {hooks.state.seq} tokens, padding from {hooks.state.source}"
        return text

    # -- helpers for arguments

    @property
    def n_layers(self) -> int:
        return len(self._layers)

    def _layer_list(self, layers: int | Iterable[int] | None, what: str) -> list[int]:
        return as_layers(layers, f"{what}: layers", self.n_layers)

    def _unit_axis(self, layer: int) -> torch.Tensor:
        if self.axis is None:
            raise ValueError("this attachment has no axis: pass axis= or give an explicit direction=")
        u = self._units.get(layer)
        if u is None:
            u = self.axis.unit(layer)
            self._units[layer] = u
        return u

    def _direction(self, direction: Any, layer: int, unit: bool, what: str) -> torch.Tensor:
        """A direction given by the user: ``(d,)``, or ``(n_layers, d)`` (an
        :class:`Axis` too) whose row ``layer`` is taken; any float dtype."""
        n, d = self.n_layers, self._layers.hidden_size
        if isinstance(direction, Axis):
            direction = direction.vectors
        name = f"{what}: direction"
        if getattr(direction, "ndim", 1) == 2:
            v = as_float_array(direction, name, (n, d), narrow=True, expected=f"shape ({d},) or (n_layers, {d}) = ({n}, {d})")[layer]
        else:
            v = as_direction(direction, name, d, narrow=True)
        v = torch.as_tensor(v).detach().cpu()
        u = unit_vector(v, f"{what}: direction at layer {layer}")
        return u if unit else v

    def _per_layer(self, layers: list[int], values: Any, what: str) -> list[Any]:
        """One value per layer from a scalar, a sequence over ``layers``, a
        ``{layer: value}`` mapping, a per-layer sequence over all layers, or a
        ``(batch, len(layers))`` per-row tensor (or array). The values
        themselves are checked by the caller."""
        expected = (
            f"a number, one value per layer given ({len(layers)}), one per model layer ({self.n_layers}), "
            "a {layer: value} dict, or a (batch, n_layers_given) tensor"
        )
        if values is None or isinstance(values, (str, bytes, set, frozenset)):
            raise TypeError(f"{what} = {show(values)} (expected {expected})")
        if isinstance(values, Mapping):
            missing = [layer for layer in layers if layer not in values]
            if missing:
                raise ValueError(f"{what}: no value for layers {missing} (keys: {sorted(values, key=str)[:12]})")
            return [values[layer] for layer in layers]
        if isinstance(values, np.ndarray):
            values = torch.as_tensor(as_real(values, what)) if values.ndim else values[()]
        if isinstance(values, torch.Tensor):
            if values.dim() == 0:
                return [values] * len(layers)
            if values.dim() == 2:
                if values.shape[1] != len(layers):
                    raise ValueError(
                        f"{what}: per-row tensor of shape {tuple(values.shape)} (expected (batch, {len(layers)}))"
                    )
                return [values[:, j] for j in range(len(layers))]
            if values.dim() != 1:
                raise ValueError(f"{what}: shape {tuple(values.shape)} (expected {expected})")
        elif not hasattr(values, "__iter__"):
            return [values] * len(layers)  # a scalar; the caller checks it is a number
        seq = list(values)
        if len(seq) == len(layers):
            return seq
        if len(seq) == self.n_layers:
            return [seq[layer] for layer in layers]
        raise ValueError(f"{what}: {len(seq)} values for {len(layers)} layers (expected {expected})")

    def _row_values(self, value: Any, what: str, dtype: torch.dtype = torch.float32) -> Any:
        """A number stays a Python value (a float, or a bool for flags); per-row
        values (a sequence, an array or a tensor) are one value per batch row and
        switch the attachment to per-row control. Checked as
        :func:`~axis_steer.runtime.checks.as_real` (flags: ``as_mask``) does."""
        if dtype == torch.bool and value is None:
            raise TypeError(f"{what} is None (expected True, False, or one flag per batch row)")
        v = as_mask(value, what) if dtype == torch.bool else as_real(value, what)
        if isinstance(v, (bool, float)):
            return v
        t = torch.as_tensor(v).detach().cpu()
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

    def _finite_rows(self, value: Any, what: str) -> Any:
        """:meth:`_row_values` of a finite coefficient or target."""
        return self._row_values(as_real(value, what, finite=True), what)

    def _bounds(self, layers: list[int], thresholds: Any, side: str) -> list[tuple[Any, Any]]:
        as_choice(side, "side", SIDES)
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
            where = f"thresholds at layer {layer}"
            lo, hi = check_bounds(lo, hi, where)
            out.append((self._row_values(lo, where), self._row_values(hi, where)))
        return out

    # -- building

    def cap(
        self,
        layers: int | Iterable[int],
        thresholds: Any,
        *,
        side: str = "floor",
        direction: Any = None,
        policy: Latch | None = None,
    ) -> Cap:
        """Caps the projection on the unit axis (or ``direction``) at ``layers``.

        ``side="floor"`` (default, the paper's cap): ``<h, â> >= threshold``;
        ``"ceiling"``: ``<= threshold``; ``"band"``: thresholds are ``(lo, hi)``.
        ``thresholds``: a scalar, one value per layer given, one per model layer,
        or a ``{layer: value}`` dict. Per batch row: a ``(batch, n_layers_given)``
        tensor, or ``(batch,)`` tensors as the values of the dict. Units: the
        residual stream's (a projection on a unit vector). ``±inf`` on the open
        side means no bound. ``policy``: a drift policy of this attachment
        (:meth:`latch`); the cap then runs only where it has latched."""
        layers = self._layer_list(layers, "cap")
        self._check_policy(policy, layers, "cap")
        bounds = self._bounds(layers, thresholds, side)
        entries = []
        for layer, (lo, hi) in zip(layers, bounds):
            on_axis = direction is None
            u = self._unit_axis(layer) if on_axis else self._direction(direction, layer, True, "cap")
            entries.append(_Entry(layer, CLAMP, u, lo, hi, True, on_axis, policy))
        return self._add(Cap(self, entries, side))

    def cap_config(self, config: CapConfig, *, policy: Latch | None = None) -> Cap:
        """Applies a capping configuration exactly: each entry keeps
        ``<h, direction>`` within ``[lo, hi]`` at its layer, several on one layer
        in list order. A reference experiment (``ReferenceCappingConfig.experiment``)
        is a ceiling at ``cap`` on each normalised stored vector — with the
        released ``v = -axis`` vectors, a floor at ``-cap`` on the +axis."""
        if not isinstance(config, CapConfig):
            raise TypeError(
                f"config = {show(config)} (expected a CapConfig: formats.load_caps(path), or "
                "load_capping_config(path).experiment(id))"
            )
        if not config.entries:
            raise ValueError("config: no capping entries (was every intervention without a 'cap'?)")
        entries = []
        for j, e in enumerate(config.entries):
            if not isinstance(e, CapEntry):
                raise TypeError(f"config entry {j} = {show(e)} (expected a CapEntry)")
            layer = as_layer(e.layer, f"config entry {j}: layer", self.n_layers)
            u = self._direction(e.direction, layer, True, f"config entry {j}")
            lo, hi = check_bounds(e.lo, e.hi, f"config entry {j} (layer {layer})")
            if not isinstance(lo, float) or not isinstance(hi, float):
                raise TypeError(f"config entry {j} (layer {layer}): lo and hi must be numbers (got per-row values)")
            on_axis = self.axis is not None and bool(torch.equal(u, self._unit_axis(layer)))
            entries.append(_Entry(layer, CLAMP, u, lo, hi, True, on_axis, policy))
        self._check_policy(policy, [e.layer for e in entries], "cap_config")
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
        policy: Latch | None = None,
    ) -> Steer:
        """Adds the axis (or ``direction``) to the residual stream at ``layers``.

        ``units="axis"``: ``h += coef * axis[L]`` with the raw axis row, so
        ``coef`` is in units of ``||axis[L]||`` (the reference's convention).
        ``units="residual"``: ``h += coef * r_L * â_L`` with ``r_L`` the mean
        residual-stream norm at ``L`` (``residual_norms``, e.g. from
        :func:`axis_steer.pipeline.extract.residual_norms`), so ``coef`` is a fraction of a typical
        activation (the paper's convention). Negative ``coef`` steers away
        from the Assistant."""
        as_choice(units, "units", _UNITS)
        layers = self._layer_list(layers, "steer")
        self._check_policy(policy, layers, "steer")
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
                s = as_float(norms[j], f"residual_norms at layer {layer}", min=0.0, min_open=True)
            if not torch.isfinite(w).all():
                raise ValueError(f"steer: the vector at layer {layer} holds NaN or inf")
            scale[layer] = s
            value = self._finite_rows(c, f"coef at layer {layer}")
            entries.append(_Entry(layer, STEER, w, value * s, 0.0, True, False, policy))
        return self._add(Steer(self, entries, units, scale))

    def ablate(
        self, layers: int | Iterable[int], *, target: Any = 0.0, direction: Any = None, policy: Latch | None = None
    ) -> Ablation:
        """Sets the projection on the unit axis (or ``direction``) to ``target``
        at ``layers``: ``h += â (target - <h, â>)``; ``target=0`` removes the
        component (directional ablation)."""
        layers = self._layer_list(layers, "ablate")
        self._check_policy(policy, layers, "ablate")
        targets = self._per_layer(layers, target, "target")
        entries = []
        for layer, t in zip(layers, targets):
            on_axis = direction is None
            u = self._unit_axis(layer) if on_axis else self._direction(direction, layer, True, "ablate")
            value = self._finite_rows(t, f"target at layer {layer}")
            entries.append(_Entry(layer, SET, u, value, 0.0, True, on_axis, policy))
        return self._add(Ablation(self, entries))

    def latch(
        self,
        layer: int,
        threshold: float,
        *,
        k: int = 3,
        window: int | None = None,
        release: float | None = None,
        release_k: int = 3,
        phases: str = "both",
        direction: Any = None,
        capacity: int = 1024,
        name: str | None = None,
    ) -> Latch:
        """A drift policy watching ``layer`` (see :mod:`axis_steer.runtime.policies`).

        A sequence latches once its projection on the unit axis (or
        ``direction``) at ``layer`` stays below ``threshold`` for ``k``
        consecutive real tokens (with ``window=W``: once the mean of its last
        ``W`` projections does); interventions made with ``policy=`` this
        latch then run on it from the next token on. With ``release``, a
        latched sequence lets go after ``release_k`` consecutive tokens above
        ``release`` (>= ``threshold``). ``phases``: ``"both"``, ``"prompt"`` or
        ``"generated"``, the calls on which the gate may open. Units: the
        residual stream's, like cap thresholds. Parameters are retuned with
        :meth:`Latch.configure` (tensors only)."""
        layer = as_layer(layer, "latch: layer", self.n_layers)
        if direction is None:
            u = self._unit_axis(layer)
        else:
            u = self._direction(direction, layer, True, "latch")
        pol = Latch(
            self,
            layer,
            u,
            threshold=threshold,
            k=k,
            window=1 if window is None else window,
            release=release,
            release_k=release_k,
            phases=phases,
            start=False,
            capacity=capacity,
            name=name or f"latch{len(self._policies)}",
        )
        self._policies.append(pol)
        self._rebuild()
        return pol

    def phases(self, phases: str = "generated", *, capacity: int = 1024, name: str | None = None) -> Latch:
        """A policy of phases alone: interventions made with ``policy=`` it run
        only on prefill calls (``"prompt"``) or only on decode steps
        (``"generated"``: one token per row after a prefill). It runs at the
        first layer it gates and watches nothing."""
        pol = Latch(
            self,
            None,
            None,
            threshold=None,
            k=1,
            window=1,
            release=None,
            release_k=1,
            phases=phases,
            start=True,
            capacity=capacity,
            name=name or f"phases{len(self._policies)}",
        )
        self._policies.append(pol)
        return pol

    def _check_policy(self, policy: Latch | None, layers: list[int], what: str) -> None:
        if policy is None:
            return
        if not isinstance(policy, Latch) or policy._att is not self:
            raise ValueError(f"{what}: policy={policy!r} (expected a policy of this attachment, from att.latch(...))")
        if policy not in self._policies:
            raise ValueError(f"{what}: policy {policy.name} was removed from this attachment")
        if policy.layer is not None:
            early = [x for x in layers if x < policy.layer]
            if early:
                raise ValueError(
                    f"{what}: layers {early} come before the policy's detection layer {policy.layer}; a gated "
                    "intervention must sit at the detection layer or after it (a token's gate is known once the "
                    "detection layer has seen the tokens before it, and later layers cannot move what it reads). "
                    f"Detect at layer {min(layers)} or earlier, or gate layers >= {policy.layer} only"
                )

    def _gate(self, item: _Intervention, policy: Latch | None) -> None:
        """Puts ``item`` under ``policy`` (None: unconditional again)."""
        self._check_policy(policy, item.layers, "gate")
        for e in item._entries:
            e.policy = policy
        self._rebuild()

    def _remove_policy(self, policy: Latch) -> None:
        if policy in self._policies:
            self._policies.remove(policy)
        for item in self._interventions:
            for e in item._entries:
                if e.policy is policy:
                    e.policy = None
        self._rebuild()

    def monitor(self, layers: int | Iterable[int] | None = None, *, capacity: int = 1024) -> Monitor:
        """Records drift readings at ``layers`` (default: the middle layer).
        ``capacity`` is the initial number of tokens held per sequence (grown as
        needed in eager mode; with a static cache it is the cache length)."""
        if self.axis is None:
            raise ValueError("monitor: this attachment has no axis to project on")
        if layers is None:
            layers = [self.n_layers // 2]
        layers = self._layer_list(layers, "monitor")
        capacity = as_positive_int(capacity, "monitor: capacity")
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
        for pol in self._policies:  # a policy of phases alone runs at the first layer it gates
            gated = [e.layer for item in self._interventions for e in item._entries if e.policy is pol]
            pol.runs_at = pol.layer if pol.layer is not None else (min(gated) if gated else None)
            if pol.runs_at is not None:
                pol._place()
        detecting = {pol.runs_at for pol in self._policies if pol.runs_at is not None}
        programs: dict[int, _Program] = {}
        for layer in sorted(set(by_layer) | monitored | detecting):
            entries = sorted(by_layer.get(layer, []), key=lambda e: _KIND_ORDER[e.op])
            steps: list[_Entry | None] = list(entries)
            if layer in monitored and not (entries and entries[0].on_axis):
                steps.insert(0, None)  # PROJECT on the unit axis
            dev = self._layers.device(layer)
            rows = [self._unit_axis(layer) if s is None else s.direction for s in steps]
            dirs = torch.stack(rows) if rows else torch.zeros((0, self._layers.hidden_size))
            dirs = static_buffer(dirs.to(dev))
            ops = [PROJECT if s is None else s.op for s in steps]
            prog = _Program(dirs, ops, tuple(ops), torch.empty(0), steps)
            prog.latches = [pol for pol in self._policies if pol.runs_at == layer]
            for s in steps:
                if s is not None and s.policy is not None and s.policy not in prog.gates:
                    prog.gates.append(s.policy)
            if prog.gates:
                prog.gate_of = tuple(-1 if s is None or s.policy is None else prog.gates.index(s.policy) for s in steps)
            programs[layer] = prog
        self._programs = programs
        self._write_params(set(programs))
        self._bind_records()
        if self._hooks is not None:
            self._hooks.refresh()

    def _bind_records(self) -> None:
        self._epoch += 1
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
                self._epoch += 1

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
        self._epoch += 1  # the offsets the programs' calls read are these hooks'
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
