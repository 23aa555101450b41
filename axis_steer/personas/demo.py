"""The whole job on the built-in persona model, end to end (``axis-steer demo``).

1. **Axis.** Responses of PersonaLlama under its role set (roles x 5 system
   prompts x questions, plus the default Assistant), judged with the built-in
   style judge, mean activations over response tokens, role vectors, the axis,
   the persona space (PCA of role vectors).
2. **Checks of the axis.** On responses to questions the axis never saw: how
   well the projection at the chosen layer separates default from role
   responses (ROC AUC), and the cosine of the persona space's PC1 with the axis.
3. **Calibration.** Floors at the 25th percentile of the role responses'
   projections for a layer window (the paper's recipe), written in axis_steer's
   format and as a reference ``capping_config.pt``.
4. **Steering.** The axis added over the window's layers: away from the
   Assistant on default prompts (role vocabulary appears), toward it under role
   system prompts (role style fades).
5. **Capped vs uncapped.** Conversations in which the user pushes the default
   Assistant into a role (persona drift), generated turn by turn with and
   without the caps while monitoring the projection (role-style rate and
   projection per turn, plots); replies to role system prompts and to default
   prompts with and without the caps.
6. **No caps / always-on / latched.** The same caps under a drift latch
   (detection threshold proposed by the calibration: at most 2% of default
   conversations latch), side by side with no caps and always-on caps on the
   same default prompts (tokens capped, replies changed), role prompts and
   drift conversations (role-style rate of the replies), with bootstrap
   intervals and paired differences (``compare_interventions``).
7. **Capability cost.** ``evaluate``: perplexity and per-token KL on held-out
   default-Assistant conversations, greedy agreement on default prompts,
   multiple-choice accuracy on topic facts, and how often the caps fired.

Everything goes to the output folder (a run folder the CLI steps can reuse); a
short summary is printed at the end. A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from axis_steer.personas.catalog import ASSISTANT
from axis_steer.personas.judge import detect_persona, role_style_rate, style_judge, style_score
from axis_steer.personas.model import eval_data_dir, load_persona_model, role_data_dir
from axis_steer.pipeline.axis import compute_axis, load_persona_space
from axis_steer.pipeline.calibrate import calibrate
from axis_steer.pipeline.evaluate import compare_interventions, evaluate
from axis_steer.pipeline.extract import extract_activations, response_means
from axis_steer.pipeline.generate import generate_responses
from axis_steer.pipeline.judge import judge_responses
from axis_steer.pipeline.replies import converse, greedy_replies
from axis_steer.pipeline.roles import DEFAULT_ROLE, load_role_set
from axis_steer.pipeline.runs import RunFolder, iter_run_responses
from axis_steer.runtime.formats import finite_or_none, iter_jsonl, load_axis, load_caps
from axis_steer.runtime.hooks import Attachment

DATA = eval_data_dir()


@dataclass
class DemoSummary:
    out: Path
    layer: int
    window: tuple[int, int]
    auc: float
    cos_pc1: float
    thresholds: dict[int, float]
    drift_role_rate: dict[str, list[float]] = field(default_factory=dict)
    drift_role_rate_all: dict[str, float] = field(default_factory=dict)
    drift_projection: dict[str, list[float]] = field(default_factory=dict)
    role_prompt_rate: dict[str, float] = field(default_factory=dict)
    default_assistant_style: dict[str, float] = field(default_factory=dict)
    steering: dict[str, Any] = field(default_factory=dict)
    default_unchanged: float = math.nan
    ppl_change: float = math.nan
    kl_mean: float = math.nan
    agreement: float = math.nan
    mc: dict[str, float] = field(default_factory=dict)
    fire_rate: float = math.nan
    latch: dict[str, Any] = field(default_factory=dict)
    comparison: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        nan = math.nan
        da = self.drift_role_rate_all
        st = self.steering
        sl = st.get("layers") or [nan]
        rr, ds = self.role_prompt_rate, self.default_assistant_style
        return [
            f"axis: layer {self.layer}, held-out AUC default vs roles {self.auc:.3f}, |cos(PC1, axis)| {self.cos_pc1:.2f}",
            f"steering (layers {sl[0]}..{sl[-1]}, {st.get('coef', nan):g} x axis): away from the Assistant, "
            f"role vocabulary in default replies {st.get('default_role_rate', {}).get('plain', nan):.3f} -> "
            f"{st.get('default_role_rate', {}).get('away', nan):.3f}; toward it, role adherence under role prompts "
            f"{st.get('role_adherence', {}).get('plain', nan):.2f} -> {st.get('role_adherence', {}).get('toward', nan):.2f}",
            f"caps: floors at p0.25 on layers {self.window[0]}..{self.window[1] - 1} "
            + ", ".join(f"L{k}={v:.2f}" for k, v in self.thresholds.items()),
            f"drift (user pushes the Assistant into a role), role-style rate of all replies "
            f"{da.get('uncapped', nan):.3f} -> capped {da.get('capped', nan):.3f}; by turn "
            f"{_row(self.drift_role_rate.get('uncapped'))} -> {_row(self.drift_role_rate.get('capped'))}",
            f"drift, mean projection at layer {self.layer} by turn: uncapped "
            f"{_row(self.drift_projection.get('uncapped'), 2)} -> capped {_row(self.drift_projection.get('capped'), 2)}",
            f"role system prompts, role adherence (style score / 3): uncapped {rr.get('uncapped', nan):.3f} "
            f"-> capped {rr.get('capped', nan):.3f}",
            f"default prompts: Assistant style score {ds.get('uncapped', nan):.2f} -> {ds.get('capped', nan):.2f} (of 3); "
            f"{100 * self.default_unchanged:.0f}% of greedy answers token-identical with caps",
            f"capability: perplexity {100 * self.ppl_change:+.2f}%, KL/token {self.kl_mean:.2e}, "
            f"greedy agreement {100 * self.agreement:.1f}%, caps fired on {100 * self.fire_rate:.1f}% of tokens; "
            f"multiple choice {100 * self.mc.get('plain', nan):.1f}% -> {100 * self.mc.get('capped', nan):.1f}%",
            *self._comparison_lines(),
        ]

    def _comparison_lines(self) -> list[str]:
        if not self.latch or not self.comparison:
            return []
        lt, c = self.latch, self.comparison

        def cell(metric: str, arm: str, pct: bool = True) -> str:
            m, lo, hi = c.get(metric, {}).get(arm, [math.nan] * 3)
            f = 100.0 if pct else 1.0
            return f"{f * m:.{0 if pct else 3}f}{'%' if pct else ''} [{f * lo:.{0 if pct else 3}f}, {f * hi:.{0 if pct else 3}f}]"

        arms = ("always-on", "latched")
        return [
            f"latch at layer {lt['layer']} (window {lt['window']}, k {lt['k']}, threshold {lt['threshold']:.3f}): "
            f"calibration says {100 * lt['default_rate']:.0f}% of default and {100 * lt['role_rate']:.0f}% of role "
            "conversations latch",
            "default prompts, tokens capped: " + ", ".join(f"{a} {cell('fired', a)}" for a in arms)
            + "; replies changed: " + ", ".join(f"{a} {cell('changed', a)}" for a in arms),
            "role-style rate, drift conversations: " + ", ".join(
                f"{a} {cell('drift', a, False)}" for a in ("no caps", *arms))
            + "; role prompts: " + ", ".join(f"{a} {cell('role_prompt', a, False)}" for a in ("no caps", *arms)),
        ]

    def __str__(self) -> str:
        return f"demo done in {self.seconds:.0f}s; results in {self.out}"


def _read_jsonl(name: str) -> list[Any]:
    return [obj for _, obj in iter_jsonl(DATA / name)]


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC of scores ``pos`` (label 1) against ``neg`` (label 0), ties half: the
    fraction of (pos, neg) pairs in which the positive scores higher."""
    pos = np.asarray(pos, dtype=np.float64)[:, None]
    neg = np.asarray(neg, dtype=np.float64)[None, :]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def _claim_folder(out: Path, settings: dict) -> None:
    """Makes ``out`` this demo's folder; a folder from a demo with other settings
    would mix two runs' responses and activations, so it is refused."""
    path = out / "demo_settings.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            raise ValueError(
                f"out={str(out)!r} holds a demo run with other settings ({old} there, {settings} now); "
                "pass another --out folder, or delete this one"
            )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=1))


def _row(values: Any, digits: int = 3) -> str:
    return " ".join(f"{v:.{digits}f}" for v in values) if values else "-"


def _mean(values: Any) -> float:
    v = [float(x) for x in values]
    return float(np.mean(v)) if v else math.nan


def _messages(system: str, user_turns: list[str]) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": u} for u in user_turns]


def _role_adherence(replies: list[str], role_convs: list[dict]) -> float:
    """Mean style score (0..3, as a fraction of 3) of replies against the persona each
    role prompt asked for."""
    return _mean(style_score(t, rc["persona"]) / 3 for t, rc in zip(replies, role_convs))


def run_demo(
    out: str | Path = "runs/demo", *, quick: bool = False, device: str = "cpu", seed: int = 0
) -> DemoSummary:
    """Runs the whole job (see the module docs); returns the summary it prints."""
    t0 = time.perf_counter()
    out = Path(out)
    cfg = json.loads((DATA / "config.json").read_text())
    _claim_folder(out, {"quick": bool(quick), "seed": int(seed), "config": cfg})
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    if device == "cpu":
        # the model is tiny: one thread is fastest, and immune to a busy second core
        torch.set_num_threads(1)
    try:
        return _run(out, cfg, quick=quick, device=device, seed=seed, t0=t0)
    finally:
        torch.set_num_threads(threads)


def _run(out: Path, cfg: dict, *, quick: bool, device: str, seed: int, t0: float) -> DemoSummary:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    run = RunFolder(out)
    model, tok = load_persona_model(device=device)
    roles = load_role_set(role_data_dir())
    n_q = 3 if quick else 8
    layer, window = int(cfg["layer"]), tuple(cfg["window"])

    print("[1/7] the axis: generate, judge, extract, axis")
    print(
        generate_responses(
            model,
            tok,
            roles,
            out,
            n_questions=n_q,
            max_new_tokens=cfg["max_new_tokens"],
            batch_size=16,
            seed=seed,
        )
    )
    print(judge_responses(out, style_judge))
    print(extract_activations(model, tok, out, batch_size=16))
    print(compute_axis(out, min_count=max(5, n_q * 5 // 2)))
    axis = load_axis(run.axis)
    space = load_persona_space(run.persona_space)

    print("[2/7] checks on held-out questions")
    held_q = _read_jsonl("heldout_questions.jsonl")[: 2 if quick else 6]
    held_roles = replace(
        roles,
        questions=tuple(q["question"] for q in held_q),
        question_ids=tuple(q["id"] for q in held_q),
    )
    print(
        generate_responses(
            model,
            tok,
            held_roles,
            out / "heldout",
            max_new_tokens=cfg["max_new_tokens"],
            batch_size=16,
            seed=seed + 1,
        )
    )
    convs, is_default = [], []
    for role, obj in iter_run_responses(out / "heldout"):
        convs.append(obj["conversation"])
        is_default.append(role == DEFAULT_ROLE)
    means = response_means(model, tok, convs, [layer], turns="last", batch_size=16)
    u = axis.unit(layer).double()
    proj = np.array([float(m[0].double() @ u) for m in means])
    is_default = np.array(is_default)
    heldout_auc = auc(proj[is_default], proj[~is_default])
    cos_pc1 = float(abs(np.asarray(space.cos_pc1_axis)[space.layers.index(layer)]))

    print("[3/7] calibration")
    cal = calibrate(
        model, tok, out, percentiles=(0.25,), windows=[window], batch_size=16
    )  # prints its table
    caps = load_caps(run.caps_file(window[0], window[1], 0.25))
    thresholds = {e.layer: float(e.lo) for e in caps.entries}

    print("[4/7] steering along the axis")
    default_convs = [c["conversation"] for c in _read_jsonl("default_conversations.jsonl")][
        : 12 if quick else 40
    ]
    prompts = [c[:-1] for c in default_convs][: 8 if quick else 24]
    role_convs = _read_jsonl("role_prompts.jsonl")[: 12 if quick else 36]
    role_prompts = [_messages(rc["system"], rc["user_turns"][:1]) for rc in role_convs]
    n_new = cfg["max_new_tokens"]
    coef = float(cfg["steer"])
    steer_layers = list(range(window[0], window[1]))
    away, toward = Attachment(model, axis), Attachment(model, axis)
    away.steer(steer_layers, -coef)
    toward.steer(steer_layers, coef)
    default_plain = greedy_replies(model, tok, prompts, max_new_tokens=n_new)
    default_away = greedy_replies(model, tok, prompts, away, max_new_tokens=n_new)
    role_plain = greedy_replies(model, tok, role_prompts, max_new_tokens=n_new)
    role_toward = greedy_replies(model, tok, role_prompts, toward, max_new_tokens=n_new)
    steering = {
        "coef": coef,
        "layers": steer_layers,
        "default_role_rate": {
            "plain": _mean(map(role_style_rate, default_plain)),
            "away": _mean(map(role_style_rate, default_away)),
        },
        "default_in_role": {
            "plain": _mean(detect_persona(t) is not None for t in default_plain),
            "away": _mean(detect_persona(t) is not None for t in default_away),
        },
        "role_adherence": {
            "plain": _role_adherence(role_plain, role_convs),
            "toward": _role_adherence(role_toward, role_convs),
        },
    }
    (out / "steering_examples.json").write_text(
        json.dumps(
            {
                "default_plain": default_plain[:4],
                "default_away": default_away[:4],
                "role_plain": role_plain[:4],
                "role_toward": role_toward[:4],
            },
            indent=1,
            ensure_ascii=False,
        )
    )

    print("[5/7] capped vs uncapped")
    att = Attachment(model, axis)
    att.cap_config(caps)
    mon = att.monitor([layer])
    watch = Attachment(model, axis)
    wmon = watch.monitor([layer])
    drift = _read_jsonl("drift.jsonl")[: 8 if quick else 16]
    n_turns = max(len(d["user_turns"]) for d in drift)
    rates = {"uncapped": np.zeros(n_turns), "capped": np.zeros(n_turns)}
    projs = {"uncapped": np.zeros(n_turns), "capped": np.zeros(n_turns)}
    counts = np.zeros(n_turns)
    examples = []
    for d in drift:
        plain, p_plain = converse(
            model, tok, d["system"], d["user_turns"], watch, wmon, layer, n_new
        )
        capped, p_capped = converse(
            model, tok, d["system"], d["user_turns"], att, mon, layer, n_new
        )
        for t in range(len(plain)):
            rates["uncapped"][t] += role_style_rate(plain[t])
            rates["capped"][t] += role_style_rate(capped[t])
            projs["uncapped"][t] += p_plain[t]
            projs["capped"][t] += p_capped[t]
            counts[t] += 1
        examples.append(
            {
                "system": d["system"],
                "user_turns": d["user_turns"],
                "uncapped": plain,
                "capped": capped,
            }
        )
    drift_all = {k: float(v.sum() / counts.sum()) for k, v in rates.items()}
    for k in rates:
        rates[k] = rates[k] / np.maximum(counts, 1)
        projs[k] = projs[k] / np.maximum(counts, 1)
    (out / "drift_examples.json").write_text(json.dumps(examples, indent=1, ensure_ascii=False))
    fig = Figure(figsize=(10, 3.4))
    ax = fig.subplots(1, 2)
    turns = np.arange(1, n_turns + 1)
    for k, c in (("uncapped", "tab:red"), ("capped", "tab:blue")):
        ax[0].plot(turns, projs[k], "o-", color=c, label=k)
        ax[1].plot(turns, rates[k], "o-", color=c, label=k)
    if layer in thresholds:
        ax[0].axhline(thresholds[layer], color="k", ls="--", lw=1, label="floor")
    ax[0].set(xlabel="turn", ylabel=f"mean projection, layer {layer}", title="Drift along the axis")
    ax[1].set(xlabel="turn", ylabel="role-style rate", title="Role vocabulary in replies")
    for e in ax:
        e.set_xticks(turns)
        e.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "drift.png", dpi=120)

    role_capped = greedy_replies(model, tok, role_prompts, att, max_new_tokens=n_new)
    role_rates = {
        "uncapped": _role_adherence(role_plain, role_convs),
        "capped": _role_adherence(role_capped, role_convs),
    }
    default_capped = greedy_replies(model, tok, prompts, att, max_new_tokens=n_new)
    default_style = {
        "uncapped": _mean(style_score(t, ASSISTANT) for t in default_plain),
        "capped": _mean(style_score(t, ASSISTANT) for t in default_capped),
    }

    print("[6/7] no caps / always-on caps / latched caps")
    lc = cal.latch
    latched = Attachment(model, axis)
    pol = latched.latch(lc.layer, lc.proposed.threshold, k=lc.k, window=lc.window)
    latched.cap_config(caps, policy=pol)
    mon.remove()
    comparison = compare_interventions(
        model,
        tok,
        {"no caps": None, "always-on": att, "latched": latched},
        default_prompts=prompts,
        role_prompts=role_prompts[: 8 if quick else 24],
        drift=drift[: 4 if quick else 8],
        score=role_style_rate,
        max_new_tokens=n_new,
        batch_size=16,
        seed=seed,
    )
    comparison.save(out / "comparison.json")
    print(comparison)

    print("[7/7] capability cost")
    mc = _read_jsonl("multiple_choice.jsonl")[: 12 if quick else 40]
    report = evaluate(
        model,
        tok,
        att,
        conversations=default_convs,
        prompts=prompts,
        multiple_choice=mc,
        max_new_tokens=48,
        batch_size=8,
    )
    report.save(out / "eval")
    print(report)

    fire = [f.rate for f in report.firing if math.isfinite(f.rate)]
    summary = DemoSummary(
        out=out,
        layer=layer,
        window=window,
        auc=heldout_auc,
        cos_pc1=cos_pc1,
        thresholds=thresholds,
        drift_role_rate={k: v.tolist() for k, v in rates.items()},
        drift_role_rate_all=drift_all,
        drift_projection={k: v.tolist() for k, v in projs.items()},
        role_prompt_rate=role_rates,
        default_assistant_style=default_style,
        steering=steering,
        default_unchanged=report.generation.identical if report.generation else math.nan,
        ppl_change=report.conversations.ppl_change if report.conversations else math.nan,
        kl_mean=report.conversations.kl_mean if report.conversations else math.nan,
        agreement=report.generation.agreement if report.generation else math.nan,
        mc={
            "plain": report.multiple_choice.accuracy_plain,
            "capped": report.multiple_choice.accuracy_intervened,
        }
        if report.multiple_choice
        else {},
        fire_rate=float(np.mean(fire)) if fire else math.nan,
        latch={
            "layer": lc.layer,
            "window": lc.window,
            "k": lc.k,
            "threshold": lc.proposed.threshold,
            "default_rate": lc.proposed.default_rate,
            "role_rate": lc.proposed.role_rate,
        },
        comparison={
            m: {a.name: [iv.mean, iv.lo, iv.hi] for a in comparison.arms for mm, iv in a.intervals.items() if mm == m}
            for m in ("fired", "touched", "latched", "changed", "role_prompt", "drift")
        },
        seconds=time.perf_counter() - t0,
    )
    (out / "summary.json").write_text(
        json.dumps(finite_or_none(asdict(summary)), indent=1, default=str)
    )
    print()
    for line in summary.lines():
        print("  " + line)
    return summary
