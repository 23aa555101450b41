"""An interactive chat with capping and live drift readings.

Each reply is generated with the caps on (unless switched off) while a monitor
records the projection of every token on the axis at one layer; after the
reply the chat prints the reply's mean projection, its lowest point, how often
the caps fired, and a one-line sparkline of the trajectory. Commands at the
prompt: ``/cap on``, ``/cap off``, ``/reset``, ``/quit``.
"""

from __future__ import annotations

from typing import Any, TextIO

import numpy as np
import torch

from axis_steer.pipeline.batching import input_device, pad_id
from axis_steer.pipeline.spans import prompt_ids
from axis_steer.runtime.checks import as_layer, as_positive_int
from axis_steer.runtime.formats import Axis, CapConfig
from axis_steer.runtime.hooks import Attachment

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> str:
    """Values as a row of block characters, low to high."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return ""
    lo = float(v.min()) if lo is None else lo
    hi = float(v.max()) if hi is None else hi
    span = hi - lo if hi > lo else 1.0
    idx = np.clip(((v - lo) / span * (len(_BARS) - 1)).round().astype(int), 0, len(_BARS) - 1)
    return "".join(_BARS[i] for i in idx)


def drift_line(p: np.ndarray, fired: np.ndarray, threshold: float | None) -> str:
    """One line summarising a reply's readings."""
    if p.size == 0:
        return "drift: no tokens"
    parts = [f"mean {np.nanmean(p):.3f}", f"min {np.nanmin(p):.3f}"]
    if threshold is not None:
        parts.append(f"cap at {threshold:.3f} fired on {100 * float(np.mean(fired)):.0f}% of tokens")
    return "drift: " + ", ".join(parts) + "  " + sparkline(p)


@torch.no_grad()
def chat_loop(
    model: Any,
    tokenizer: Any,
    axis: Axis,
    caps: CapConfig | None,
    *,
    system: str | None = None,
    layer: int | None = None,
    max_new_tokens: int = 128,
    greedy: bool = False,
    inputs: TextIO,
    output: TextIO,
) -> int:
    """Runs the chat on ``inputs`` / ``output`` until EOF or ``/quit``; returns
    the number of replies."""
    max_new_tokens = as_positive_int(max_new_tokens, "max_new_tokens")
    if system is not None and not isinstance(system, str):
        raise TypeError(f"system = {system!r} (expected a system prompt string, or None)")
    att = Attachment(model, axis)
    if layer is not None:
        layer = as_layer(layer, "layer", att.n_layers)
    cap = att.cap_config(caps) if caps is not None else None
    watch = layer if layer is not None else (cap.layers[0] if cap is not None else att.n_layers // 2)
    mon = att.monitor([watch])
    threshold = None
    if cap is not None:
        lo = [e.lo for e in caps.entries if e.layer == watch and np.isfinite(e.lo)]
        threshold = lo[0] if lo else None
    device = input_device(model)
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    capping = cap is not None
    replies = 0
    output.write(f"[watching layer {watch}; caps {'on' if capping else 'off'}; /cap on|off, /reset, /quit]\n")
    output.flush()
    with att:
        while True:
            output.write("you> ")
            output.flush()
            line = inputs.readline()
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text == "/quit":
                break
            if text == "/reset":
                history = [{"role": "system", "content": system}] if system else []
                output.write("[conversation cleared]\n")
                continue
            if text in ("/cap on", "/cap off"):
                if cap is None:
                    output.write("[no caps loaded]\n")
                    continue
                capping = text.endswith("on")
                cap.enable(capping)
                output.write(f"[caps {'on' if capping else 'off'}]\n")
                continue
            history.append({"role": "user", "content": text})
            ids = torch.as_tensor([prompt_ids(tokenizer, history)], device=device)
            kw = {"do_sample": False} if greedy else {"do_sample": True, "temperature": 0.7, "top_p": 0.9}
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id(tokenizer),
                **kw,
            )
            new = out[0, ids.shape[1] :]
            reply = tokenizer.decode(new, skip_special_tokens=True).strip()
            history.append({"role": "assistant", "content": reply})
            r = mon.readings()
            p = r.row(0, watch, "p_in")[ids.shape[1] - 1 :]
            fired = r.row(0, watch, "fired")[ids.shape[1] - 1 :]
            output.write(f"assistant> {reply}\n   {drift_line(p, fired, threshold if capping else None)}\n")
            output.flush()
            replies += 1
    return replies
