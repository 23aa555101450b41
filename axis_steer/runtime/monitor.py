"""Drift readings: what a :class:`axis_steer.runtime.hooks.Monitor` recorded, aligned
with the tokens, with per-turn aggregation and a trajectory plot.

Units: projections on the layer's *unit* axis, in residual-stream units;
higher is more Assistant-like. ``p_in`` is the block's output before that
layer's interventions, ``p_out`` after them (equal where nothing intervened).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass
class Readings:
    """Per token, per monitored layer, per batch row.

    Shapes: ``p_in``, ``p_out`` float32 and ``fired`` bool are
    ``(batch, n_monitored_layers, T)``; ``valid`` (False on padding) and
    ``tokens`` (token ids, -1 where unknown) are ``(batch, T)``; position ``t``
    is the ``t``-th position of the (left-padded) sequence, prompt then
    generated tokens. Padding positions hold NaN and are never counted."""

    layers: list[int]
    p_in: np.ndarray
    p_out: np.ndarray
    fired: np.ndarray
    valid: np.ndarray
    tokens: np.ndarray

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
        import matplotlib

        if ax is None:
            if matplotlib.get_backend().lower() == "agg" or not _interactive():
                matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(9, 3.2))
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


def _interactive() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False
