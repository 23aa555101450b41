"""The run folder: where each step of the pipeline reads and writes.

One object owns the layout, so a file name is written in one place::

    {root}/responses/{role}.jsonl          generate: one line per response (reference format)
    {root}/responses/generation.json       generate: model and sampling settings
    {root}/responses/.rank{r}/{role}.jsonl generate under torchrun: per-rank parts (merged at the end)
    {root}/responses.jsonl                 or: one reference responses file whose rows carry ``label``
    {root}/scores/{role}.json              judge: scores 0..3 (reference format)
    {root}/scores/judge.json               judge: where the scores came from
    {root}/activations/sums.safetensors    extract: activation sums per role and score
    {root}/activations/{role}.{safetensors,pt}   extract: per-response means (optional)
    {root}/axis.safetensors, axis.pt       axis: the axis (axis_steer's file and the reference's)
    {root}/role_vectors.safetensors        axis: role and default vectors
    {root}/vectors/{role}.pt               axis: reference-format vectors (optional)
    {root}/persona_space.safetensors       axis: PCA of the role vectors
    {root}/plots/                          axis: persona-space figures
    {root}/calibration/                    calibrate: thresholds, caps files, reference config, report
    {root}/projections/, {root}/eval/      project and eval from the command line

:func:`iter_run_responses` reads a run's responses, whichever of the two layouts
it has; every step that needs them reads them through it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from axis_steer.pipeline.roles import DEFAULT_ROLE

__all__ = ["RunFolder", "iter_run_responses", "read_response_rows"]

_PER_SAMPLE_EXTS = ("safetensors", "pt")


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder (nothing is created until a step writes)."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    # -- generate

    @property
    def responses(self) -> Path:
        return self.root / "responses"

    @property
    def generation_settings(self) -> Path:
        return self.responses / "generation.json"

    def responses_file(self, role: str) -> Path:
        return self.responses / f"{role}.jsonl"

    def rank_dir(self, rank: int) -> Path:
        return self.responses / f".rank{int(rank)}"

    def part_files(self) -> list[Path]:
        """The per-rank part files of an interrupted or unmerged torchrun generation."""
        return sorted(self.responses.glob(".rank*/*.jsonl"))

    @property
    def single_responses(self) -> Path:
        return self.root / "responses.jsonl"

    # -- judge

    @property
    def scores(self) -> Path:
        return self.root / "scores"

    @property
    def judge_info(self) -> Path:
        return self.scores / "judge.json"

    def scores_file(self, role: str) -> Path:
        return self.scores / f"{role}.json"

    def score_files(self) -> list[Path]:
        return [p for p in sorted(self.scores.glob("*.json")) if p != self.judge_info]

    # -- extract

    @property
    def activations(self) -> Path:
        return self.root / "activations"

    @property
    def sums(self) -> Path:
        return self.activations / "sums.safetensors"

    def per_sample_file(self, role: str, ext: str) -> Path:
        if ext not in _PER_SAMPLE_EXTS:
            raise ValueError(f"per-sample extension {ext!r} (expected one of {_PER_SAMPLE_EXTS})")
        return self.activations / f"{role}.{ext}"

    def find_per_sample(self, role: str) -> Path | None:
        """The per-response activations file of ``role``, if extraction wrote one."""
        for ext in _PER_SAMPLE_EXTS:
            p = self.per_sample_file(role, ext)
            if p.is_file():
                return p
        return None

    # -- axis

    @property
    def axis(self) -> Path:
        return self.root / "axis.safetensors"

    @property
    def axis_pt(self) -> Path:
        return self.root / "axis.pt"

    @property
    def role_vectors(self) -> Path:
        return self.root / "role_vectors.safetensors"

    @property
    def reference_vectors(self) -> Path:
        return self.root / "vectors"

    @property
    def persona_space(self) -> Path:
        return self.root / "persona_space.safetensors"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    # -- calibrate

    @property
    def calibration(self) -> Path:
        return self.root / "calibration"

    @property
    def capping_config(self) -> Path:
        return self.calibration / "capping_config.pt"

    @property
    def thresholds(self) -> Path:
        return self.calibration / "thresholds.safetensors"

    @property
    def calibration_report(self) -> Path:
        return self.calibration / "report.json"

    def caps_file(self, start: int, stop: int, percentile: float) -> Path:
        """The caps of layers ``[start, stop)`` at ``percentile``."""
        return self.calibration / f"caps_layers_{int(start)}-{int(stop)}_p{percentile:g}.safetensors"

    def caps_files(self) -> list[Path]:
        return sorted(self.calibration.glob("caps_layers_*_p*.safetensors"))

    # -- apps

    @property
    def projections(self) -> Path:
        return self.root / "projections"

    @property
    def eval(self) -> Path:
        return self.root / "eval"


# ---- reading a run's responses ---------------------------------------------------------


def read_response_rows(path: Path, *, tolerant: bool) -> list[dict]:
    """Rows of one responses file; with ``tolerant`` a truncated last line (an
    interrupted write) is ignored. Each row is checked to have the reference
    fields a step needs and a conversation ending with the assistant."""
    rows: list[dict] = []
    if not path.exists():
        return rows
    with path.open(encoding="utf-8") as f:
        lines = f.readlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if tolerant and lineno == len(lines) and not line.endswith("\n"):
                break
            raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{lineno}: a {type(obj).__name__} (expected a reference responses object)")
        for k in ("prompt_index", "question_index", "conversation"):
            if k not in obj:
                raise ValueError(f"{path}:{lineno}: missing {k!r} (expected a reference responses line)")
        conv = obj["conversation"]
        if not isinstance(conv, list) or not conv or not isinstance(conv[-1], dict) or conv[-1].get("role") != "assistant":
            raise ValueError(
                f"{path}:{lineno}: 'conversation' must be a list of messages ending with the assistant's"
            )
        rows.append(obj)
    return rows


def iter_run_responses(run_dir: str | Path, roles: Iterable[str] | None = None) -> Iterator[tuple[str, dict]]:
    """Yields ``(role, row)`` for every response of a run folder: the files
    ``responses/{role}.jsonl`` (reference layout), or a single
    ``responses.jsonl`` whose rows carry ``label``. Roles come in name order
    (``default`` first), rows in file order."""
    run = RunFolder(run_dir)
    rdir = run.responses
    wanted = None if roles is None else set(roles)
    if rdir.is_dir():
        parts = run.part_files()
        files = {p.stem: p for p in rdir.glob("*.jsonl")}
        for p in parts:
            files.setdefault(p.stem, p)
        for role in sorted(files, key=lambda r: (r != DEFAULT_ROLE, r)):
            if wanted is not None and role not in wanted:
                continue
            seen = set()
            for path in [run.responses_file(role)] + [p for p in parts if p.stem == role]:
                for row in read_response_rows(path, tolerant=True):
                    key = (row["prompt_index"], row["question_index"])
                    if key not in seen:
                        seen.add(key)
                        yield role, row
        return
    single = run.single_responses
    if single.is_file():
        for row in read_response_rows(single, tolerant=False):
            role = str(row.get("label", ""))
            if not role:
                raise ValueError(f"{single}: a row without 'label' (expected the role name in 'label')")
            if wanted is None or role in wanted:
                yield role, row
        return
    raise FileNotFoundError(
        f"{run.root}: no responses (expected {rdir}/<role>.jsonl or {single}); run generate_responses first"
    )
