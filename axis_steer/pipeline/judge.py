"""Step 3 (optional): judge role adherence, and filter role responses by score.

A judge scores how fully a response plays its role, 0..3 (the reference
scale: 0 refused, 1 "I can't be that, but I can help", 2 an AI with some of
the role's traits, 3 fully in role). Plug in either

* a Python callable ``judge(question, answer, role) -> int`` — an API call to
  an LLM with the role's judge prompt (:meth:`RoleSet.role(name).judge_prompt
  <axis_steer.pipeline.roles.Role.judge_prompt>`), a local model, or a heuristic such as
  :func:`axis_steer.personas.judge.style_judge` for axis_steer's own small model; or
* a judge object with a ``score_batch(questions, answers, roles)`` method as
  well (scored 64 at a time): :class:`axis_steer.pipeline.embedding_judge.EmbeddingJudge`
  (sentence embeddings, offline) or
  :class:`axis_steer.pipeline.endpoint_judge.EndpointJudge` (any
  OpenAI-compatible chat-completions server with the roles' judge prompts); or
* existing scores in the reference format (a folder of ``{role}.json`` files
  ``{"pos_p{p}_q{q}": score}``, or one such file named after its role).

Scores land in ``{out_dir}/scores/{role}.json`` (reference format) with
``{out_dir}/scores/judge.json`` describing where they came from. The default
role is never judged (its vector is the mean over all its responses).

A judge is checked before it is trusted: :func:`judge_agreement` scores texts
whose persona level is known (``data/judge/labelled_answers.jsonl``, hand
written, 89 answers for 18 roles) and reports exact agreement, agreement
within one level, Spearman's rho and the AUC of "fully in role" against the rest.

Run the judge before :func:`~axis_steer.pipeline.extract.extract_activations`: the sums
are then grouped by score and :func:`~axis_steer.pipeline.axis.compute_axis` keeps the
responses scored 3 (``min_score``), requiring at least 50 per role
(``min_count``), as the reference does. Without a judge every role response
counts, and the axis metadata says so.
"""

from __future__ import annotations

import json
import math
import numbers
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np
from tqdm.auto import tqdm

from axis_steer.pipeline.roles import DEFAULT_ROLE
from axis_steer.pipeline.runs import RunFolder, iter_run_responses
from axis_steer.runtime.checks import as_flag, as_folder
from axis_steer.runtime.formats import load_scores, response_key, save_scores

__all__ = [
    "Judge",
    "JudgeAgreement",
    "JudgeSummary",
    "judge_agreement",
    "judge_info",
    "judge_responses",
    "keys_passing",
    "labelled_answers",
    "load_run_scores",
    "rank_auc",
    "spearman",
]

#: A scorer: ``(question, answer, role) -> 0..3``.
Judge = Callable[[str, str, str], int]
JudgeSource = Union[Judge, str, Path]


@dataclass
class JudgeSummary:
    """What :func:`judge_responses` did."""

    out_dir: Path
    source: str
    n_scored: int  #: new scores written by this call
    n_before: int  #: scores already present and kept
    histogram: dict[int, int]  #: count of each score over all scored responses
    n_roles: int
    seconds: float

    def __str__(self) -> str:
        hist = " ".join(f"{k}:{self.histogram.get(k, 0)}" for k in range(4))
        return (
            f"judge: {self.n_scored} new scores ({self.n_before} kept) for {self.n_roles} roles from "
            f"{self.source}; scores {hist} in {self.seconds:.1f} s -> {RunFolder(self.out_dir).scores}"
        )


def _check_score(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ValueError(f"{where}: the judge returned {v!r} (expected an integer 0..3)")
    v = int(v)
    if not 0 <= v <= 3:
        raise ValueError(f"{where}: the judge returned {v} (expected an integer 0..3)")
    return v


def _describe(judge: Any) -> str:
    if isinstance(judge, (str, Path)):
        return str(judge)
    return (
        getattr(judge, "__qualname__", None)
        or getattr(judge, "__name__", None)
        or type(judge).__name__
    )


def judge_responses(
    out_dir: str | Path,
    judge: JudgeSource,
    *,
    roles: Iterable[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> JudgeSummary:
    """Scores a run's role responses into ``out_dir/scores/`` (see the module docs).

    Args:
        out_dir: the run folder (reads ``responses/``).
        judge: a callable ``(question, answer, role) -> 0..3``, or a path to
            reference scores (a folder of ``{role}.json``, or one file named
            after its role) to validate and copy in.
        roles: only these roles (default every role in the run but ``default``).
        overwrite: re-score responses that already have a score.
        progress: tqdm bar and summary line.

    Returns:
        A :class:`JudgeSummary`.
    """
    t0 = time.perf_counter()
    out_dir = as_folder(out_dir, "out_dir")
    overwrite = as_flag(overwrite, "overwrite")
    if isinstance(roles, (str, bytes)):
        raise TypeError(f"roles = {roles!r} is one string (expected a list of role names, e.g. [{roles!r}])")
    if not isinstance(judge, (str, Path)) and not callable(judge):
        raise TypeError(
            f"judge: a {type(judge).__name__} (expected a callable (question, answer, role) -> 0..3, "
            "or a path to reference scores)"
        )
    run = RunFolder(out_dir)
    sdir = run.scores
    sdir.mkdir(parents=True, exist_ok=True)
    source = _describe(judge)
    n_new = n_before = 0
    touched: set[str] = set()
    if isinstance(judge, (str, Path)):
        src = Path(judge)
        files = sorted(src.glob("*.json")) if src.is_dir() else [src]
        if not files or not files[0].exists():
            raise FileNotFoundError(
                f"{src}: no scores (expected a folder of <role>.json or one <role>.json)"
            )
        wanted = None if roles is None else set(roles)
        for f in files:
            if (
                f.name == run.judge_info.name
                or f.stem == DEFAULT_ROLE
                or (wanted is not None and f.stem not in wanted)
            ):
                continue
            scores = load_scores(f)  # validates keys and values
            target = sdir / f.name
            if target.exists() and not overwrite:
                old = load_scores(target)
                n_before += len(old)
                merged = {**scores, **old}
                n_new += len(merged) - len(old)
                save_scores(target, merged)
            else:
                if f.resolve() != target.resolve():
                    shutil.copyfile(f, target)
                n_new += len(scores)
            touched.add(f.stem)
    elif callable(judge):
        rows = [(r, row) for r, row in iter_run_responses(out_dir, roles) if r != DEFAULT_ROLE]
        by_role: dict[str, dict[str, int]] = {}
        for role in sorted({r for r, _ in rows}):
            p = run.scores_file(role)
            by_role[role] = load_scores(p) if p.exists() and not overwrite else {}
            n_before += len(by_role[role])
        todo = [
            (r, row)
            for r, row in rows
            if response_key(row["prompt_index"], row["question_index"]) not in by_role[r]
        ]
        bar = tqdm(total=len(todo), desc="judge", unit="resp", disable=not progress)
        last_save = time.perf_counter()
        batch = getattr(judge, "score_batch", None)
        step = 64 if callable(batch) else 1
        try:
            for b0 in range(0, len(todo), step):
                chunk = todo[b0 : b0 + step]
                questions = [row["question"] for _, row in chunk]
                answers = [row["conversation"][-1]["content"] for _, row in chunk]
                names = [role for role, _ in chunk]
                if callable(batch):
                    got = list(batch(questions, answers, names))
                    if len(got) != len(chunk):
                        raise ValueError(
                            f"judge.score_batch returned {len(got)} scores for {len(chunk)} answers"
                        )
                else:
                    got = [judge(questions[0], answers[0], names[0])]
                for (role, row), v in zip(chunk, got):
                    key = response_key(row["prompt_index"], row["question_index"])
                    by_role[role][key] = _check_score(v, f"{role} {key}")
                    touched.add(role)
                    n_new += 1
                bar.update(len(chunk))
                if time.perf_counter() - last_save > 30:
                    for r in touched:
                        save_scores(run.scores_file(r), by_role[r])
                    last_save = time.perf_counter()
        finally:
            bar.close()
            for r in touched:
                save_scores(run.scores_file(r), by_role[r])
    else:
        raise TypeError(
            f"judge: a {type(judge).__name__} (expected a callable (question, answer, role) -> 0..3, "
            "or a path to reference scores)"
        )
    info_path = run.judge_info
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    sources = list(dict.fromkeys([*info.get("sources", []), source]))
    info_path.write_text(json.dumps({"judged": True, "sources": sources}, indent=1) + "\n")
    hist: dict[int, int] = {}
    all_scores = load_run_scores(out_dir)
    for sc in all_scores.values():
        for v in sc.values():
            hist[v] = hist.get(v, 0) + 1
    summary = JudgeSummary(
        out_dir, source, n_new, n_before, hist, len(all_scores), time.perf_counter() - t0
    )
    if progress:
        print(summary)
    return summary


def load_run_scores(out_dir: str | Path) -> dict[str, dict[str, int]]:
    """Every role's scores in a run folder, ``{role: {"pos_p{p}_q{q}": score}}``
    (empty when the run was not judged)."""
    return {p.stem: load_scores(p) for p in RunFolder(out_dir).score_files()}


def judge_info(out_dir: str | Path) -> dict:
    """``{"judged": bool, "sources": [...]}`` for a run folder."""
    p = RunFolder(out_dir).judge_info
    if p.is_file():
        return json.loads(p.read_text())
    return {"judged": bool(load_run_scores(out_dir)), "sources": []}


def keys_passing(scores: dict[str, int], min_score: int = 3) -> set[str]:
    """The response keys scored at least ``min_score`` (reference: 3)."""
    return {k for k, v in scores.items() if v >= min_score}


# ---- checking a judge against known labels ---------------------------------------------------


def labelled_answers(path: str | Path | None = None) -> list[dict]:
    """Answers whose role-adherence level is known: ``{"role", "question",
    "answer", "label" (0..3), "set"}`` per line. The built-in file
    (``data/judge/labelled_answers.jsonl``) was written by hand for the built-in
    roles' judge rubric; ``set`` is ``"first"`` for the 44 texts the
    embedding judge's refusal rules were written after seeing, ``"fresh"`` for
    45 written before it had scored any of them."""
    from axis_steer.runtime.formats import iter_jsonl

    path = Path(path) if path is not None else Path(__file__).resolve().parent / "data" / "judge" / "labelled_answers.jsonl"
    out = []
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict) or not all(k in obj for k in ("role", "answer", "label")):
            raise ValueError(f"{path}:{lineno}: expected an object with 'role', 'answer' and 'label'")
        _check_score(obj["label"], f"{path}:{lineno} label")
        out.append(obj)
    return out


def rank_auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """ROC AUC of scores ``pos`` (label 1) against ``neg`` (label 0), ties
    counted half: the fraction of pairs in which the positive scores higher."""
    p = np.asarray(pos, dtype=np.float64)[:, None]
    n = np.asarray(neg, dtype=np.float64)[None, :]
    if p.size == 0 or n.size == 0:
        return math.nan
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):
        r[x == v] = r[x == v].mean()
    return r


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


@dataclass
class JudgeAgreement:
    """How a judge's scores agree with known labels."""

    n: int
    exact: float  #: fraction scored exactly the label
    within_one: float  #: fraction within one level
    spearman: float
    auc_in_role: float  #: AUC of the score, label 3 against labels 0..2
    confusion: list[list[int]]  #: confusion[label][score]

    def __str__(self) -> str:
        return (
            f"judge agreement on {self.n} labelled answers: exact {self.exact:.2f}, within one level "
            f"{self.within_one:.2f}, Spearman {self.spearman:.2f}, AUC in role vs rest {self.auc_in_role:.2f}"
        )


def judge_agreement(judge: Judge, items: Sequence[dict] | None = None) -> JudgeAgreement:
    """Scores ``items`` (default :func:`labelled_answers`) with ``judge`` (its
    ``score_batch`` when it has one) and compares with their labels."""
    items = list(items) if items is not None else labelled_answers()
    qs = [str(it.get("question", "")) for it in items]
    ans = [str(it["answer"]) for it in items]
    roles = [str(it["role"]) for it in items]
    batch = getattr(judge, "score_batch", None)
    got = list(batch(qs, ans, roles)) if callable(batch) else [judge(q, a, r) for q, a, r in zip(qs, ans, roles)]
    s = np.array([_check_score(v, f"labelled answer {i}") for i, v in enumerate(got)])
    lab = np.array([int(it["label"]) for it in items])
    conf = [[int(((lab == i) & (s == j)).sum()) for j in range(4)] for i in range(4)]
    return JudgeAgreement(
        n=len(items),
        exact=float(np.mean(s == lab)) if len(items) else math.nan,
        within_one=float(np.mean(np.abs(s - lab) <= 1)) if len(items) else math.nan,
        spearman=spearman(s, lab),
        auc_in_role=rank_auc(s[lab == 3], s[lab < 3]),
        confusion=conf,
    )
