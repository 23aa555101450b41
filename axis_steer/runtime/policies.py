"""Drift policies: interventions that run only on the conversations that drift.

A policy belongs to an :class:`~axis_steer.runtime.hooks.Attachment` and makes
some of its interventions conditional, per sequence (row of the batch)::

    pol = att.latch(8, threshold=-1.25, k=3, window=8)   # watch layer 8
    cap = att.cap(range(8, 12), thresholds, policy=pol)   # capped once latched
    with att:
        model.generate(**inputs)
    pol.state().latched_at                                # where each row latched (-1: never)

The exact rule (the C core's, ``csrc/axis_steer.h``, "Drift latches"): at the
detection layer, before any intervention of the attachment there, each real
token's projection on the unit axis is the latch's signal (or, with
``window=W``, the mean of the sequence's last ``W`` finite projections, once
``W`` have been seen). Going through each sequence's real tokens in order:

* the token's gate is "latched before this token" (and its phase is open);
* not latched: ``run`` counts consecutive tokens with signal < ``threshold``;
  at ``k`` the sequence latches;
* latched, with a ``release`` threshold: ``up`` counts consecutive tokens with
  signal > ``release``; at ``release_k`` it lets go (hysteresis: ``release``
  is at or above ``threshold``).

So a gated intervention acts from the token after the one that latched, on
every later token of the sequence, until released. Padding never advances the
state and is never gated on. A forward call with past length 0 (a new
``generate``, or a forward without a cache) resets the state; so does
:meth:`Latch.reset`. Prompt tokens are watched like generated ones, so a
conversation whose history already drifted latches during its prompt.

Phases: ``phases="generated"`` gates on decode steps only (calls of one token
per row after a prefill), ``"prompt"`` on prefill calls only, ``"both"``
(default) on all. :meth:`Attachment.phases` makes a policy of phases alone.

Causality: a gated intervention must sit at the detection layer or after it,
so that the gate of every token is known before the layer runs, and the
detection layer reads projections the policy's own caps have not moved (a cap
at a layer changes later layers only). ``cap(..., policy=)`` refuses a layer
before the detection layer.

Everything the op reads lives in device tensors: the parameters (setters copy
into them), the per-row state, the per-token histories of the detection
projection and the gate, and the column offset (the past length) the
backbone pre-hook writes. No host synchronisation, and no recompilation when a
parameter changes, in eager mode, under torch.compile and in CUDA graphs. The
state follows batch rows: generation that reorders rows (beam search) is not
supported.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np
import torch

from axis_steer.errors import AxisSteerError
from axis_steer.runtime.checks import as_choice, as_float, as_int, as_positive_int
from axis_steer.runtime.monitor import cache_capacity, static_buffer

if TYPE_CHECKING:  # pragma: no cover
    from axis_steer.runtime.hooks import Attachment

__all__ = ["PHASES", "Latch", "LatchState", "PolicyReadings"]

#: Which calls a policy's gate may open on: (prompt calls, decode steps).
PHASES = {"both": (1.0, 1.0), "prompt": (1.0, 0.0), "generated": (0.0, 1.0)}

# the core's parameter and state slots (csrc/axis_steer.h: axs_latch_param, axs_latch_slot)
N_PARAMS, N_STATE = 8, 8
P_THRESHOLD, P_K, P_RELEASE, P_RELEASE_K, P_PROMPT, P_GENERATED, P_START = range(7)
S_LATCHED, S_LATCHED_AT, S_COUNT = 2, 5, 7


class LatchState(NamedTuple):
    """A policy's decisions per batch row, read from the device.

    ``latched``: whether the row is latched now; ``latched_at``: the position
    (column of the monitor's readings: prompt then generated tokens, padding
    included) of the token that first latched it since the last reset, -1 if
    none; capping starts at the next real token; ``count``: how many times it
    latched (more than once only with a release)."""

    latched: np.ndarray
    latched_at: np.ndarray
    count: np.ndarray


class PolicyReadings(NamedTuple):
    """A policy's per-token record, aligned with a monitor's readings.

    ``gate`` ``(batch, T)`` bool: the policy's gated interventions ran on the
    token; ``p`` ``(batch, T)`` float32: the detection projection (NaN on
    padding, and everywhere for a policy of phases alone)."""

    name: str
    layer: int | None
    gate: np.ndarray
    p: np.ndarray
    state: LatchState

    def latched_rows(self) -> np.ndarray:
        """Rows that latched at least once: ``(batch,)`` bool."""
        return self.state.latched_at >= 0


def _count(value: Any, what: str) -> int:
    """A number of tokens (float32 holds it exactly: at most 2**24)."""
    return as_int(value, what, min=1, max=2**24, expected="a number of tokens 1..16777216")


class Latch:
    """A drift policy (see the module docs); made by :meth:`Attachment.latch`
    or :meth:`Attachment.phases`, never directly."""

    def __init__(
        self,
        att: Attachment,
        layer: int | None,
        direction: torch.Tensor | None,
        *,
        threshold: float | None,
        k: int,
        window: int,
        release: float | None,
        release_k: int,
        phases: str,
        start: bool,
        capacity: int,
        name: str,
    ) -> None:
        self._att = att
        self.layer = layer  # the detection layer; None: phases alone
        self.window = _count(window, "window")
        self.capacity = as_positive_int(capacity, "capacity")
        self.name = name
        self._direction = direction  # (d,) float32 CPU unit vector, or None
        self._host = torch.zeros(N_PARAMS, dtype=torch.float32)
        self._host[P_START] = 1.0 if start else 0.0
        self._host[P_THRESHOLD] = math.nan  # no detection (phases alone) until a threshold is set
        self._params: torch.Tensor | None = None
        self._dir: torch.Tensor | None = None
        self._state: torch.Tensor | None = None
        self._ring: torch.Tensor | None = None
        self._p: torch.Tensor | None = None
        self._gate: torch.Tensor | None = None
        self._batch = 0
        self._gates_on: dict[torch.device, torch.Tensor] = {}
        self.runs_at: int | None = layer  # where the scan runs (set by the attachment)
        self.configure(threshold=threshold, k=k, release=release, release_k=release_k, phases=phases)

    # -- parameters (tensors only)

    @property
    def threshold(self) -> float:
        """The detection threshold (NaN for a policy of phases alone)."""
        return float(self._host[P_THRESHOLD])

    @property
    def k(self) -> int:
        return int(self._host[P_K])

    @property
    def release(self) -> float | None:
        r = float(self._host[P_RELEASE])
        return None if math.isnan(r) else r

    @property
    def release_k(self) -> int:
        return int(self._host[P_RELEASE_K])

    @property
    def phases(self) -> str:
        key = (float(self._host[P_PROMPT]), float(self._host[P_GENERATED]))
        return next(name for name, flags in PHASES.items() if flags == key)

    def configure(
        self,
        *,
        threshold: float | None = None,
        k: int | None = None,
        release: float | None | str = "keep",
        release_k: int | None = None,
        phases: str | None = None,
    ) -> None:
        """New parameters (the ones given); copies them into the device tensor
        the op reads, so compiled code and CUDA graphs keep running.
        ``release=None`` removes the release."""
        host = self._host.clone()
        if threshold is not None:
            if self.layer is None:
                raise ValueError("threshold: a policy of phases alone watches nothing (make one with att.latch)")
            host[P_THRESHOLD] = as_float(threshold, "threshold", expected="a finite projection (residual-stream units)")
        if k is not None:
            host[P_K] = _count(k, "k")
        if release != "keep":
            host[P_RELEASE] = math.nan if release is None else as_float(
                release, "release", expected="a finite projection, or None for no release"
            )
        if release_k is not None:
            host[P_RELEASE_K] = _count(release_k, "release_k")
        if phases is not None:
            host[P_PROMPT], host[P_GENERATED] = PHASES[as_choice(phases, "phases", list(PHASES))]
        rel, thr = float(host[P_RELEASE]), float(host[P_THRESHOLD])
        if not math.isnan(rel) and not math.isnan(thr) and rel < thr:
            raise ValueError(
                f"release={rel:g} is below threshold={thr:g} (expected release >= threshold: "
                "a sequence lets go once it is back above the release threshold)"
            )
        self._host = host
        if self._params is not None:
            self._params.copy_(host)

    def set_threshold(self, threshold: float) -> None:
        """A new detection threshold (residual-stream units on the unit axis)."""
        self.configure(threshold=threshold)

    # -- device buffers

    @property
    def device(self) -> torch.device:
        return self._att._layers.device(self.runs_at if self.runs_at is not None else 0)

    def _place(self) -> None:
        """Puts the parameters and the direction on the device the scan runs on
        (called by the attachment when it builds its programs)."""
        dev = self.device
        if self._params is None or self._params.device != dev:
            self._params = static_buffer(self._host.to(dev))
            self._dir = None if self._direction is None else static_buffer(self._direction.to(dev))
            self._state = None
            self._batch = 0

    def _alloc(self, batch: int, capacity: int) -> None:
        dev = self.device
        keep = min(self.capacity, capacity) if batch == self._batch and self._state is not None else 0
        state = static_buffer(torch.zeros((batch, N_STATE), dtype=torch.int64, device=dev))
        ring = static_buffer(torch.zeros((batch, self.window), dtype=torch.float32, device=dev))
        p = static_buffer(torch.full((batch, capacity), math.nan, dtype=torch.float32, device=dev))
        gate = static_buffer(torch.zeros((batch, capacity), dtype=torch.bool, device=dev))
        if keep:
            state.copy_(self._state)
            ring.copy_(self._ring)
            p[:, :keep] = self._p[:, :keep]
            gate[:, :keep] = self._gate[:, :keep]
        else:
            _reset_rows(state, self._host, None)
        self._state, self._ring, self._p, self._gate = state, ring, p, gate
        self._batch, self.capacity = batch, capacity
        self._att._epoch += 1  # the programs' calls must pick up the new buffers

    def _begin_forward(self, st: Any, cache: Any) -> None:
        """Sizes the buffers for this forward call (the backbone pre-hook)."""
        past = st.past
        need = (cache_capacity(cache) or self.capacity) if isinstance(past, torch.Tensor) else past + st.seq
        if st.batch != self._batch or need > self.capacity or self._state is None:
            cap = self.capacity
            while cap < need:
                cap *= 2
            self._alloc(st.batch, cap)
        if self._gates_on:
            self._gates_on = {}

    def _latch_args(self) -> tuple:
        """What the op needs: (params, state, ring, gate, dir, p)."""
        return (self._params, self._state, self._ring, self._gate, self._dir, self._p if self._dir is not None else None)

    def _gate_on(self, device: torch.device) -> torch.Tensor:
        """The gate history on ``device`` (a copy per forward call for layers
        on other devices than the detection layer's)."""
        g = self._gate
        if g.device == device:
            return g
        out = self._gates_on.get(device)
        if out is None:
            out = g.to(device)
            self._gates_on[device] = out
        return out

    def prepare(self, batch: int, capacity: int | None = None) -> Latch:
        """Allocates the state for ``batch`` rows and ``capacity`` tokens now
        (eager runs do it themselves; under torch.compile this avoids one
        more compilation)."""
        if batch < 1 or (capacity is not None and capacity < 1):
            raise ValueError(f"batch={batch}, capacity={capacity} (expected positive numbers)")
        self._place()
        self._alloc(int(batch), int(capacity or self.capacity))
        return self

    # -- state

    def reset(self, rows: int | Sequence[int] | np.ndarray | torch.Tensor | None = None) -> None:
        """Forgets the state of ``rows`` (all by default): not latched (or
        latched, for a policy of phases alone), counters at zero, the window
        empty. A new ``generate`` call resets every row by itself."""
        if self._state is None:
            return
        _reset_rows(self._state, self._host, rows)

    def state(self) -> LatchState:
        """The decisions per row (reads device memory: call it after a step)."""
        if self._state is None:
            raise AxisSteerError("no forward pass has gone through this policy yet")
        s = self._state.cpu().numpy()
        return LatchState(s[:, S_LATCHED] != 0, s[:, S_LATCHED_AT].copy(), s[:, S_COUNT].copy())

    def _readings(self, length: int, valid: np.ndarray) -> PolicyReadings:
        """The per-token record of the first ``length`` columns, for a monitor."""
        if self._state is None or length > self.capacity:
            n = valid.shape[0]
            empty = LatchState(np.zeros(n, bool), np.full(n, -1, np.int64), np.zeros(n, np.int64))
            return PolicyReadings(self.name, self.layer, np.zeros(valid.shape, bool),
                                  np.full(valid.shape, np.nan, np.float32), empty)
        gate = self._gate[:, :length].cpu().numpy() & valid
        p = np.array(self._p[:, :length].cpu().numpy(), dtype=np.float32)  # a copy: the buffer stays
        p[~valid] = np.nan
        if self._dir is None:
            p[:] = np.nan
        return PolicyReadings(self.name, self.layer, gate, p, self.state())

    def gate(self, *interventions: Any) -> Latch:
        """Puts interventions of the attachment (caps, steering, ablations) under
        this policy, as ``policy=`` does when they are made. Returns ``self``."""
        for item in interventions:
            self._att._gate(item, self)
        return self

    def remove(self) -> None:
        """Takes the policy out of its attachment; the interventions it gated run
        unconditionally again."""
        self._att._remove_policy(self)

    def __repr__(self) -> str:
        where = f"layer {self.layer}" if self.layer is not None else "phases alone"
        rel = "" if self.release is None else f", release {self.release:g} x {self.release_k}"
        return (
            f"Latch({self.name}: {where}, threshold {self.threshold:g}, k {self.k}, window {self.window}"
            f"{rel}, phases {self.phases!r})"
        )


def _reset_rows(state: torch.Tensor, host: torch.Tensor, rows: Any) -> None:
    """The reset values of the state slots (csrc/axis_steer.h, axs_latch_slot)
    in ``rows`` of ``state`` (all when None)."""
    values = torch.zeros(N_STATE, dtype=torch.int64)
    values[S_LATCHED] = int(float(host[P_START]) != 0.0)
    values[S_LATCHED_AT] = -1
    values = values.to(state.device)
    if rows is None:
        state.copy_(values.expand_as(state))
        return
    idx = torch.as_tensor(np.atleast_1d(np.asarray(rows, dtype=np.int64)), device=state.device)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= state.shape[0]):
        raise ValueError(f"rows={rows!r}: out of range for a batch of {state.shape[0]}")
    state[idx] = values
