"""Step 5: capping thresholds from the run's own responses, capping configs,
and how often each threshold would fire on default-Assistant text.

Thresholds (the paper's recipe): project the *reference responses* — every
role response of the run, unfiltered — as mean activations on the unit axis
at each layer, ``p = <mean_t h_t, axis[L] / |axis[L]|>`` (float32), and take
per-layer percentiles of those projections::

    threshold[q][L] = np.quantile(p[:, L], q, method="linear")

(``method`` is configurable; "linear" is NumPy's and torch.quantile's
default). The paper found q = 0.25 best; several may be asked for at once
(0.01, 0.25, 0.5, 0.75 are the reference's). A threshold is a floor on the
Assistant projection, in residual-stream units on the unit axis.

Capping configurations are written for each layer window ``[a, b)`` and each
percentile, in two formats::

    calibration/caps_layers_{a}-{b}_p{q}.safetensors   # formats.CapConfig: floors on the unit axis
    calibration/capping_config.pt                      # reference: experiments "layers_{a}:{b}-p{q}"
    calibration/thresholds.safetensors                 # all per-layer thresholds and the projections
    calibration/report.json                            # thresholds and firing rates (also printed)

The reference config stores ``v = -axis[L]`` with cap ``-threshold``: the
reference code applies a ceiling there, which is a floor at ``threshold`` on
the +axis (formats.reference_config_from_thresholds).

Drift policies (``latch=True``, the default): a detection threshold for a
latch at ``latch_layer`` (:mod:`axis_steer.pipeline.policies`): the highest at
which at most ``latch_max_rate`` of the held-out default conversations would
ever latch, with the fraction of role conversations that would; in the report
under ``"latch"``, with the latch rates over a range of thresholds and a grid
of windows and ``k``.

The report: on held-out default-Assistant responses, per response token, how
often the projection is below each threshold (the fraction of tokens a cap at
that layer would move), per layer and for "any layer of the window"; each
layer read without capping applied (capping an earlier layer changes later
ones, so the window figure is an estimate). Held-out responses come from
``heldout=`` (a run folder, responses file or list of conversations); by
default the run's own default-role responses, which also made the axis (the
report says ``"in_sample": true``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from axis_steer.pipeline import _dist
from axis_steer.pipeline.extract import iter_response_means, token_projections
from axis_steer.pipeline.policies import LatchCalibration, calibrate_latch
from axis_steer.pipeline.roles import DEFAULT_ROLE
from axis_steer.pipeline.runs import RunFolder, iter_run_responses
from axis_steer.runtime.checks import as_flag, as_float, as_int, as_layer, as_positive_int
from axis_steer.runtime.formats import (
    Axis,
    CapConfig,
    CapEntry,
    experiment_id,
    finite_or_none,
    load_activations,
    load_axis,
    read_responses,
    reference_config_from_thresholds,
    response_key,
    save_tensors,
)
from axis_steer.runtime.ops import project

__all__ = ["CalibrationSummary", "calibrate", "default_window", "thresholds_from_projections"]

UNITS = "projection on the unit axis, residual-stream units"


def default_window(n_layers: int) -> tuple[int, int]:
    """A window in the upper-middle of the stack, ``[round(0.72 n), round(0.84 n))``:
    layers 46-53 of 64 (the paper's choice for Qwen3-32B)."""
    a = min(n_layers - 1, round(0.72 * n_layers))
    return a, max(a + 1, min(n_layers, round(0.84 * n_layers)))


def thresholds_from_projections(
    projections: Any, percentiles: Sequence[float], method: str = "linear"
) -> dict[float, np.ndarray]:
    """``{q: np.quantile(projections, q, axis=0, method=method)}`` over responses.

    ``projections`` is ``(n_responses, n_layers)``; each value is a float64
    array ``(n_layers,)``. NaN rows (responses with no tokens) are ignored."""
    p = np.asarray(projections, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"projections: shape {p.shape} (expected (n_responses > 0, n_layers))")
    p = p[~np.isnan(p).any(axis=1)]
    if p.shape[0] == 0:
        raise ValueError("projections: every row holds NaN")
    out = {}
    for q in _percentiles(percentiles):
        out[q] = np.quantile(p, q, axis=0, method=method)
    return out


def _percentiles(percentiles: Any) -> list[float]:
    """Quantiles in [0, 1], at least one (0.25 means the 25th percentile)."""
    if isinstance(percentiles, (int, float)) or percentiles is None or isinstance(percentiles, str):
        raise TypeError(f"percentiles = {percentiles!r} (expected a list of quantiles in [0, 1], e.g. (0.25,))")
    out = [
        as_float(q, f"percentiles[{i}]", min=0.0, max=1.0, expected="a quantile in [0, 1] (0.25 = the 25th percentile)")
        for i, q in enumerate(percentiles)
    ]
    if not out:
        raise ValueError("percentiles: empty (expected e.g. (0.25,))")
    return out


def _windows(windows: Any, n_layers: int) -> list[tuple[int, int]]:
    """Half-open layer ranges ``[(a, b)]``, ``0 <= a < b <= n_layers``."""
    if isinstance(windows, (str, bytes)) or not hasattr(windows, "__iter__"):
        raise TypeError(f"windows = {windows!r} (expected a list of (start, stop) layer ranges)")
    out = []
    for i, w in enumerate(windows):
        if not isinstance(w, (tuple, list)) or len(w) != 2:
            raise TypeError(f"windows[{i}] = {w!r} (expected a (start, stop) pair)")
        a = as_int(w[0], f"windows[{i}] start")
        b = as_int(w[1], f"windows[{i}] stop")
        if not 0 <= a < b <= n_layers:
            raise ValueError(
                f"windows: [{a}, {b}) is not a layer range of the model's {n_layers} layers "
                f"(expected 0 <= start < stop <= {n_layers})"
            )
        out.append((a, b))
    if not out:
        raise ValueError("windows: empty (expected at least one (start, stop) layer range, or None for the default)")
    return out


def _unit_rows(axis: Axis, layers: list[int]) -> Any:
    return torch.stack([axis.unit(layer) for layer in layers])


def _project_layers(x: Any, units: Any) -> Any:
    """``<x[n, j], units[j]>`` for ``x`` ``(n, L, d)`` and unit rows ``(L, d)``:
    ``(n, L)`` float32, by the core's ``project`` (the dot product the caps
    apply with)."""
    x = x.float()
    return torch.stack([project(x[:, j].contiguous(), units[j]) for j in range(units.shape[0])], 1)


def _conversations(source: Any, role_filter: Any) -> tuple[list[tuple[str, list[dict]]], str]:
    """``[(name, conversation)]`` from a run folder, a responses file, or a list."""
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_file():
            rows = [
                (f"{r.get('label', '')}/{i}", r["conversation"])
                for i, r in enumerate(read_responses(p))
            ]
            return rows, str(p)
        rows = [
            (f"{role}/{row['prompt_index']}/{row['question_index']}", row["conversation"])
            for role, row in iter_run_responses(p)
            if role_filter(role)
        ]
        return rows, str(p)
    convs = list(source)
    return [(str(i), c) for i, c in enumerate(convs)], f"{len(convs)} conversations"


def _sharded_map(items: list, fn: Any) -> list:
    """``[fn(i, item)]`` for this rank's share (index % world == rank), gathered
    from every rank in index order."""
    rank, world = _dist.world()
    mine = [(i, x) for i, x in enumerate(items) if i % world == rank]
    local = fn(mine)
    allp = _dist.all_gather_object(local)
    merged: dict[int, Any] = {}
    for part in allp:
        merged.update(part)
    return [merged[i] for i in range(len(items))]


@dataclass
class CalibrationSummary:
    """What :func:`calibrate` did. ``thresholds[q][layer]`` is a floor in
    residual-stream units on the unit axis; ``fire[q][layer]`` the fraction of
    held-out default tokens below it; ``fire_window[q]["a:b"]`` the fraction
    below it at any layer of the window."""

    out_dir: Path
    percentiles: list[float]
    windows: list[tuple[int, int]]
    layers: list[int]
    thresholds: dict[float, dict[int, float]]
    fire: dict[float, dict[int, float]]
    fire_window: dict[float, dict[str, float]]
    n_reference: int
    n_heldout: int
    n_heldout_tokens: int
    in_sample: bool
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    latch: LatchCalibration | None = None  #: detection thresholds for a drift policy (pipeline.policies)

    def table(self) -> str:
        """Thresholds and firing rates per window layer, as text."""
        lay = sorted({x for a, b in self.windows for x in range(a, b)})
        head = "layer " + "".join(f"{f'p{q:g} floor':>14}{'fires':>8}" for q in self.percentiles)
        lines = [head, "-" * len(head)]
        for layer in lay:
            lines.append(
                f"{layer:>5} "
                + "".join(
                    f"{self.thresholds[q][layer]:>14.4g}{self.fire[q][layer]:>8.1%}"
                    for q in self.percentiles
                )
            )
        for a, b in self.windows:
            key = f"{a}:{b}"
            lines.append(
                f"{'any ' + key:>5} "
                + "".join(f"{'':>14}{self.fire_window[q][key]:>8.1%}" for q in self.percentiles)
            )
        src = "in-sample default responses" if self.in_sample else "held-out default responses"
        lines.append(
            f"fires = fraction of {self.n_heldout_tokens} response tokens of {self.n_heldout} {src} below the floor"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        q = 0.25 if 0.25 in self.percentiles else self.percentiles[0]
        wins = ", ".join(f"{a}:{b}" for a, b in self.windows)
        fw = ", ".join(f"{v:.1%}" for v in self.fire_window[q].values())
        return (
            f"calibrate: floors at {', '.join(f'p{x:g}' for x in self.percentiles)} for {len(self.layers)} layers "
            f"from {self.n_reference} role responses; windows {wins}; at p{q:g} {fw} of "
            f"{'in-sample' if self.in_sample else 'held-out'} default tokens fall below a window floor "
            f"-> {self.out_dir / 'calibration'}"
            + (f"\ncalibrate: {self.latch}" if self.latch is not None else "")
        )


def calibrate(
    model: Any,
    tokenizer: Any,
    out_dir: str | Path,
    percentiles: Sequence[float] = (0.25,),
    windows: Sequence[tuple[int, int]] | None = None,
    *,
    heldout: str | Path | Sequence[Sequence[dict]] | None = None,
    method: str = "linear",
    include_default: bool = False,
    max_per_role: int | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
    latch: bool = True,
    latch_layer: int | None = None,
    latch_window: int = 8,
    latch_k: int = 3,
    latch_max_rate: float = 0.02,
    latch_per_role: int = 5,
) -> CalibrationSummary:
    """Thresholds, capping configs and a firing report for a run (see the module docs).

    Args:
        model, tokenizer: the run's model (a forward pass over the reference
            and held-out responses; skipped for the reference responses when
            per-response activations were saved by extraction).
        out_dir: the run folder (reads ``axis.safetensors`` and ``responses/``,
            writes ``calibration/``).
        percentiles: quantiles in [0, 1] (0.25 = the paper's).
        windows: half-open layer ranges ``[(a, b)]`` to cap (default
            :func:`default_window`); every layer must have been extracted.
        heldout: default-Assistant conversations for the report: a run folder
            (its ``default`` role), a ``responses.jsonl`` or a list of message
            lists; default the run's own default responses (in-sample).
        method: ``np.quantile`` method.
        include_default: also count default responses as reference responses.
        max_per_role: use at most this many responses per role (the first by
            prompt and question) for the thresholds.
        latch: also propose a detection threshold for a drift policy
            (:func:`axis_steer.pipeline.policies.calibrate_latch`) at
            ``latch_layer`` (default the first window's first layer, the
            latest layer that can gate the whole window), with
            ``latch_window`` and ``latch_k``: the highest threshold at which at
            most ``latch_max_rate`` of the held-out default conversations
            would ever latch, with the fraction of role conversations
            (``latch_per_role`` per role) that would.

    Returns:
        A :class:`CalibrationSummary`; ``print(summary.table())`` shows the table.
    """
    _dist.setup()
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    axis_path = RunFolder(out_dir).axis
    if not axis_path.exists():
        raise FileNotFoundError(f"{axis_path}: no axis; run compute_axis first")
    axis = load_axis(axis_path)
    layers = [int(x) for x in axis.metadata.get("layers", range(axis.n_layers))]
    turns = axis.metadata.get("turns") or "last"
    percentiles = _percentiles(percentiles)
    windows = _windows([default_window(axis.n_layers)] if windows is None else windows, axis.n_layers)
    batch_size = as_positive_int(batch_size, "batch_size")
    if max_per_role is not None:
        max_per_role = as_positive_int(max_per_role, "max_per_role")
    for a, b in windows:
        missing = [x for x in range(a, b) if x not in layers]
        if missing:
            raise ValueError(
                f"windows: [{a}, {b}) includes layers {missing} that were not extracted (extracted: "
                f"{layers[0]}..{layers[-1]} of {len(layers)}); pick a window inside them or extract those layers"
            )
    latch = as_flag(latch, "latch")
    if latch:
        latch_layer = windows[0][0] if latch_layer is None else as_layer(latch_layer, "latch_layer", axis.n_layers)
        latch_window = as_positive_int(latch_window, "latch_window")
        latch_k = as_positive_int(latch_k, "latch_k")
        latch_max_rate = as_float(latch_max_rate, "latch_max_rate", min=0.0, max=1.0)
        latch_per_role = as_positive_int(latch_per_role, "latch_per_role")
    units = _unit_rows(axis, layers)  # (L, d) float32

    # reference projections: every role response's mean activation on the unit axis
    ref_rows = [
        (role, row)
        for role, row in iter_run_responses(out_dir)
        if role != DEFAULT_ROLE or include_default
    ]
    if max_per_role is not None:
        kept, seen = [], {}
        for role, row in sorted(
            ref_rows, key=lambda rr: (rr[0], rr[1]["prompt_index"], rr[1]["question_index"])
        ):
            if seen.get(role, 0) < max_per_role:
                kept.append((role, row))
                seen[role] = seen.get(role, 0) + 1
        ref_rows = kept
    if not ref_rows:
        raise ValueError(f"{out_dir}: no role responses to calibrate on")
    per_sample = _per_sample_projections(out_dir, ref_rows, units)
    if per_sample is not None:
        proj = per_sample
        source = "per-response activations"
    else:

        def ref_fn(mine: list) -> dict:
            res: dict[int, Any] = {}
            convs = [row["conversation"] for _, (_, row) in mine]
            idx = [i for i, _ in mine]
            for owners, means in iter_response_means(
                model,
                tokenizer,
                convs,
                layers,
                turns=turns,
                batch_size=batch_size,
                max_length=max_length,
                progress=progress and _dist.world()[0] == 0,
            ):
                p = _project_layers(means, units)
                for s, (ci, _) in enumerate(owners):
                    res[idx[ci]] = p[s]
            return res

        got = _sharded_map(ref_rows, ref_fn)
        proj = torch.stack(
            [g if g is not None else torch.full((len(layers),), math.nan) for g in got]
        )
        source = "forward pass"
    th = thresholds_from_projections(proj.numpy(), percentiles, method)
    thresholds = {q: {layer: float(v[j]) for j, layer in enumerate(layers)} for q, v in th.items()}

    # held-out default responses: per-token projections
    if heldout is None:
        held, held_src = _conversations(out_dir, lambda r: r == DEFAULT_ROLE)
        in_sample = True
    else:
        held, held_src = _conversations(heldout, lambda r: r == DEFAULT_ROLE)
        in_sample = False
    win_layers = sorted({x for a, b in windows for x in range(a, b)})
    wl_units = units[[layers.index(x) for x in win_layers]]

    def held_fn(mine: list) -> dict:
        convs = [c for _, (_, c) in mine]
        tp = token_projections(
            model,
            tokenizer,
            convs,
            wl_units,
            win_layers,
            turns=turns,
            batch_size=batch_size,
            max_length=max_length,
            progress=progress and _dist.world()[0] == 0,
        )
        return {
            i: torch.cat(t) if t else torch.zeros((0, len(win_layers)))
            for (i, _), t in zip(mine, tp)
        }

    tok = _sharded_map(held, held_fn) if held else []
    tokp = torch.cat(tok) if tok else torch.zeros((0, len(win_layers)))
    fire: dict[float, dict[int, float]] = {}
    fire_window: dict[float, dict[str, float]] = {}
    n_tok = int(tokp.shape[0])
    for q in percentiles:
        tau = torch.tensor([thresholds[q][x] for x in win_layers], dtype=torch.float32)
        below = tokp < tau  # (n_tokens, len(win_layers))
        fire[q] = {
            x: (float(below[:, j].float().mean()) if n_tok else math.nan)
            for j, x in enumerate(win_layers)
        }
        fire_window[q] = {}
        for a, b in windows:
            cols = [win_layers.index(x) for x in range(a, b)]
            fire_window[q][f"{a}:{b}"] = (
                float(below[:, cols].any(1).float().mean()) if n_tok else math.nan
            )

    summary = CalibrationSummary(
        out_dir,
        percentiles,
        windows,
        layers,
        thresholds,
        fire,
        fire_window,
        int(proj.shape[0]),
        len(held),
        n_tok,
        in_sample,
    )
    if latch and held and _dist.world()[0] == 0:
        per_role: dict[str, int] = {}
        role_convs = []
        for role, row in sorted(ref_rows, key=lambda rr: (rr[0], rr[1]["prompt_index"], rr[1]["question_index"])):
            if role != DEFAULT_ROLE and per_role.get(role, 0) < latch_per_role:
                role_convs.append(row["conversation"])
                per_role[role] = per_role.get(role, 0) + 1
        summary.latch = calibrate_latch(
            model,
            tokenizer,
            axis,
            latch_layer,
            [c for _, c in held],
            role_convs,
            window=latch_window,
            k=latch_k,
            max_rate=latch_max_rate,
            batch_size=batch_size,
            max_length=max_length,
        )
    if _dist.world()[0] == 0:
        summary.files = _write(
            out_dir,
            axis,
            layers,
            windows,
            percentiles,
            thresholds,
            proj,
            ref_rows,
            summary,
            method,
            source,
            held_src,
        )
    summary.seconds = time.perf_counter() - t0
    if progress and _dist.world()[0] == 0:
        print(summary.table())
        if summary.latch is not None:
            print(summary.latch.table())
        print(summary)
    return summary


def _per_sample_projections(out_dir: Path, ref_rows: list, units: Any) -> Any:
    """Projections from saved per-response activations, or None when any is missing."""
    run = RunFolder(out_dir)
    files = {}
    for role in sorted({r for r, _ in ref_rows}):
        p = run.find_per_sample(role)
        if p is None:
            return None
        files[role] = p
    out = []
    cache: dict[str, dict] = {}
    for role, row in ref_rows:
        if role not in cache:
            cache.clear()
            cache[role] = load_activations(files[role])
        key = response_key(row["prompt_index"], row["question_index"])
        act = cache[role].get(key)
        if act is None:
            return None
        if act.shape[0] != units.shape[0]:
            return None
        out.append(act)
    return _project_layers(torch.stack(out), units)


def _write(
    out_dir: Path,
    axis: Axis,
    layers: list[int],
    windows: list[tuple[int, int]],
    percentiles: list[float],
    thresholds: dict[float, dict[int, float]],
    proj: Any,
    ref_rows: list,
    summary: CalibrationSummary,
    method: str,
    source: str,
    held_src: str,
) -> list[Path]:
    run = RunFolder(out_dir)
    cdir = run.calibration
    cdir.mkdir(parents=True, exist_ok=True)
    files = []
    model = axis.metadata.get("model", "")
    for q in percentiles:
        for a, b in windows:
            entries = [
                CapEntry(x, axis.unit(x), float(thresholds[q][x]), math.inf, f"axis_layer_{x}")
                for x in range(a, b)
            ]
            cfg = CapConfig(
                entries,
                {
                    "side": "floor",
                    "percentile": q,
                    "quantile_method": method,
                    "units": UNITS,
                    "model": model,
                    "n_layers": axis.n_layers,
                    "windows": [[a, b]],
                    "experiment_id": experiment_id(a, b, q),
                    "made_by": "axis_steer.pipeline.calibrate",
                },
            )
            files.append(cfg.save(run.caps_file(a, b, q)))
    per_layer = {
        q: [thresholds[q].get(x, math.nan) for x in range(axis.n_layers)] for q in percentiles
    }
    files.append(
        reference_config_from_thresholds(axis, per_layer, windows).save(run.capping_config)
    )
    keys = [f"{role}/pos_p{row['prompt_index']}_q{row['question_index']}" for role, row in ref_rows]
    th_tensor = torch.tensor(
        [[thresholds[q][x] for x in layers] for q in percentiles], dtype=torch.float32
    )
    files.append(
        save_tensors(
            run.thresholds,
            {"thresholds": th_tensor, "projections": proj.float()},
            {
                "kind": "thresholds",
                "percentiles": percentiles,
                "layers": layers,
                "quantile_method": method,
                "units": UNITS,
                "model": model,
                "reference_keys": keys,
                "projections_from": source,
            },
        )
    )
    report = {
        "model": model,
        "units": UNITS,
        "side": "floor",
        "percentiles": percentiles,
        "quantile_method": method,
        "windows": [list(w) for w in windows],
        "experiment_ids": [experiment_id(a, b, q) for q in percentiles for a, b in windows],
        "reference": {
            "responses": len(ref_rows),
            "projections_from": source,
            "what": "role responses' mean activations",
        },
        "heldout": {
            "source": held_src,
            "in_sample": summary.in_sample,
            "responses": summary.n_heldout,
            "tokens": summary.n_heldout_tokens,
            "what": "fraction of response tokens whose projection is below the floor, each layer read without capping",
        },
        "thresholds": {
            f"{q:g}": {str(x): v for x, v in thresholds[q].items()} for q in percentiles
        },
        "fire_per_layer": {
            f"{q:g}": {str(x): v for x, v in summary.fire[q].items()} for q in percentiles
        },
        "fire_any_layer_of_window": {f"{q:g}": summary.fire_window[q] for q in percentiles},
        "reference_projection_stats": {
            str(x): {
                "mean": float(np.nanmean(proj[:, j].numpy())),
                "std": float(np.nanstd(proj[:, j].numpy())),
            }
            for j, x in enumerate(layers)
        },
        "latch": summary.latch.to_dict() if summary.latch is not None else None,
    }
    p = run.calibration_report
    p.write_text(json.dumps(finite_or_none(report), indent=1, default=str) + "\n")
    files.append(p)
    return files
