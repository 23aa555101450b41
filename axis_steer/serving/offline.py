"""The offline engine with axis_steer: a ``vllm.LLM`` whose decoder layers are
capped from a caps file, per-request options, and the readings back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from axis_steer.serving.config import CAPS_ENV, parse_request_options

__all__ = ["capped_llm", "request_options", "readings"]


def capped_llm(model: str | Path, caps: str | Path, **llm_kwargs: Any) -> Any:
    """``vllm.LLM(model, **llm_kwargs)`` with the caps of ``caps`` installed on
    its decoder layers before vLLM compiles and warms the model up.

    Sets ``AXIS_STEER_VLLM_CAPS`` for this process (vLLM's workers inherit
    it), so one process serves one caps file; a second call with another file
    raises ValueError. Which requests are capped is each request's choice
    (:func:`request_options`). Call it under ``if __name__ == "__main__":``
    (vLLM spawns its workers)."""
    caps = str(Path(caps).resolve())
    if not Path(caps).is_file():
        raise FileNotFoundError(f"caps: {caps} is not a file (expected a caps file written by CapConfig.save)")
    current = os.environ.get(CAPS_ENV)
    if current and current != caps:
        raise ValueError(
            f"caps: {caps}, but this process already serves {current} ({CAPS_ENV}); "
            "one process serves one caps file: start another process for another"
        )
    os.environ[CAPS_ENV] = caps
    from vllm import LLM

    from axis_steer.serving.plugin import register

    # vLLM loads its plugins once per process: an engine made earlier in this
    # process (with no caps named then) has already run them, so register here
    register()
    llm = LLM(model=str(model), **llm_kwargs)
    try:
        per_rank = llm.collective_rpc("axis_steer_rpc", args=("info",))
    except NotImplementedError:
        per_rank = None
    if not per_rank or any(info is None for info in per_rank):
        raise RuntimeError(
            f"caps: {caps} was not installed on every rank of the engine ({per_rank}); "
            "the engine would run uncapped: start it in a fresh process"
        )
    return llm


def request_options(cap: bool = True, *, offset: float = 0.0, readings: bool = False) -> dict:
    """The ``extra_args`` of a request (``SamplingParams(extra_args=...)``; the
    server's ``vllm_xargs``): capped or not, a threshold offset in the caps'
    units, and whether to return readings."""
    xa = {"axis_steer_cap": int(bool(cap)), "axis_steer_offset": float(offset), "axis_steer_readings": int(bool(readings))}
    parse_request_options(xa)
    return xa


def readings(llm: Any, outputs: Sequence[Any] | Any) -> list[dict | None]:
    """The readings of finished requests that asked for them (``readings=True``
    in :func:`request_options`), in the order of ``outputs`` (``RequestOutput``
    objects or request ids); None for a request without readings. Each is
    ``{"layers", "capped", "offset", "p_before", "p_after", "fired",
    "firing_rate"}``: per capped layer, the projection on the layer's first
    cap direction before and after its caps, and whether a cap fired, for
    every token the engine ran for the request. Readings are returned once."""
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    ids = [o if isinstance(o, str) else o.request_id for o in outputs]
    per_rank = llm.collective_rpc("axis_steer_rpc", args=("take", ids))
    got = per_rank[0] if per_rank else None
    if got is None:
        raise ValueError(
            f"llm: the engine has no axis_steer caps (was it made with capped_llm, or with {CAPS_ENV} set?)"
        )
    return [got.get(i) for i in ids]
