"""Projecting conversations on the axis: per token and per assistant turn.

One teacher-forced pass per batch of conversations, through the monitoring
hooks (so the same numbers as during generation, and with the caps applied if
the attachment has any). Every token of the rendered conversation gets a
reading; per-turn means average over each assistant turn's content tokens
(spans from the chat template, :mod:`axis_steer.pipeline.spans`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from axis_steer.pipeline.batching import input_device, pad_batch, pad_id
from axis_steer.pipeline.spans import render_with_spans
from axis_steer.runtime.checks import as_layers, as_positive_int, show
from axis_steer.runtime.formats import check_messages
from axis_steer.runtime.hooks import Attachment


@dataclass
class ConversationProjections:
    """Readings of several conversations at some layers.

    ``p_in[layer][c]`` / ``p_out[layer][c]`` / ``fired[layer][c]``: per token of
    conversation ``c`` (before / after the layer's interventions; equal when
    uncapped); ``per_turn[layer][c]``: mean ``p_in`` over each assistant turn;
    ``spans[c]``: the assistant turns' token ranges; ``tokens[c]``: token texts."""

    layers: list[int]
    p_in: dict[int, list[np.ndarray]]
    p_out: dict[int, list[np.ndarray]]
    fired: dict[int, list[np.ndarray]]
    per_turn: dict[int, list[np.ndarray]]
    spans: list[list[tuple[int, int]]]
    tokens: list[list[str]]

    def to_json(self) -> dict:
        def arr(a: np.ndarray) -> list:
            return [None if not np.isfinite(x) else round(float(x), 6) for x in a]

        return {
            "layers": self.layers,
            "conversations": [
                {
                    "tokens": self.tokens[c],
                    "assistant_spans": [list(s) for s in self.spans[c]],
                    "layers": {
                        str(layer): {
                            "p_in": arr(self.p_in[layer][c]),
                            "p_out": arr(self.p_out[layer][c]),
                            "fired": self.fired[layer][c].astype(int).tolist(),
                            "per_turn": arr(self.per_turn[layer][c]),
                        }
                        for layer in self.layers
                    },
                }
                for c in range(len(self.tokens))
            ],
        }

    def save(self, folder: str | Path, *, plots: bool = True, max_plots: int = 12) -> list[Path]:
        """Writes ``projections.json`` and one trajectory plot per conversation."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / "projections.json"]
        paths[0].write_text(json.dumps(self.to_json()))
        if plots:
            from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

            layer = self.layers[0]
            for c in range(min(len(self.tokens), max_plots)):
                fig = Figure(figsize=(9, 3.2))
                ax = fig.subplots()
                x = np.arange(len(self.p_in[layer][c]))
                for a, b in self.spans[c]:
                    ax.axvspan(a - 0.5, b - 0.5, color="tab:green", alpha=0.08, lw=0)
                ax.plot(x, self.p_in[layer][c], color="tab:blue", lw=1.1, label="projection")
                if not np.allclose(self.p_in[layer][c], self.p_out[layer][c], equal_nan=True):
                    ax.plot(x, self.p_out[layer][c], color="tab:orange", lw=1.1, label="after caps")
                for (a, b), m in zip(self.spans[c], self.per_turn[layer][c]):
                    ax.hlines(m, a, b - 1, colors="k", lw=2)
                ax.set_xlabel("token (shaded: assistant turns; bars: turn means)")
                ax.set_ylabel(f"projection, layer {layer}")
                ax.legend(fontsize=8, loc="best")
                fig.tight_layout()
                paths.append(folder / f"conversation_{c:03d}.png")
                fig.savefig(paths[-1], dpi=110)
        return paths


@torch.no_grad()
def project_conversations(
    model: Any,
    tokenizer: Any,
    attachment: Attachment,
    conversations: Sequence[Sequence[dict]],
    layers: Sequence[int],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
) -> ConversationProjections:
    """Readings of ``conversations`` at ``layers`` with ``attachment``'s
    interventions (none: plain monitoring). The attachment must not be
    attached; it is attached for the passes."""
    if not isinstance(attachment, Attachment):
        raise TypeError(f"attachment = {show(attachment)} (expected an axis_steer Attachment)")
    if isinstance(conversations, (str, bytes, dict)) or not isinstance(conversations, Sequence):
        raise TypeError(f"conversations = {show(conversations)} (expected a list of message lists)")
    if not conversations:
        raise ValueError("conversations: empty (expected at least one message list)")
    for c, conv in enumerate(conversations):
        check_messages(conv, f"conversations[{c}]")
    layers = as_layers(layers, "layers", attachment.n_layers)
    batch_size = as_positive_int(batch_size, "batch_size")
    if max_length is not None:
        max_length = as_positive_int(max_length, "max_length")
    monitor = attachment.monitor(layers)
    device = input_device(model)
    pad = pad_id(tokenizer)
    rendered = [render_with_spans(tokenizer, c) for c in conversations]
    ids_all = [list(r.input_ids)[: max_length or None] for r in rendered]
    out = {k: {layer: [None] * len(conversations) for layer in layers} for k in ("p_in", "p_out", "fired")}
    try:
        for start in range(0, len(ids_all), batch_size):
            chunk = ids_all[start : start + batch_size]
            ids, am = pad_batch(chunk, pad, side="left", device=device)
            with attachment:
                model(input_ids=ids, attention_mask=am)
            r = monitor.readings()
            for i in range(len(chunk)):
                for layer in layers:
                    out["p_in"][layer][start + i] = r.row(i, layer, "p_in")
                    out["p_out"][layer][start + i] = r.row(i, layer, "p_out")
                    out["fired"][layer][start + i] = r.row(i, layer, "fired")
    finally:
        monitor.remove()
    spans = [[(a, min(b, len(ids_all[c]))) for a, b in r.spans if a < len(ids_all[c])] for c, r in enumerate(rendered)]
    per_turn = {
        layer: [
            np.array([np.nanmean(out["p_in"][layer][c][a:b]) if b > a else np.nan for a, b in spans[c]])
            for c in range(len(conversations))
        ]
        for layer in layers
    }
    tokens = [tokenizer.convert_ids_to_tokens(ids) for ids in ids_all]
    return ConversationProjections(layers, out["p_in"], out["p_out"], out["fired"], per_turn, spans, tokens)
