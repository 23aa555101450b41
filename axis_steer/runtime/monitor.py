"""Monitoring: the :class:`Monitor` an :class:`~axis_steer.runtime.hooks.Attachment`
records into during the forward pass (device buffers, no host synchronisation),
and the :class:`Readings` it gives afterwards, aligned with the tokens, with
per-turn aggregation and a trajectory plot.

Units: projections on the layer's *unit* axis, in residual-stream units;
higher is more Assistant-like. ``p_in`` is the block's output before that
layer's interventions, ``p_out`` after them (equal where nothing intervened).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from axis_steer.errors import AxisSteerError

if TYPE_CHECKING:  # pragma: no cover
    from axis_steer.runtime.hooks import Attachment


@dataclass
class Readings:
    """Per token, per monitored layer, per batch row.

    Shapes: ``p_in``, ``p_out`` float32 and ``fired`` bool are
    ``(batch, n_monitored_layers, T)``; ``valid`` (False on padding) and
    ``tokens`` (token ids, -1 where unknown) are ``(batch, T)``; position ``t``
    is the ``t``-th position of the (left-padded) sequence, prompt then
    generated tokens. Padding positions hold NaN and are never counted.
    ``policies``: the decisions of the attachment's drift policies, one
    :class:`~axis_steer.runtime.policies.PolicyReadings` each (per token
    whether the gate was open, per row where it latched), same positions."""

    layers: list[int]
    p_in: np.ndarray
    p_out: np.ndarray
    fired: np.ndarray
    valid: np.ndarray
    tokens: np.ndarray
    policies: list = field(default_factory=list)

    @property
    def batch(self) -> int:
        return int(self.valid.shape[0])

    @property
    def length(self) -> int:
        return int(self.valid.shape[1])

    def _li(self, layer: int | None) -> int:
        if layer is None:
            return 0
        if layer not in self.layers:
            raise ValueError(f"layer {layer} was not monitored (monitored: {self.layers})")
        return self.layers.index(layer)

    def row(self, b: int = 0, layer: int | None = None, which: str = "p_in") -> np.ndarray:
        """The readings of batch row ``b`` at ``layer`` without padding: ``(n_tokens,)``."""
        if which not in ("p_in", "p_out", "fired"):
            raise ValueError(f"which={which!r} (expected 'p_in', 'p_out' or 'fired')")
        arr = getattr(self, which)[b, self._li(layer)]
        return arr[self.valid[b]]

    def row_tokens(self, b: int = 0) -> np.ndarray:
        return self.tokens[b][self.valid[b]]

    def fire_rate(self) -> dict[int, float]:
        """Fraction of real tokens on which a cap fired, per monitored layer."""
        n = max(int(self.valid.sum()), 1)
        return {layer: float(self.fired[:, i][self.valid].sum()) / n for i, layer in enumerate(self.layers)}

    def per_turn(
        self, spans: Sequence[Sequence[tuple[int, int]]], layer: int | None = None, which: str = "p_in"
    ) -> list[np.ndarray]:
        """Mean reading over each assistant turn, per batch row.

        ``spans[b]`` lists ``(start, end)`` token ranges of row ``b``'s assistant
        turns, in the row's own token positions (no padding), as
        :mod:`axis_steer.pipeline.spans` gives them. Returns one ``(n_turns,)`` array per
        row (NaN for a turn outside the recorded tokens)."""
        if len(spans) != self.batch:
            raise ValueError(f"spans: {len(spans)} rows for a batch of {self.batch}")
        out = []
        for b, row_spans in enumerate(spans):
            values = self.row(b, layer, which).astype(np.float64)
            means = []
            for start, end in row_spans:
                if not 0 <= start < end <= len(values):
                    means.append(np.nan)
                    continue
                means.append(float(np.nanmean(values[start:end])))
            out.append(np.asarray(means))
        return out

    def to_json(self, path: str | Path) -> Path:
        """Writes the readings (NaN as null) as JSON."""
        path = Path(path)

        def clean(a: np.ndarray) -> Any:
            return [[None if not np.isfinite(x) else float(x) for x in r] for r in a]

        data = {
            "layers": self.layers,
            "valid": self.valid.tolist(),
            "tokens": self.tokens.tolist(),
            "p_in": [clean(self.p_in[b]) for b in range(self.batch)],
            "p_out": [clean(self.p_out[b]) for b in range(self.batch)],
            "fired": self.fired.tolist(),
            "policies": [
                {"name": r.name, "layer": r.layer, "gate": r.gate.tolist(), "latched_at": r.state.latched_at.tolist()}
                for r in self.policies
            ],
        }
        path.write_text(json.dumps(data))
        return path

    def plot(
        self,
        b: int = 0,
        layer: int | None = None,
        *,
        thresholds: float | None = None,
        spans: Sequence[tuple[int, int]] | None = None,
        ax: Any = None,
        title: str | None = None,
    ) -> Any:
        """The trajectory of row ``b`` at ``layer``: projection before (and,
        where different, after) the interventions per token, the threshold,
        shaded assistant turns. Returns the matplotlib Axes."""
        if ax is None:
            from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

            ax = Figure(figsize=(9, 3.2)).subplots()
        li = self._li(layer)
        p_in = self.row(b, self.layers[li], "p_in")
        p_out = self.row(b, self.layers[li], "p_out")
        x = np.arange(len(p_in))
        for start, end in spans or ():
            ax.axvspan(start - 0.5, end - 0.5, color="tab:green", alpha=0.08, lw=0)
        ax.plot(x, p_in, lw=1.2, color="tab:blue", label="projection (before)")
        if not np.allclose(p_in, p_out, equal_nan=True):
            ax.plot(x, p_out, lw=1.2, color="tab:orange", label="after interventions")
        if thresholds is not None:
            ax.axhline(thresholds, color="tab:red", ls="--", lw=1, label="cap threshold")
        ax.set_xlabel("token")
        ax.set_ylabel(f"Assistant projection (layer {self.layers[li]})")
        ax.set_title(title or "Drift along the Assistant Axis")
        ax.legend(loc="best", fontsize=8)
        return ax


def static_buffer(t: torch.Tensor) -> torch.Tensor:
    """Marks a buffer that compiled code reads or writes in place as having a
    fixed address (it is never reallocated while the shapes stay), so that
    inductor can keep CUDA graphs around it."""
    mark = getattr(torch._dynamo, "mark_static_address", None)
    if mark is not None and not torch.compiler.is_compiling():
        mark(t)
    return t



def cache_capacity(cache: Any) -> int:
    """Tokens a static cache holds (0 when unknown). ``get_max_length()`` where
    the cache has it: transformers 5 deprecates ``max_cache_len`` with a logged
    warning, and a logging call inside compiled code is a graph break."""
    get = getattr(cache, "get_max_length", None)
    n = get() if callable(get) else getattr(cache, "max_cache_len", 0)
    return max(int(n or 0), 0)



# ---- the monitor's buffers ---------------------------------------------------------------------


class Monitor:
    """Drift readings: per token, per monitored layer, per batch row, the
    projection on the layer's unit axis before the layer's interventions
    (``p_in``), after them (``p_out``) and whether a cap fired. Recorded on
    the device during the forward pass with no host synchronisation; memory is
    three scalars per token and layer. Read with :meth:`readings`.

    Position ``t`` is column ``t`` of the (left-padded) sequence: a call's
    first new token sits after its past, read from the 2-D mask's width, the
    cache's length or, for recurrent caches that cannot count (Mamba's), the
    tokens that went through that cache object.

    Threads: a monitor records one thread's sequences at a time. A forward
    from another thread while one records, or one that continues a sequence
    after another thread started a new one, raises :class:`AxisSteerError`
    rather than mix the readings."""

    def __init__(self, att: Attachment, layers: list[int], capacity: int) -> None:
        self._att = att
        self.layers = layers
        self.capacity = int(capacity)
        self._batch = 0
        self._bufs: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._tokens: torch.Tensor | None = None
        self._valid: torch.Tensor | None = None
        self._length: int | None = 0
        self._end: torch.Tensor | None = None  # device end position when the host cannot know it
        self._seen = False  # a forward went through the hooks (set, never read, in traced code)
        self._count: torch.Tensor | None = None  # forwards recorded, on the device (no guard, no sync)
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread whose sequence the buffers hold
        self._busy: int | None = None  # the thread whose forward is recording now

    # -- buffers

    def _alloc(self, batch: int, capacity: int, input_device: torch.device) -> None:
        old_bufs, old_tokens, old_valid = self._bufs, self._tokens, self._valid
        keep = min(self.capacity, capacity) if batch == self._batch else 0
        self._bufs = {}
        for layer in self.layers:
            dev = self._att._layers.device(layer)
            p_in = static_buffer(torch.full((batch, capacity), math.nan, dtype=torch.float32, device=dev))
            p_out = static_buffer(torch.full((batch, capacity), math.nan, dtype=torch.float32, device=dev))
            fired = static_buffer(torch.zeros((batch, capacity), dtype=torch.bool, device=dev))
            if keep and layer in old_bufs:
                for new, old in zip((p_in, p_out, fired), old_bufs[layer]):
                    new[:, :keep] = old[:, :keep]
            self._bufs[layer] = (p_in, p_out, fired)
        tokens = static_buffer(torch.full((batch, capacity), -1, dtype=torch.int64, device=input_device))
        valid = static_buffer(torch.zeros((batch, capacity), dtype=torch.bool, device=input_device))
        count = static_buffer(torch.zeros((), dtype=torch.int64, device=input_device))
        if self._count is not None:
            count.copy_(self._count.to(input_device))
        self._count = count
        if keep and old_tokens is not None:
            tokens[:, :keep] = old_tokens[:, :keep]
            valid[:, :keep] = old_valid[:, :keep]
        self._tokens, self._valid = tokens, valid
        self._batch, self.capacity = batch, capacity
        self._att._bind_records()

    def _claim(self, new_sequence: bool) -> None:
        """One thread's sequences at a time: a forward from another thread while
        one is in flight, or one that continues a sequence another thread
        started, is refused (its readings would mix into the other's)."""
        me = threading.get_ident()
        with self._lock:
            if self._busy is not None and self._busy != me:
                raise AxisSteerError(
                    "this Monitor is recording a forward call of another thread; a Monitor records one thread's "
                    "sequences at a time (readings from concurrent calls would interleave). Monitor from one "
                    "thread, or give each thread its own model."
                )
            if not new_sequence and self._owner is not None and self._owner != me:
                raise AxisSteerError(
                    "this Monitor's current sequence was started by another thread; its readings would mix with "
                    "this thread's. Monitor from one thread, or give each thread its own model."
                )
            if new_sequence:
                self._owner = me
            self._busy = me

    def _end_forward(self) -> None:
        if self._busy == threading.get_ident():
            self._busy = None

    def _begin_forward(self, st: Any, ids: torch.Tensor | None, cache: Any) -> None:
        device = ids.device if ids is not None else self._att._layers.device(0)
        past = st.past
        if not torch.compiler.is_compiling():
            self._claim(not isinstance(past, torch.Tensor) and past == 0)
        if isinstance(past, torch.Tensor):
            need = cache_capacity(cache) or self.capacity
        else:
            need = past + st.seq
        if st.batch != self._batch or need > self.capacity or self._tokens is None:
            cap = self.capacity
            while cap < need:
                cap *= 2
            self._alloc(st.batch, cap, device)
        valid = st.mask if st.mask is not None else torch.ones((st.batch, st.seq), dtype=torch.bool, device=device)
        tok = ids if ids is not None else torch.full((st.batch, st.seq), -1, dtype=torch.int64, device=device)
        if isinstance(past, torch.Tensor):
            cols = past.to(device) + torch.arange(st.seq, device=device)
            self._tokens.index_copy_(1, cols, tok.to(torch.int64))
            self._valid.index_copy_(1, cols, valid.to(device))
            self._end = past + st.seq
            self._length = None
        else:
            self._tokens[:, past : past + st.seq] = tok
            self._valid[:, past : past + st.seq] = valid.to(device)
            if past == 0:
                # a new sequence: forget the columns of the last one
                self._valid[:, st.seq :] = False
            self._length = past + st.seq
        self._seen = True
        self._count.add_(1)

    def remove(self) -> None:
        """Stops monitoring (the layer's hook goes if nothing else runs there)."""
        self._att._remove(self)

    def prepare(self, batch: int, capacity: int | None = None, device: Any = None) -> Monitor:
        """Allocates the buffers for ``batch`` rows and ``capacity`` tokens now.
        Eager runs do this by themselves; under torch.compile, a first call
        that allocates them is one more compilation, which this avoids."""
        if batch < 1 or (capacity is not None and capacity < 1):
            raise ValueError(f"batch={batch}, capacity={capacity} (expected positive numbers)")
        dev = torch.device(device) if device is not None else self._att._layers.device(0)
        self._alloc(int(batch), int(capacity or self.capacity), dev)
        return self

    def reset(self) -> None:
        """Forgets every reading."""
        self._batch = 0
        self._bufs = {}
        self._tokens = self._valid = None
        self._length = 0
        self._seen = False
        self._count = None
        self._att._bind_records()

    # -- reading

    def readings(self):
        """The readings of the current sequence(s), aligned with the tokens
        (prompt and generated): see :class:`axis_steer.runtime.monitor.Readings`.
        Reads device memory, so call it after the forward/generate call."""
        if not self._seen or self._tokens is None:
            raise AxisSteerError(
                "no forward pass has gone through the hooks since the monitor was created. If the model "
                "was compiled before attaching, the hooks are invisible to the compiled code: attach "
                "first, then compile (or reset dynamo with torch._dynamo.reset())."
            )
        length = self._length if self._length is not None else int(self._end)
        if length > self.capacity:
            raise AxisSteerError(
                f"the sequence reached {length} tokens but the monitor holds {self.capacity}; readings past "
                "that were not recorded. Create the monitor with a larger capacity."
            )
        bufs = [self._bufs[layer] for layer in self.layers]
        p_in = np.stack([b[0][:, :length].float().cpu().numpy() for b in bufs], 1)
        p_out = np.stack([b[1][:, :length].float().cpu().numpy() for b in bufs], 1)
        fired = np.stack([b[2][:, :length].cpu().numpy() for b in bufs], 1)
        valid = self._valid[:, :length].cpu().numpy()
        tokens = self._tokens[:, :length].cpu().numpy()
        p_in[~np.broadcast_to(valid[:, None, :], p_in.shape)] = np.nan
        p_out[~np.broadcast_to(valid[:, None, :], p_out.shape)] = np.nan
        fired &= valid[:, None, :]
        policies = [pol._readings(length, valid) for pol in self._att._policies if pol.runs_at is not None]
        return Readings(
            layers=list(self.layers), p_in=p_in, p_out=p_out, fired=fired, valid=valid, tokens=tokens, policies=policies
        )
