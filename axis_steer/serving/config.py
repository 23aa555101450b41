"""What configures capping inside vLLM, with no vLLM import: the environment
variables, the caps file checked against the served model, and the per-request
options a request sets through ``SamplingParams.extra_args`` (the server fills
them from ``vllm_xargs``, whose values are flat: numbers, strings, lists).

Per-request options (all optional; any other ``axis_steer_*`` key is an error):

* ``axis_steer_cap``: 1 / true caps this request, 0 / false leaves it alone.
  Default: ``AXIS_STEER_VLLM_DEFAULT_CAP`` (0: only requests that ask).
* ``axis_steer_offset``: added to every threshold of the caps file for this
  request (residual-stream units, the units of the caps); default 0.
* ``axis_steer_readings``: 1 returns, with the request's output, the
  projection at each capped layer for every token the engine ran for it
  (prompt and generated, the last sampled token excepted) and whether a cap
  fired there.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from axis_steer.runtime.checks import check_bounds

__all__ = [
    "CAPS_ENV",
    "DEFAULT_CAP_ENV",
    "OPTION_KEYS",
    "RequestOptions",
    "ServingCaps",
    "caps_path_from_env",
    "parse_request_options",
]

#: The caps file (axis_steer's ``.safetensors`` capping file, ``CapConfig.save``).
CAPS_ENV = "AXIS_STEER_VLLM_CAPS"
#: 1: requests that say nothing are capped; 0 (default): only those that ask.
DEFAULT_CAP_ENV = "AXIS_STEER_VLLM_DEFAULT_CAP"

OPTION_KEYS = ("axis_steer_cap", "axis_steer_offset", "axis_steer_readings")


def caps_path_from_env() -> str | None:
    """The caps file named by ``AXIS_STEER_VLLM_CAPS``, or None (plugin off)."""
    path = os.environ.get(CAPS_ENV, "").strip()
    return path or None


def _default_cap() -> bool:
    v = os.environ.get(DEFAULT_CAP_ENV, "0").strip().lower()
    if v not in ("0", "1", "true", "false", ""):
        raise ValueError(f"{DEFAULT_CAP_ENV}={v!r} (expected 0 or 1)")
    return v in ("1", "true")


def _flag(key: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("0", "1", "true", "false"):
        return v.strip().lower() in ("1", "true")
    raise ValueError(f"{key}={v!r} (expected 0 or 1, or true / false)")


@dataclass(frozen=True)
class RequestOptions:
    """One request's choices (see the module docs)."""

    cap: bool = False
    offset: float = 0.0
    readings: bool = False


def parse_request_options(extra_args: dict | None) -> RequestOptions:
    """The axis_steer options in ``extra_args``; raises ValueError naming an
    unknown ``axis_steer_*`` key or a bad value (the server answers HTTP 400)."""
    xa = extra_args or {}
    if not isinstance(xa, dict):
        raise TypeError(f"extra_args: {type(xa).__name__} (expected a dict)")
    for key in xa:
        if isinstance(key, str) and key.startswith("axis_steer") and key not in OPTION_KEYS:
            raise ValueError(f"{key}: not an axis_steer request option (expected one of {', '.join(OPTION_KEYS)})")
    cap = _flag("axis_steer_cap", xa["axis_steer_cap"]) if "axis_steer_cap" in xa else _default_cap()
    offset = 0.0
    if "axis_steer_offset" in xa:
        raw = xa["axis_steer_offset"]
        try:
            offset = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"axis_steer_offset={raw!r} (expected a number, in residual-stream units)") from None
        if not math.isfinite(offset) or isinstance(raw, bool):
            raise ValueError(f"axis_steer_offset={raw!r} (expected a finite number)")
    readings = _flag("axis_steer_readings", xa["axis_steer_readings"]) if "axis_steer_readings" in xa else False
    return RequestOptions(cap, offset, readings)


@dataclass
class ServingCaps:
    """A caps file made ready for one served model: per capped layer, its
    entries' rows in the stacked tables (in file order, several on one layer
    applied in that order), checked against the model's size."""

    path: str
    layers: list[int]  #: capped layers, ascending
    rows: dict[int, list[int]]  #: layer -> indices into directions / lo / hi
    directions: Any  #: (n_entries, d) float32, unit rows (normalised on load)
    lo: list[float]
    hi: list[float]

    @classmethod
    def load(cls, path: str, *, hidden_size: int, n_layers: int) -> ServingCaps:
        """Reads ``path`` (``CapConfig.save`` format) and checks it fits a model
        with ``n_layers`` decoder layers of width ``hidden_size``."""
        from axis_steer.runtime.checks import unit_vector
        from axis_steer.runtime.formats import load_caps

        if not os.path.exists(path):
            raise FileNotFoundError(f"{CAPS_ENV}={path}: no such file (expected a caps file written by CapConfig.save)")
        config = load_caps(path)
        if not config.entries:
            raise ValueError(f"{CAPS_ENV}={path}: no capping entries")
        import torch

        dirs = torch.stack([torch.as_tensor(e.direction, dtype=torch.float32) for e in config.entries])
        if dirs.shape[1] != hidden_size:
            raise ValueError(
                f"{CAPS_ENV}={path}: directions of size {dirs.shape[1]} but the served model's hidden size "
                f"is {hidden_size} (expected caps computed on this model)"
            )
        meta_layers = config.metadata.get("n_layers")
        if meta_layers is not None and int(meta_layers) != n_layers:
            raise ValueError(
                f"{CAPS_ENV}={path}: computed on a model with {meta_layers} layers but the served model has "
                f"{n_layers} (expected caps computed on this model)"
            )
        rows: dict[int, list[int]] = {}
        for j, e in enumerate(config.entries):
            if not 0 <= e.layer < n_layers:
                raise ValueError(
                    f"{CAPS_ENV}={path}: entry {j} caps layer {e.layer} but the served model has layers "
                    f"0..{n_layers - 1} (expected caps computed on this model)"
                )
            check_bounds(float(e.lo), float(e.hi), f"{CAPS_ENV}={path}: entry {j} (layer {e.layer})")
            dirs[j] = unit_vector(dirs[j], f"{CAPS_ENV}={path}: entry {j} direction")
            rows.setdefault(int(e.layer), []).append(j)
        return cls(
            path=path,
            layers=sorted(rows),
            rows=rows,
            directions=dirs,
            lo=[float(e.lo) for e in config.entries],
            hi=[float(e.hi) for e in config.entries],
        )
