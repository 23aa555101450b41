"""Calibration: thresholds are the stated percentiles of the projections; the
projections are the responses' mean activations on the unit axis; the written
configs (axis_steer's and the reference's) hold those values and, applied
through the hooks, cap exactly there; the firing report matches a direct count."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from axis_steer.pipeline.axis import compute_axis  # noqa: E402
from axis_steer.pipeline.batching import pad_batch, pad_id  # noqa: E402
from axis_steer.pipeline.calibrate import calibrate, default_window, thresholds_from_projections  # noqa: E402
from axis_steer.pipeline.extract import extract_activations, token_projections  # noqa: E402
from axis_steer.pipeline.generate import generate_responses, iter_run_responses  # noqa: E402
from axis_steer.pipeline.policies import latch_margins, latch_rates, propose_threshold  # noqa: E402
from axis_steer.pipeline.spans import render_with_spans  # noqa: E402
from axis_steer.runtime import formats, reference  # noqa: E402
from axis_steer.runtime.hooks import Attachment  # noqa: E402

from chat_fixtures import block_outputs, small_run_setup  # noqa: E402

torch.set_num_threads(1)
QUIET = dict(progress=False)
QS = (0.01, 0.25, 0.5, 0.75)


@pytest.fixture(scope="module")
def cal(tmp_path_factory):
    rs, tok, model = small_run_setup(roles=("dragon", "tutor", "ghost", "jester"), n_layers=4)
    out = tmp_path_factory.mktemp("cal")
    generate_responses(model, tok, rs, out, batch_size=8, max_new_tokens=10, **QUIET)
    extract_activations(model, tok, out, batch_size=8, per_sample="pt", **QUIET)
    compute_axis(out, min_count=1, plots=False, **QUIET)
    s = calibrate(model, tok, out, QS, [(1, 3), (2, 4)], **QUIET)
    return rs, tok, model, out, s


def saved(out):
    return formats.load_tensors(out / "calibration" / "thresholds.safetensors")


def test_thresholds_are_the_percentiles_of_the_projections(cal):
    rs, tok, model, out, s = cal
    tensors, meta = saved(out)
    proj = tensors["projections"].double().numpy()
    assert (
        proj.shape == (4 * 6, 4)
        and meta["layers"] == [0, 1, 2, 3]
        and meta["quantile_method"] == "linear"
    )
    for q in QS:
        want = np.quantile(proj, q, axis=0, method="linear")
        for j, layer in enumerate(meta["layers"]):
            assert s.thresholds[q][layer] == want[j]
    np.testing.assert_array_equal(
        tensors["thresholds"].numpy(),
        np.array([[s.thresholds[q][x] for x in range(4)] for q in QS], dtype=np.float32),
    )


def test_projections_are_mean_activations_on_the_unit_axis(cal):
    rs, tok, model, out, s = cal
    tensors, meta = saved(out)
    axis = formats.load_axis(out / "axis.safetensors")
    units = torch.stack([axis.unit(x) for x in range(4)]).double()
    rows = []
    for key in meta["reference_keys"]:
        role, k = key.split("/")
        assert role != "default"
        rows.append(
            (formats.load_activations(out / "activations" / f"{role}.pt")[k].double() * units).sum(
                -1
            )
        )
    torch.testing.assert_close(
        tensors["projections"].double(), torch.stack(rows), rtol=1e-5, atol=1e-6
    )


def test_forward_pass_path_agrees_with_per_sample_path(cal, tmp_path):
    rs, tok, model, out, s = cal
    d = tmp_path / "r"
    for sub in ("responses",):
        (d / sub).mkdir(parents=True)
        for p in (out / sub).glob("*"):
            (d / sub / p.name).write_text(p.read_text())
    (d / "activations").mkdir()
    (d / "activations" / "sums.safetensors").write_bytes(
        (out / "activations" / "sums.safetensors").read_bytes()
    )
    for name in ("axis.safetensors",):
        (d / name).write_bytes((out / name).read_bytes())
    s2 = calibrate(model, tok, d, QS, [(1, 3), (2, 4)], **QUIET)
    t1, _ = saved(out)
    t2, m2 = saved(d)
    assert m2["projections_from"] == "forward pass"
    torch.testing.assert_close(t2["projections"], t1["projections"], rtol=1e-5, atol=1e-6)
    for q in QS:
        for x in range(4):
            assert math.isclose(s2.thresholds[q][x], s.thresholds[q][x], rel_tol=1e-5, abs_tol=1e-6)


def test_own_capping_configs(cal):
    rs, tok, model, out, s = cal
    axis = formats.load_axis(out / "axis.safetensors")
    for q in QS:
        for a, b in [(1, 3), (2, 4)]:
            cfg = formats.load_caps(out / "calibration" / f"caps_layers_{a}-{b}_p{q:g}.safetensors")
            assert [e.layer for e in cfg.entries] == list(range(a, b))
            for e in cfg.entries:
                assert e.lo == s.thresholds[q][e.layer] and e.hi == math.inf
                torch.testing.assert_close(e.direction, axis.unit(e.layer))
            m = cfg.metadata
            assert m["side"] == "floor" and m["percentile"] == q and m["windows"] == [[a, b]]
            assert m["units"] == "projection on the unit axis, residual-stream units"
            assert m["n_layers"] == 4 and m["hidden_size"] == 32 and "model" in m
            assert m["experiment_id"] == f"layers_{a}:{b}-p{q:g}"


def test_reference_capping_config(cal):
    rs, tok, model, out, s = cal
    ref = formats.load_capping_config(out / "calibration" / "capping_config.pt")
    ids = ref.experiment_ids()
    assert ids == [f"layers_{a}:{b}-p{q:g}" for q in QS for a, b in [(1, 3), (2, 4)]]
    axis = formats.load_axis(out / "axis.safetensors")
    for q in QS:
        exp = ref.experiment(f"layers_2:4-p{q:g}")
        assert exp.metadata["side"] == "ceiling"
        for e in exp.entries:
            # the reference encoding: a ceiling at -threshold on -axis = a floor at threshold on +axis
            torch.testing.assert_close(e.direction, -axis.unit(e.layer), rtol=1e-6, atol=1e-7)
            assert e.hi == -s.thresholds[q][e.layer] and e.lo == -math.inf


def _projections_with(model, tok, conv, cap_cfg, axis, layers):
    from axis_steer.runtime.hooks import Attachment

    r = render_with_spans(tok, conv)
    att = Attachment(model)
    if cap_cfg is not None:
        att.cap_config(cap_cfg)
    with att:
        outs = block_outputs(model, r.input_ids)
    return {x: outs[x].double() @ axis.unit(x).double() for x in layers}


def test_configs_applied_through_the_hooks_cap_exactly_at_the_thresholds(cal):
    rs, tok, model, out, s = cal
    axis = formats.load_axis(out / "axis.safetensors")
    ref = formats.load_capping_config(out / "calibration" / "capping_config.pt")
    q = 0.75  # a high floor, so many tokens are moved
    conv = next(row for r, row in iter_run_responses(out) if r == "default")["conversation"]
    free = _projections_with(model, tok, conv, None, axis, [1, 2])
    via_ref = _projections_with(
        model, tok, conv, ref.experiment(f"layers_1:3-p{q:g}"), axis, [1, 2]
    )
    own = formats.load_caps(out / "calibration" / f"caps_layers_1-3_p{q:g}.safetensors")
    via_own = _projections_with(model, tok, conv, own, axis, [1, 2])
    tau1 = s.thresholds[q][1]
    below = free[1] < tau1
    assert below.any() and (~below).any()
    for got in (via_ref, via_own):
        # first capped layer: rows below the floor land on it, the others are untouched
        torch.testing.assert_close(
            got[1][below], torch.full_like(got[1][below], tau1), rtol=0, atol=1e-5
        )
        torch.testing.assert_close(got[1][~below], free[1][~below], rtol=0, atol=0)
        assert bool((got[2] >= s.thresholds[q][2] - 1e-5).all())
    torch.testing.assert_close(via_ref[2], via_own[2], rtol=0, atol=1e-5)


def test_reference_config_semantics_with_a_plain_hook(cal):
    """The reference code's own rule, written out: at each listed layer,
    h <- h - v_hat * max(<h, v_hat> - cap, 0), interventions in list order."""
    rs, tok, model, out, s = cal
    axis = formats.load_axis(out / "axis.safetensors")
    raw = torch.load(out / "calibration" / "capping_config.pt", weights_only=True)
    q = 0.5
    exp = next(e for e in raw["experiments"] if e["id"] == f"layers_2:4-p{q:g}")
    by_layer = {}
    for iv in exp["interventions"]:
        spec = raw["vectors"][iv["vector"]]
        by_layer.setdefault(spec["layer"], []).append((spec["vector"].double(), iv["cap"]))

    def hook_for(layer):
        def hook(mod, args, output):
            h = output[0] if isinstance(output, tuple) else output
            for v, cap in by_layer[layer]:
                vh = (v / v.norm()).to(h.dtype)
                p = h @ vh
                h = h - vh * torch.clamp(p - cap, min=0.0)[..., None]
            return (h, *output[1:]) if isinstance(output, tuple) else h

        return hook

    conv = next(row for r, row in iter_run_responses(out) if r == "default")["conversation"]
    r = render_with_spans(tok, conv)
    hs = [model.model.layers[x].register_forward_hook(hook_for(x)) for x in by_layer]
    try:
        outs = block_outputs(model, r.input_ids)
    finally:
        for h in hs:
            h.remove()
    for x in (2, 3):
        proj = outs[x].double() @ axis.unit(x).double()
        assert bool((proj >= s.thresholds[q][x] - 1e-5).all())
        assert bool(
            (proj - s.thresholds[q][x]).abs().min() < 1e-5
        )  # some rows sit exactly on the floor


def test_firing_report_matches_a_direct_count(cal):
    rs, tok, model, out, s = cal
    axis = formats.load_axis(out / "axis.safetensors")
    convs = [row["conversation"] for r, row in iter_run_responses(out) if r == "default"]
    units = torch.stack([axis.unit(x) for x in (1, 2, 3)])
    tp = torch.cat(
        [t for per in token_projections(model, tok, convs, units, [1, 2, 3]) for t in per]
    )
    assert s.n_heldout == len(convs) and s.n_heldout_tokens == tp.shape[0] and s.in_sample
    for q in QS:
        tau = torch.tensor([s.thresholds[q][x] for x in (1, 2, 3)])
        below = tp < tau
        for j, x in enumerate((1, 2, 3)):
            assert math.isclose(s.fire[q][x], float(below[:, j].float().mean()), abs_tol=1e-7)
        assert math.isclose(
            s.fire_window[q]["1:3"], float(below[:, :2].any(1).float().mean()), abs_tol=1e-7
        )
        assert math.isclose(
            s.fire_window[q]["2:4"], float(below[:, 1:].any(1).float().mean()), abs_tol=1e-7
        )
    rep = json.loads((out / "calibration" / "report.json").read_text())
    assert (
        rep["side"] == "floor"
        and rep["percentiles"] == list(QS)
        and rep["windows"] == [[1, 3], [2, 4]]
    )
    assert rep["heldout"]["in_sample"] is True and rep["heldout"]["tokens"] == tp.shape[0]
    assert rep["thresholds"]["0.25"]["2"] == s.thresholds[0.25][2]
    assert rep["fire_any_layer_of_window"]["0.5"]["1:3"] == s.fire_window[0.5]["1:3"]
    table = s.table()
    assert "p0.25 floor" in table and "any 1:3" in table
    assert str(s).startswith("calibrate: floors at p0.01, p0.25, p0.5, p0.75")


def test_heldout_conversations_and_bad_windows(cal):
    rs, tok, model, out, s = cal
    convs = [
        [
            {"role": "user", "content": "What is good?"},
            {"role": "assistant", "content": "a good day and night"},
        ]
    ]
    s2 = calibrate(model, tok, out, (0.25,), [(2, 4)], heldout=convs, **QUIET)
    assert not s2.in_sample and s2.n_heldout == 1 and s2.n_heldout_tokens == 5
    with pytest.raises(ValueError, match="not a layer range"):
        calibrate(model, tok, out, (0.25,), [(3, 9)], **QUIET)
    with pytest.raises(ValueError, match="outside"):
        calibrate(model, tok, out, (25,), [(1, 2)], **QUIET)


def test_default_window_and_quantile_helper():
    assert default_window(64) == (46, 54)  # layers 46-53, the paper's for Qwen3-32B
    assert default_window(4) == (3, 4)
    p = np.array([[0.0, 10.0], [1.0, 20.0], [2.0, 30.0], [np.nan, 0.0]])
    th = thresholds_from_projections(p, [0.25, 0.5])
    np.testing.assert_array_equal(th[0.5], [1.0, 20.0])
    np.testing.assert_array_equal(th[0.25], [0.5, 15.0])


# ---- detection thresholds for drift policies


def test_latch_margins_are_exactly_where_the_state_machine_latches():
    rng = np.random.default_rng(3)
    convs = []
    for n in (1, 2, 5, 9, 17, 30, 30, 40):
        p = rng.normal(size=n).astype(np.float32)
        p[rng.random(n) < 0.1] = np.nan
        convs.append(p)
    for window, k in ((1, 1), (1, 3), (4, 1), (4, 2), (8, 3)):
        margins = latch_margins(convs, k=k, window=window)
        for t in rng.normal(size=25):
            for c, p in enumerate(convs):
                r = reference.latch(p[None, :], threshold=float(t), k=k, window=window)
                assert bool(r.latched_at[0] >= 0) == bool(margins[c] < np.float32(t)), (window, k, t, c)
        ts = np.sort(rng.normal(size=9))
        want = [np.mean([reference.latch(p[None, :], threshold=float(t), k=k, window=window).latched_at[0] >= 0
                         for p in convs]) for t in ts]
        np.testing.assert_array_equal(latch_rates(margins, ts), want)
    assert latch_margins([np.array([0.5, -1.0])], k=3, window=1)[0] == np.inf  # too short to latch


def test_proposed_threshold_is_the_highest_within_the_rate():
    m = np.array([-3.0, -2.0, -1.0, 0.0, np.inf])
    t = propose_threshold(m, 0.2)  # one of five may latch
    assert latch_rates(m, [t])[0] == 0.2
    assert latch_rates(m, [np.nextafter(np.float32(t), np.float32(np.inf))])[0] == 0.4
    assert latch_rates(m, [propose_threshold(m, 0.0)])[0] == 0.0
    assert latch_rates(m, [propose_threshold(m, 1.0)])[0] == 0.8  # the last never binds
    assert math.isnan(propose_threshold(np.zeros(0), 0.1))


def test_calibration_proposes_a_latch_that_the_op_follows(cal):
    rs, tok, model, out, _ = cal
    s = calibrate(model, tok, out, QS, [(1, 3), (2, 4)], **QUIET)  # the report of this run (other tests rewrite it)
    lc = s.latch
    assert lc is not None and lc.layer == 1 and (lc.window, lc.k) == (8, 3)
    assert lc.proposed.default_rate <= lc.max_rate and len(lc.grid) == 8
    rep = json.loads((out / "calibration" / "report.json").read_text())["latch"]
    assert rep["proposed"]["threshold"] == lc.proposed.threshold and rep["n_default"] == lc.n_default
    assert "latch at layer 1" in str(s) and "default" in lc.table()
    default = [row["conversation"] for role, row in iter_run_responses(out) if role == "default"]
    rows = sorted((r for r in iter_run_responses(out) if r[0] != "default"),
                  key=lambda rr: (rr[0], rr[1]["prompt_index"], rr[1]["question_index"]))
    roles = [row["conversation"] for j, (role, row) in enumerate(rows) if sum(r[0] == role for r in rows[:j]) < 5]
    assert lc.n_default == len(default) and lc.n_role == len(roles) == 4 * 5  # latch_per_role=5 of 6 each
    axis = formats.load_axis(out / "axis.safetensors")
    pad = pad_id(tok)

    def latched(threshold: float, convs: list) -> float:
        att = Attachment(model, axis)
        pol = att.latch(lc.layer, threshold, k=lc.k, window=lc.window)
        att.cap(lc.layer, -1e30, policy=pol)
        mon = att.monitor([lc.layer])
        ids, am = pad_batch([list(render_with_spans(tok, c).input_ids) for c in convs], pad, side="left")
        with att, torch.no_grad():
            model(input_ids=ids, attention_mask=am)
        return float(mon.readings().policies[0].latched_rows().mean())

    for j in (0, len(lc.thresholds) // 2, len(lc.thresholds) - 1):
        assert latched(lc.thresholds[j], default) == pytest.approx(lc.default_rate[j])
    assert latched(lc.proposed.threshold, roles) == pytest.approx(lc.proposed.role_rate)
    with pytest.raises(ValueError, match="latch_max_rate"):
        calibrate(model, tok, out, (0.25,), [(1, 3)], latch_max_rate=2.0, **QUIET)
    with pytest.raises(TypeError, match="latch_k"):
        calibrate(model, tok, out, (0.25,), [(1, 3)], latch_k=1.5, **QUIET)
