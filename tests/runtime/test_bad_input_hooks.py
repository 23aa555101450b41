"""Bad input to the attachment (``axis_steer.runtime.hooks.Attachment`` and the
handles it returns): layers, thresholds, coefficients, targets, directions,
flags, capacities and capping configs of the wrong type, shape or value. A
refused call leaves no hook on the model. See ``tests/bad_input.py``."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from axis_steer.runtime import formats  # noqa: E402
from axis_steer.runtime.hooks import Attachment  # noqa: E402
from axis_steer.runtime.models import find_layers  # noqa: E402

from bad_input import Good, bad, expect_error, expect_ok, params  # noqa: E402
from zoo import HIDDEN, LAYERS, random_axis, tiny_model  # noqa: E402

NAN, INF = math.nan, math.inf


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def A(m):
    return Attachment(m, random_axis())


def entry(**kw):
    e = dict(layer=1, direction=random_axis()[1], lo=-INF, hi=0.0)
    e.update(kw)
    return formats.CapConfig([formats.CapEntry(**e)])


BAD = [
    # ---- the axis
    bad("axis-int", lambda m: Attachment(m, torch.ones(LAYERS, HIDDEN, dtype=torch.int64)), TypeError, "axis", "int64"),
    bad("axis-complex", lambda m: Attachment(m, torch.ones(LAYERS, HIDDEN, dtype=torch.complex64)), TypeError, "axis", "complex"),
    bad("axis-bool", lambda m: Attachment(m, torch.ones(LAYERS, HIDDEN, dtype=torch.bool)), TypeError, "axis", "bool"),
    bad("axis-str", lambda m: Attachment(m, "axis.pt"), TypeError, "axis"),
    bad("axis-3d", lambda m: Attachment(m, torch.ones(1, LAYERS, HIDDEN)), ValueError, "axis", "shape"),
    bad("axis-wrong-model", lambda m: Attachment(m, torch.ones(LAYERS, HIDDEN + 1)), ValueError, "axis", "does not fit"),
    bad("axis-nan", lambda m: Attachment(m, random_axis() * NAN), ValueError, "axis", "NaN"),
    bad("axis-metadata-list", lambda m: Attachment(m, formats.Axis(random_axis(), [1])), TypeError, "metadata"),
    # ---- layers
    bad("cap-layer-True", lambda m: A(m).cap(True, 0.0), TypeError, "layers", "bool"),
    bad("cap-layer-np-bool", lambda m: A(m).cap(np.True_, 0.0), TypeError, "layers", "bool"),
    bad("cap-layer-str", lambda m: A(m).cap("0", 0.0), TypeError, "layers", "'0'"),
    bad("cap-layer-float", lambda m: A(m).cap(1.7, 0.0), TypeError, "layers", "1.7"),
    bad("cap-layer-float-whole", lambda m: A(m).cap(1.0, 0.0), TypeError, "layers", "float"),
    bad("cap-layer-in-list-float", lambda m: A(m).cap([1, 1.9], 0.0), TypeError, "layers[1]", "1.9"),
    bad("cap-layer-in-list-True", lambda m: A(m).cap([0, True], 0.0), TypeError, "layers[1]", "bool"),
    bad("cap-layer-None", lambda m: A(m).cap(None, 0.0), TypeError, "layers"),
    bad("cap-layer-set", lambda m: A(m).cap({1, 2}, 0.0), TypeError, "layers"),
    bad("cap-layer-negative", lambda m: A(m).cap(-1, 0.0), ValueError, "layers", "-1", "0..3"),
    bad("cap-layer-too-big", lambda m: A(m).cap(LAYERS, 0.0), ValueError, "layers", "out of range"),
    bad("cap-layers-empty", lambda m: A(m).cap([], 0.0), ValueError, "layers", "empty"),
    bad("cap-layers-repeat", lambda m: A(m).cap([1, 1], 0.0), ValueError, "layers", "repeat"),
    bad("cap-layers-float-tensor", lambda m: A(m).cap(torch.tensor([1.0, 2.0]), 0.0), TypeError, "layers[0]"),
    bad("cap-layers-2d", lambda m: A(m).cap(np.array([[1, 2]]), 0.0), ValueError, "layers", "1-D"),
    bad("steer-layer-str", lambda m: A(m).steer("1", 1.0), TypeError, "layers"),
    bad("ablate-layer-float", lambda m: A(m).ablate(2.5), TypeError, "layers"),
    bad("monitor-layer-str", lambda m: A(m).monitor(["1"]), TypeError, "layers[0]"),
    # ---- thresholds
    bad("cap-threshold-None", lambda m: A(m).cap(1, None), TypeError, "thresholds", "None"),
    bad("cap-threshold-str", lambda m: A(m).cap(1, "0"), TypeError, "thresholds"),
    bad("cap-threshold-True", lambda m: A(m).cap(1, True), TypeError, "thresholds", "bool"),
    bad("cap-threshold-nan", lambda m: A(m).cap(1, NAN), ValueError, "thresholds at layer 1", "NaN"),
    bad("cap-threshold-np-float32-nan", lambda m: A(m).cap(1, np.float32("nan")), ValueError, "thresholds at layer 1", "NaN"),
    bad("cap-threshold-1e39", lambda m: A(m).cap(1, 1e39), ValueError, "thresholds at layer 1", "float32"),
    bad("cap-threshold-inf", lambda m: A(m).cap(1, INF), ValueError, "thresholds", "not a bound"),
    bad("ceiling-threshold-minus-inf", lambda m: A(m).cap(1, -INF, side="ceiling"), ValueError, "thresholds", "not a bound"),
    bad("cap-threshold-complex", lambda m: A(m).cap(1, 1j), TypeError, "thresholds", "complex"),
    bad("cap-threshold-list-nan", lambda m: A(m).cap([1, 2], [0.0, NAN]), ValueError, "thresholds at layer 2", "NaN"),
    bad("cap-threshold-dict-str", lambda m: A(m).cap([1], {1: "0.5"}), TypeError, "thresholds at layer 1"),
    bad("cap-threshold-dict-missing", lambda m: A(m).cap([1, 2], {1: 0.0}), ValueError, "thresholds", "no value for layers [2]"),
    bad("cap-threshold-set", lambda m: A(m).cap([1, 2], {0.0, 1.0}), TypeError, "thresholds"),
    bad("cap-threshold-count", lambda m: A(m).cap([1, 2], [0.1, 0.2, 0.3]), ValueError, "thresholds", "3 values for 2 layers"),
    bad("cap-threshold-row-nan", lambda m: A(m).cap([1], torch.tensor([[0.0], [NAN]])), ValueError, "thresholds at layer 1", "NaN"),
    bad("cap-threshold-row-bool", lambda m: A(m).cap([1], {1: torch.tensor([True, False])}), TypeError, "thresholds at layer 1", "bool"),
    bad("cap-threshold-3d", lambda m: A(m).cap([1], torch.zeros(2, 1, 1)), ValueError, "thresholds", "shape"),
    bad("cap-side-unknown", lambda m: A(m).cap(1, 0.0, side="top"), ValueError, "side", "'top'"),
    bad("cap-side-int", lambda m: A(m).cap(1, 0.0, side=1), TypeError, "side"),
    bad("band-lo-above-hi", lambda m: A(m).cap(1, (2.0, 1.0), side="band"), ValueError, "lo = 2.0 > hi"),
    bad("band-not-pairs", lambda m: A(m).cap([1, 2], [0.0, 1.0], side="band"), ValueError, "thresholds", "(lo, hi)"),
    bad("band-lo-str", lambda m: A(m).cap(1, ("0", 1.0), side="band"), TypeError, "thresholds[0]", "'0'"),
    bad("set-thresholds-nan", lambda m: A(m).cap(1, 0.0).set_thresholds(NAN), ValueError, "thresholds at layer 1", "NaN"),
    bad("set-thresholds-True", lambda m: A(m).cap(1, 0.0).set_thresholds(True), TypeError, "thresholds", "bool"),
    # ---- directions
    bad("cap-direction-complex", lambda m: A(m).cap(1, 0.0, direction=torch.ones(HIDDEN, dtype=torch.complex64)), TypeError, "direction", "complex"),
    bad("cap-direction-int", lambda m: A(m).cap(1, 0.0, direction=np.ones(HIDDEN, np.int64)), TypeError, "direction", "int64"),
    bad("cap-direction-bool", lambda m: A(m).cap(1, 0.0, direction=torch.ones(HIDDEN, dtype=torch.bool)), TypeError, "direction", "bool"),
    bad("cap-direction-str", lambda m: A(m).cap(1, 0.0, direction="axis"), TypeError, "direction"),
    bad("cap-direction-short", lambda m: A(m).cap(1, 0.0, direction=torch.ones(7)), ValueError, "direction", "shape"),
    bad("cap-direction-rows", lambda m: A(m).cap(1, 0.0, direction=torch.ones(LAYERS + 1, HIDDEN)), ValueError, "direction", "n_layers"),
    bad("cap-direction-zero", lambda m: A(m).cap(1, 0.0, direction=torch.zeros(HIDDEN)), ValueError, "direction at layer 1", "norm"),
    bad("cap-direction-inf", lambda m: A(m).cap(1, 0.0, direction=torch.full((HIDDEN,), INF)), ValueError, "direction at layer 1", "norm"),
    bad("steer-direction-complex", lambda m: A(m).steer(1, 1.0, direction=np.ones(HIDDEN, np.complex128)), TypeError, "direction", "complex"),
    bad("ablate-direction-int", lambda m: A(m).ablate(1, direction=torch.ones(HIDDEN, dtype=torch.int32)), TypeError, "direction", "int32"),
    # ---- steering
    bad("steer-coef-nan", lambda m: A(m).steer(1, NAN), ValueError, "coef at layer 1", "NaN"),
    bad("steer-coef-inf", lambda m: A(m).steer(1, INF), ValueError, "coef at layer 1", "finite"),
    bad("steer-coef-True", lambda m: A(m).steer(1, True), TypeError, "coef at layer 1", "bool"),
    bad("steer-coef-str", lambda m: A(m).steer(1, "1"), TypeError, "coef"),
    bad("steer-coef-None", lambda m: A(m).steer(1, None), TypeError, "coef"),
    bad("steer-coef-1e39", lambda m: A(m).steer(1, 1e39), ValueError, "coef at layer 1", "float32"),
    bad("steer-units-unknown", lambda m: A(m).steer(1, 1.0, units="percent"), ValueError, "units", "'percent'"),
    bad("steer-units-None", lambda m: A(m).steer(1, 1.0, units=None), TypeError, "units"),
    bad("steer-residual-missing", lambda m: A(m).steer(1, 1.0, units="residual"), ValueError, "residual_norms"),
    bad("steer-residual-str", lambda m: A(m).steer(1, 1.0, units="residual", residual_norms={1: "2.0"}), TypeError, "residual_norms at layer 1"),
    bad("steer-residual-zero", lambda m: A(m).steer(1, 1.0, units="residual", residual_norms={1: 0.0}), ValueError, "residual_norms at layer 1", "outside"),
    bad("steer-residual-nan", lambda m: A(m).steer(1, 1.0, units="residual", residual_norms={1: NAN}), ValueError, "residual_norms at layer 1"),
    bad("steer-residual-True", lambda m: A(m).steer(1, 1.0, units="residual", residual_norms={1: True}), TypeError, "residual_norms at layer 1", "bool"),
    bad("set-coefficient-nan", lambda m: A(m).steer(1, 1.0).set_coefficient(NAN), ValueError, "coef at layer 1", "NaN"),
    bad("set-coefficient-str", lambda m: A(m).steer(1, 1.0).set_coefficient("2"), TypeError, "coef"),
    # ---- ablation
    bad("ablate-target-nan", lambda m: A(m).ablate(1, target=NAN), ValueError, "target at layer 1", "finite"),
    bad("ablate-target-inf", lambda m: A(m).ablate(1, target=-INF), ValueError, "target at layer 1", "finite"),
    bad("ablate-target-True", lambda m: A(m).ablate(1, target=True), TypeError, "target at layer 1", "bool"),
    bad("set-target-inf", lambda m: A(m).ablate(1).set_target(INF), ValueError, "target at layer 1", "finite"),
    bad("set-target-str", lambda m: A(m).ablate(1).set_target("0"), TypeError, "target"),
    # ---- flags
    bad("enable-half", lambda m: A(m).cap(1, 0.0).enable(0.5), TypeError, "on"),
    bad("enable-str", lambda m: A(m).cap(1, 0.0).enable("yes"), TypeError, "on"),
    bad("enable-two", lambda m: A(m).cap(1, 0.0).enable([1, 2]), ValueError, "on[1] = 2"),
    bad("enable-float-rows", lambda m: A(m).cap(1, 0.0).enable(torch.tensor([1.0, 0.0])), TypeError, "on", "float32"),
    bad("enable-None", lambda m: A(m).cap(1, 0.0).enable(None), TypeError, "on"),
    # ---- monitor
    bad("monitor-capacity-float", lambda m: A(m).monitor([1], capacity=2.5), TypeError, "capacity", "2.5"),
    bad("monitor-capacity-True", lambda m: A(m).monitor([1], capacity=True), TypeError, "capacity", "bool"),
    bad("monitor-capacity-str", lambda m: A(m).monitor([1], capacity="8"), TypeError, "capacity"),
    bad("monitor-capacity-zero", lambda m: A(m).monitor([1], capacity=0), ValueError, "capacity", "positive"),
    bad("monitor-no-axis", lambda m: Attachment(m).monitor([0]), ValueError, "no axis"),
    # ---- capping configs
    bad("config-not-a-config", lambda m: A(m).cap_config({"entries": []}), TypeError, "config", "CapConfig"),
    bad("config-empty", lambda m: A(m).cap_config(formats.CapConfig([])), ValueError, "config", "no capping entries"),
    bad("config-entry-not-entry", lambda m: A(m).cap_config(formats.CapConfig([(1, None, 0.0, 1.0)])), TypeError, "config entry 0"),
    bad("config-layer-float", lambda m: A(m).cap_config(entry(layer=1.7)), TypeError, "config entry 0: layer", "1.7"),
    bad("config-layer-True", lambda m: A(m).cap_config(entry(layer=True)), TypeError, "config entry 0: layer", "bool"),
    bad("config-layer-str", lambda m: A(m).cap_config(entry(layer="1")), TypeError, "config entry 0: layer"),
    bad("config-layer-out-of-range", lambda m: A(m).cap_config(entry(layer=7)), ValueError, "config entry 0: layer", "0..3"),
    bad("config-cap-True", lambda m: A(m).cap_config(entry(hi=True)), TypeError, "config entry 0", "hi", "bool"),
    bad("config-cap-str", lambda m: A(m).cap_config(entry(hi="0.5")), TypeError, "config entry 0", "hi", "str"),
    bad("config-cap-nan", lambda m: A(m).cap_config(entry(hi=NAN)), ValueError, "config entry 0", "hi", "NaN"),
    bad("config-cap-1e39", lambda m: A(m).cap_config(entry(hi=1e39)), ValueError, "config entry 0", "float32"),
    bad("config-cap-rows", lambda m: A(m).cap_config(entry(hi=np.zeros(2))), TypeError, "config entry 0", "numbers"),
    bad("config-direction-complex", lambda m: A(m).cap_config(entry(direction=torch.ones(HIDDEN, dtype=torch.complex64))), TypeError, "config entry 0: direction", "complex"),
    bad("config-direction-zero", lambda m: A(m).cap_config(entry(direction=torch.zeros(HIDDEN))), ValueError, "config entry 0: direction", "norm"),
    # ---- drift policies
    bad("latch-layer-float", lambda m: A(m).latch(1.0, 0.0), TypeError, "latch: layer", "float"),
    bad("latch-layer-out", lambda m: A(m).latch(LAYERS, 0.0), ValueError, "latch: layer", "out of range"),
    bad("latch-threshold-nan", lambda m: A(m).latch(1, NAN), ValueError, "threshold", "finite"),
    bad("latch-threshold-str", lambda m: A(m).latch(1, "0"), TypeError, "threshold"),
    bad("latch-k-float", lambda m: A(m).latch(1, 0.0, k=2.0), TypeError, "k", "number of tokens"),
    bad("latch-k-0", lambda m: A(m).latch(1, 0.0, k=0), ValueError, "k", "number of tokens"),
    bad("latch-window-True", lambda m: A(m).latch(1, 0.0, window=True), TypeError, "window", "bool"),
    bad("latch-release-below", lambda m: A(m).latch(1, 0.0, release=-1.0), ValueError, "release", "threshold"),
    bad("latch-release-inf", lambda m: A(m).latch(1, 0.0, release=INF), ValueError, "release", "finite"),
    bad("latch-phases", lambda m: A(m).latch(1, 0.0, phases="decode"), ValueError, "phases", "generated"),
    bad("latch-capacity-0", lambda m: A(m).latch(1, 0.0, capacity=0), ValueError, "capacity"),
    bad("phases-word", lambda m: A(m).phases("all"), ValueError, "phases", "both"),
    bad("cap-policy-before-detection", lambda m: (lambda a: a.cap([0, 1], 0.0, policy=a.latch(1, 0.0)))(A(m)),
        ValueError, "cap", "detection layer 1"),
    bad("cap-policy-other-attachment", lambda m: A(m).cap(1, 0.0, policy=A(m).latch(1, 0.0)), ValueError, "policy",
        "this attachment"),
    bad("cap-policy-not-a-policy", lambda m: A(m).cap(1, 0.0, policy="latch"), ValueError, "policy"),
    bad("phases-threshold", lambda m: A(m).phases().configure(threshold=0.0), ValueError, "threshold", "phases alone"),
]


@pytest.mark.parametrize("case", params(BAD))
def test_attachment_refuses(case, model):
    expect_error(case, model)
    assert all(not b._forward_hooks for b in find_layers(model).blocks)


GOOD = [
    Good("cap-layer-np-int64", lambda m: A(m).cap(np.int64(1), 0.0), lambda c, m: c.layers == [1]),
    Good("cap-layer-0d-tensor", lambda m: A(m).cap(torch.tensor(2), 0.0), lambda c, m: c.layers == [2]),
    Good("cap-layers-range", lambda m: A(m).cap(range(1, 3), 0.0), lambda c, m: c.layers == [1, 2]),
    Good("cap-layers-array", lambda m: A(m).cap(np.array([0, 3]), [0.1, 0.2]), lambda c, m: c.thresholds[3] == (0.2, INF)),
    Good("cap-threshold-np-float32", lambda m: A(m).cap(1, np.float32(0.5)), lambda c, m: c.thresholds[1] == (0.5, INF)),
    Good("cap-threshold-0d-array", lambda m: A(m).cap(1, np.array(0.25)), lambda c, m: c.thresholds[1] == (0.25, INF)),
    Good("cap-threshold-int", lambda m: A(m).cap(1, 1), lambda c, m: c.thresholds[1] == (1.0, INF)),
    Good("cap-thresholds-all-layers-array", lambda m: A(m).cap([1, 2], np.arange(LAYERS, dtype=np.float64)), lambda c, m: c.thresholds[2] == (2.0, INF)),
    Good("ceiling-inf-is-open", lambda m: A(m).cap(1, INF, side="ceiling"), lambda c, m: c.thresholds[1] == (-INF, INF)),
    Good("cap-per-row-int-tensor", lambda m: A(m).cap([1], torch.tensor([[0], [1]])), lambda c, m: torch.equal(c.thresholds[1][0], torch.tensor([0.0, 1.0]))),
    Good("cap-direction-bfloat16", lambda m: A(m).cap(1, 0.0, direction=random_axis()[1].bfloat16())),
    Good("cap-direction-list", lambda m: A(m).cap(1, 0.0, direction=[1.0] + [0.0] * (HIDDEN - 1))),
    Good("steer-coef-np-int", lambda m: A(m).steer(1, np.int32(2))),
    Good("enable-np-bool", lambda m: A(m).cap(1, 0.0).enable(np.False_)),
    Good("enable-rows-01", lambda m: A(m).cap(1, 0.0).enable([1, 0])),
    Good("monitor-capacity-np-int", lambda m: A(m).monitor([1], capacity=np.int64(16))),
    Good("config-layer-np-int", lambda m: A(m).cap_config(entry(layer=np.int64(2))), lambda c, m: c.layers == [2]),
    Good("latch-np-values", lambda m: A(m).latch(np.int64(1), np.float32(-0.5), k=np.int32(2), window=np.int64(4)),
         lambda p, m: (p.layer, p.k, p.window, p.threshold) == (1, 2, 4, -0.5)),
    Good("latch-release-equal", lambda m: A(m).latch(1, 0.25, release=0.25), lambda p, m: p.release == 0.25),
]


@pytest.mark.parametrize("case", params(GOOD))
def test_attachment_accepts(case, model):
    expect_ok(case, model)
