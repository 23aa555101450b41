"""axis_steer inside vLLM's engine: the plugin vLLM loads, the hooks it puts
on the decoder layers, the per-step tables the hooks read, and the readings.

How it is wired (vLLM's V1 engine):

* ``register()`` is the ``vllm.general_plugins`` entry point. vLLM calls it in
  each of its processes (front end, engine core, workers), before a model
  exists. With ``AXIS_STEER_VLLM_CAPS`` unset it does nothing. Otherwise it
  wraps ``BaseModelLoader.load_model`` and the model runner's
  ``_model_forward``, and adds the ``axis_steer_rpc`` method to the workers.
* Right after the weights load - before vLLM's warm-up run traces and
  compiles the model (torch.compile; CUDA graphs on a GPU), so the hooks are
  part of the compiled code - :func:`install` checks the caps file against
  the model and registers one forward hook per capped decoder layer. A layer
  returns ``(hidden_states, residual)`` and the residual stream after it is
  their sum (vLLM's fused add + norm); the hook runs one
  ``axis_steer::apply_split_`` on that pair: the caps of the layer, in file
  order, on ``hidden + residual``, without materialising it.
* Everything a hook reads or writes is a buffer of its layer (a graph input,
  updated in place between steps, never a constant baked into the graph):
  the directions, the per-request bound tables ``(n_entries, 2, rows)``, the
  token -> request-row index and the readings. Retuning or switching a
  request's cap writes into the tables; nothing recompiles.
* Before each forward, on the host, the ``_model_forward`` wrapper fills the
  tables: each request of the persistent batch gets its bounds (its
  thresholds plus its offset, or no bound when it is not capped; options
  parsed once per request), and the token -> row index is copied from the
  runner's own (``req_indices``), device to device. No host synchronisation
  happens inside the forward.
* After the forward, when some request of the step asked for readings, the
  step's projections and fired flags are copied to the host and split by
  request (``query_start_loc``) into a store that
  :func:`axis_steer.serving.readings` (offline) and the server's
  ``GET /axis_steer/readings`` route (:mod:`axis_steer.serving.endpoint`)
  take them from.

Tensor parallelism: the residual stream is replicated on every rank (after
the row-parallel all-reduce), so each rank applies the same caps to its copy
and no communication is added; readings come from rank 0.

Prefix caching: prompt tokens served from the cache are not run again, so
they get no readings (capping is unaffected: they were capped, or not, when
first computed - with another request's options; disable prefix caching
when requests differ in their caps and share prompts).
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from typing import Any

import torch
from torch import nn

from axis_steer.runtime.steps import CLAMP
from axis_steer.serving.config import (
    CAPS_ENV,
    RequestOptions,
    ServingCaps,
    caps_path_from_env,
    parse_request_options,
)

logger = logging.getLogger("axis_steer.serving")

_registered = False
#: requests whose readings the store keeps at most (oldest dropped first)
STORE_LIMIT = 4096


# ---- the hook --------------------------------------------------------------------------------


class _SplitCapHook:
    """The forward hook of one capped layer: its caps on ``hidden + residual``,
    the correction written in place (rows written end as residual = the new
    stream, hidden = -0.0; the next layer adds them)."""

    def __init__(self, layer: int, n_steps: int) -> None:
        self.layer = layer
        self.ops = [CLAMP] * n_steps

    def __call__(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not (isinstance(output, tuple) and len(output) == 2):
            raise TypeError(
                f"axis_steer: decoder layer {self.layer} ({type(module).__name__}) returned "
                f"{type(output).__name__}, not (hidden_states, residual); only layers of that form can be capped"
            )
        hidden, residual = output
        n = hidden.shape[0]
        torch.ops.axis_steer.apply_split_(
            hidden,
            residual,
            module.axs_dirs,
            self.ops,
            module.axs_params,
            module.axs_tok_row[:n],
            None,
            module.axs_p_in[:n],
            module.axs_p_out[:n],
            module.axs_fired[:n],
            None,
        )
        return None


# ---- state in the worker ----------------------------------------------------------------------


def find_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a vLLM model (``model.model.layers``)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(
            f"axis_steer: {type(model).__name__} has no decoder layers at model.model.layers "
            "(expected a vLLM decoder-only model such as Llama, Qwen2/3, Mistral or Gemma)"
        )
    return layers


def _check_layer_form(layer: nn.Module, index: int) -> None:
    """A layer of the supported form takes and returns ``residual``."""
    try:
        params = inspect.signature(layer.forward).parameters
    except (TypeError, ValueError):
        params = {}
    if "residual" not in params:
        raise TypeError(
            f"axis_steer: decoder layer {index} is {type(layer).__name__}, whose forward takes no "
            "`residual`: only layers that return (hidden_states, residual) - the residual stream as "
            "their sum - can be capped (Llama, Qwen2/3, Mistral, Gemma and most vLLM models)"
        )


class EngineCaps:
    """The caps of one worker's model: the buffers its hooks read, the
    per-request options, and the readings waiting to be taken."""

    def __init__(self, model: nn.Module, vllm_config: Any, caps: ServingCaps) -> None:
        self.caps = caps
        self.lock = threading.Lock()
        sc = vllm_config.scheduler_config
        self.max_tokens = int(sc.max_num_batched_tokens)
        self.n_rows = int(sc.max_num_seqs) + 1
        layers = find_layers(model)
        dev = next(model.parameters()).device
        self.device = dev
        self.layers: list[int] = []
        self.params: list[torch.Tensor] = []  # per capped layer, (k, 2, n_rows)
        self.p_in: list[torch.Tensor] = []
        self.p_out: list[torch.Tensor] = []
        self.fired: list[torch.Tensor] = []
        self.tok_row = torch.zeros(self.max_tokens, dtype=torch.int64, device=dev)
        for i in caps.layers:
            layer = layers[i]
            if type(layer).__name__ == "PPMissingLayer":
                continue  # another pipeline rank owns it
            _check_layer_form(layer, i)
            rows = caps.rows[i]
            params = torch.empty((len(rows), 2, self.n_rows), dtype=torch.float32, device=dev)
            params[:, 0] = -torch.inf
            params[:, 1] = torch.inf
            layer.register_buffer("axs_dirs", caps.directions[rows].to(dev).contiguous(), persistent=False)
            layer.register_buffer("axs_params", params, persistent=False)
            layer.register_buffer("axs_tok_row", self.tok_row, persistent=False)
            # separate tensors per layer: views of one base would be aliased graph inputs
            for name, dtype, out in (("axs_p_in", torch.float32, self.p_in), ("axs_p_out", torch.float32, self.p_out),
                                     ("axs_fired", torch.bool, self.fired)):
                t = torch.zeros(self.max_tokens, dtype=dtype, device=dev)
                layer.register_buffer(name, t, persistent=False)
                out.append(t)
            layer.register_forward_hook(_SplitCapHook(i, len(rows)))
            self.layers.append(i)
            self.params.append(params)
        # host copies of the tables, written row by row as requests arrive
        self.host_params = [p.cpu().clone() for p in self.params]
        if dev.type == "cuda":
            self.host_params = [p.pin_memory() for p in self.host_params]
        self.options: dict[str, RequestOptions] = {}  # internal request id -> options
        self.row_of: dict[str, int] = {}  # the table row a request's bounds sit in
        self.store: dict[str, dict] = {}  # external id -> readings
        self._want = False
        self._ids: list[str] = []
        self._qsl: Any = None
        self.tokens_seen = 0
        self.tokens_capped = [0] * len(self.layers)
        logger.info("axis_steer: capping layers %s from %s", self.layers, caps.path)

    # -- per request

    def _bounds(self, opts: RequestOptions, k: int) -> tuple[list[float], list[float]]:
        rows = self.caps.rows[self.layers[k]]
        if not opts.cap:
            return [-float("inf")] * len(rows), [float("inf")] * len(rows)
        return [self.caps.lo[j] + opts.offset for j in rows], [self.caps.hi[j] + opts.offset for j in rows]

    def options_for(self, req_id: str, state: Any) -> RequestOptions:
        opts = self.options.get(req_id)
        if opts is None:
            sp = getattr(state, "sampling_params", None)
            opts = parse_request_options(getattr(sp, "extra_args", None) if sp is not None else None)
            self.options[req_id] = opts
        return opts

    # -- per step, on the host, around the forward

    def before_forward(self, runner: Any, n: int) -> None:
        batch = runner.input_batch
        nr = batch.num_reqs
        ids = list(batch.req_ids[:nr])
        live = set(ids)
        for rid in [r for r in self.options if r not in live and r not in runner.requests]:
            self.options.pop(rid, None)
            self.row_of.pop(rid, None)
        changed = False
        want = False
        for row, rid in enumerate(ids):
            opts = self.options_for(rid, runner.requests[rid])
            want = want or opts.readings
            if self.row_of.get(rid) != row:
                self.row_of[rid] = row
                changed = True
                for k, hp in enumerate(self.host_params):
                    lo, hi = self._bounds(opts, k)
                    hp[:, 0, row] = torch.tensor(lo)
                    hp[:, 1, row] = torch.tensor(hi)
        if changed:
            for p, hp in zip(self.params, self.host_params):
                p.copy_(hp, non_blocking=True)
        self.tok_row[:n].copy_(runner.req_indices.gpu[:n], non_blocking=True)
        self._want = want
        self._ids = ids
        self._qsl = runner.query_start_loc.np[: nr + 1].copy()

    def after_forward(self, runner: Any, n: int) -> None:
        if not self._want or not self.layers:
            return
        p_in = torch.stack([x[:n] for x in self.p_in]).cpu()
        p_out = torch.stack([x[:n] for x in self.p_out]).cpu()
        fired = torch.stack([x[:n] for x in self.fired]).cpu()
        with self.lock:
            for j, rid in enumerate(self._ids):
                opts = self.options.get(rid)
                if opts is None or not opts.readings:
                    continue
                s, e = int(self._qsl[j]), int(self._qsl[j + 1])
                ext = external_id(rid)
                rec = self.store.get(ext)
                if rec is None:
                    if len(self.store) >= STORE_LIMIT:
                        self.store.pop(next(iter(self.store)))
                    rec = self.store[ext] = {
                        "layers": list(self.layers),
                        "capped": opts.cap,
                        "offset": opts.offset,
                        "p_before": [[] for _ in self.layers],
                        "p_after": [[] for _ in self.layers],
                        "fired": [[] for _ in self.layers],
                    }
                for k in range(len(self.layers)):
                    rec["p_before"][k].extend(p_in[k, s:e].tolist())
                    rec["p_after"][k].extend(p_out[k, s:e].tolist())
                    rec["fired"][k].extend(int(x) for x in fired[k, s:e].tolist())

    def take(self, ids: list[str] | None) -> dict[str, dict]:
        """Removes and returns the readings of ``ids`` (external request ids;
        all of them for None), each with its firing rate per layer."""
        with self.lock:
            keys = list(self.store) if ids is None else [i for i in ids if i in self.store]
            out = {k: self.store.pop(k) for k in keys}
        for rec in out.values():
            rec["firing_rate"] = [sum(f) / len(f) if f else 0.0 for f in rec["fired"]]
        return out


def external_id(internal: str) -> str:
    """The id a caller sees for an engine-internal request id
    (``f"{external}-{8 hex digits}"`` in vLLM's V1 engine)."""
    head, sep, tail = internal.rpartition("-")
    if sep and len(tail) == 8 and all(c in "0123456789abcdef" for c in tail):
        return head
    return internal


# ---- installation ------------------------------------------------------------------------


def install(model: nn.Module, vllm_config: Any, path: str) -> EngineCaps:
    """Puts the caps of ``path`` on ``model``'s decoder layers (before vLLM's
    first forward). Raises ValueError when the file does not fit the model,
    TypeError when its layers are not of the supported form."""
    import axis_steer.runtime._torch_ops  # noqa: F401  (the op and its fake kernel)

    layers = find_layers(model)
    cfg = vllm_config.model_config.hf_config
    text = getattr(cfg, "get_text_config", lambda: cfg)()
    hidden = int(text.hidden_size)
    caps = ServingCaps.load(path, hidden_size=hidden, n_layers=len(layers))
    state = EngineCaps(model, vllm_config, caps)
    model._axis_steer = state
    return state


def _patch_loader() -> None:
    from vllm.model_executor.model_loader.base_loader import BaseModelLoader

    orig = BaseModelLoader.load_model

    def load_model(self, vllm_config, model_config, prefix=""):
        model = orig(self, vllm_config, model_config, prefix)
        path = caps_path_from_env()
        if path and not prefix:  # the served model, not a draft model
            install(model, vllm_config, path)
        return model

    BaseModelLoader.load_model = load_model


def _patch_runner() -> None:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    orig = GPUModelRunner._model_forward

    def _model_forward(self, input_ids=None, positions=None, intermediate_tensors=None, inputs_embeds=None, **kw):
        state = getattr(self.model, "_axis_steer", None)
        n = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        if state is not None:
            state.before_forward(self, n)
        out = orig(self, input_ids, positions, intermediate_tensors, inputs_embeds, **kw)
        if state is not None:
            state.after_forward(self, n)
        return out

    GPUModelRunner._model_forward = _model_forward


def _rpc(worker: Any, command: str, *args: Any) -> Any:
    """``collective_rpc("axis_steer_rpc", args=(command, ...))`` in a worker:
    ``"take", ids`` returns and forgets readings; ``"info"`` the capped layers
    and counts."""
    state = getattr(worker.model_runner.model, "_axis_steer", None)
    if state is None:
        return None
    if command == "take":
        return state.take(args[0] if args else None)
    if command == "info":
        return {"layers": state.layers, "caps": state.caps.path, "pending_readings": len(state.store)}
    raise ValueError(f"axis_steer_rpc: command {command!r} (expected 'take' or 'info')")


def _patch_worker() -> None:
    from vllm.v1.worker.worker_base import WorkerBase

    def axis_steer_rpc(self, command: str, *args: Any) -> Any:
        return _rpc(self, command, *args)

    WorkerBase.axis_steer_rpc = axis_steer_rpc


def register() -> None:
    """The ``vllm.general_plugins`` entry point (idempotent; off unless
    ``AXIS_STEER_VLLM_CAPS`` names a caps file)."""
    global _registered
    if _registered or caps_path_from_env() is None:
        return
    _registered = True
    path = caps_path_from_env()
    if not os.path.exists(path):
        raise FileNotFoundError(f"{CAPS_ENV}={path}: no such file (expected a caps file written by CapConfig.save)")
    _patch_loader()
    _patch_runner()
    _patch_worker()
