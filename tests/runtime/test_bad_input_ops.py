"""Bad input to the operations (``axis_steer.runtime.ops``), every row run on both
paths, NumPy arrays (the ``_C`` module) and torch tensors (the torch
operators): wrong types and dtypes, wrong shapes, non-finite and
out-of-range values, values that change meaning by type (``True``, ``'0'``,
``np.float32('nan')``, ``1e39``, complex, a 0.5 mask). Both paths must refuse
the same things with the same error type and accept the same edge inputs
with the same bits. See ``tests/bad_input.py`` for how rows are checked."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from axis_steer.runtime import ops  # noqa: E402
from axis_steer.runtime.ops import Step  # noqa: E402

from bad_input import Good, bad, expect_error, expect_ok, params  # noqa: E402

D = 4
INF = math.inf
NAN = math.nan


def _path(name: str) -> SimpleNamespace:
    """How a row builds its inputs on one path: ``h()``, ``u()``, ``a(values, dtype)``."""
    if name == "numpy":
        return SimpleNamespace(
            name=name,
            h=lambda: np.array([[1.0, 2.0, 0.0, 0.0], [-1.0, 0.5, 0.0, 0.0], [3.0, 0.0, 1.0, 0.0]], np.float32),
            a=lambda v, dtype=None: np.asarray(v, dtype=dtype),
        )
    tdt = {None: None, np.float32: torch.float32, np.float64: torch.float64, np.float16: torch.float16,
           np.int64: torch.int64, np.int32: torch.int32, np.uint8: torch.uint8, bool: torch.bool,
           np.complex64: torch.complex64, np.complex128: torch.complex128}
    return SimpleNamespace(
        name=name,
        h=lambda: torch.tensor([[1.0, 2.0, 0.0, 0.0], [-1.0, 0.5, 0.0, 0.0], [3.0, 0.0, 1.0, 0.0]]),
        a=lambda v, dtype=None: torch.tensor(v, dtype=tdt[dtype]),
    )


@pytest.fixture(params=["numpy", "torch"])
def P(request):
    return _path(request.param)


def U(P, dtype=np.float32):
    return P.a([1.0, 0.0, 0.0, 0.0], dtype)


E1 = [1.0, 0.0, 0.0, 0.0]

BAD = [
    # ---- project: directions, masks, options
    bad("project-u-complex", lambda P: ops.project(P.h(), U(P, np.complex64)), TypeError, "u", "complex"),
    bad("project-u-int", lambda P: ops.project(P.h(), P.a([1, 0, 0, 0], np.int64)), TypeError, "u", "int64"),
    bad("project-u-bool", lambda P: ops.project(P.h(), P.a([True, False, False, False], bool)), TypeError, "u", "bool"),
    bad("project-u-float16", lambda P: ops.project(P.h(), U(P, np.float16)), TypeError, "u", "float16"),
    bad("project-u-str", lambda P: ops.project(P.h(), "1000"), TypeError, "u"),
    bad("project-u-None", lambda P: ops.project(P.h(), None), TypeError, "u"),
    bad("project-u-number", lambda P: ops.project(P.h(), 1.0), TypeError, "u"),
    bad("project-u-2d", lambda P: ops.project(P.h(), P.a([E1], np.float32)), ValueError, "u", "shape", "(4,)"),
    bad("project-u-short", lambda P: ops.project(P.h(), P.a([1.0, 0.0, 0.0], np.float32)), ValueError, "u", "(4,)"),
    bad("project-u-not-unit", lambda P: ops.project(P.h(), P.a([2.0, 0, 0, 0], np.float32)), ValueError, "u", "unit"),
    bad("project-u-zero", lambda P: ops.project(P.h(), P.a([0.0] * 4, np.float32)), ValueError, "u"),
    bad("project-u-nan", lambda P: ops.project(P.h(), P.a([NAN, 0, 0, 0], np.float32)), ValueError, "u"),
    bad("project-mask-half", lambda P: ops.project(P.h(), U(P), mask=P.a([0.5, 1.0, 0.0], np.float32)), TypeError, "mask", "float"),
    bad("project-mask-float-ones", lambda P: ops.project(P.h(), U(P), mask=P.a([1.0, 1.0, 0.0], np.float64)), TypeError, "mask"),
    bad("project-mask-two", lambda P: ops.project(P.h(), U(P), mask=P.a([2, 1, 0], np.int64)), ValueError, "mask[0] = 2", "0 / 1"),
    bad("project-mask-negative", lambda P: ops.project(P.h(), U(P), mask=P.a([1, -1, 0], np.int64)), ValueError, "mask[1] = -1"),
    bad("project-mask-complex", lambda P: ops.project(P.h(), U(P), mask=P.a([1, 0, 1], np.complex64)), TypeError, "mask"),
    bad("project-mask-str", lambda P: ops.project(P.h(), U(P), mask="yes"), TypeError, "mask"),
    bad("project-mask-float-scalar", lambda P: ops.project(P.h(), U(P), mask=0.5), TypeError, "mask"),
    bad("project-mask-shape", lambda P: ops.project(P.h(), U(P), mask=P.a([True, False], bool)), ValueError, "mask"),
    bad("project-h-int", lambda P: ops.project(P.a([[1, 0, 0, 0]], np.int64), U(P)), TypeError, "h", "dtype"),
    bad("project-h-float64", lambda P: ops.project(P.a([E1], np.float64), U(P)), TypeError, "h", "dtype"),
    bad("project-h-0d", lambda P: ops.project(P.a(1.0, np.float32), P.a([1.0], np.float32)), ValueError, "h"),
    # ---- clamp_: bounds that change meaning by type, NaN, float32 range, sides
    bad("clamp-lo-True", lambda P: ops.clamp_(P.h(), U(P), True), TypeError, "lo", "bool"),
    bad("clamp-hi-np-bool", lambda P: ops.clamp_(P.h(), U(P), 0.0, np.True_), TypeError, "hi", "bool"),
    bad("clamp-lo-str", lambda P: ops.clamp_(P.h(), U(P), "0"), TypeError, "lo", "str"),
    bad("clamp-lo-bytes", lambda P: ops.clamp_(P.h(), U(P), b"0"), TypeError, "lo"),
    bad("clamp-lo-None", lambda P: ops.clamp_(P.h(), U(P), None), TypeError, "lo"),
    bad("clamp-lo-complex", lambda P: ops.clamp_(P.h(), U(P), 1j), TypeError, "lo", "complex"),
    bad("clamp-lo-np-complex", lambda P: ops.clamp_(P.h(), U(P), np.complex64(1)), TypeError, "lo", "complex"),
    bad("clamp-lo-nan", lambda P: ops.clamp_(P.h(), U(P), NAN), ValueError, "lo", "NaN", "-inf"),
    bad("clamp-lo-np-float32-nan", lambda P: ops.clamp_(P.h(), U(P), np.float32("nan")), ValueError, "lo", "NaN"),
    bad("clamp-hi-np-float64-nan", lambda P: ops.clamp_(P.h(), U(P), -INF, np.float64("nan")), ValueError, "hi", "NaN"),
    bad("clamp-lo-0d-nan", lambda P: ops.clamp_(P.h(), U(P), np.array(NAN)), ValueError, "lo", "NaN"),
    bad("clamp-lo-row-nan", lambda P: ops.clamp_(P.h(), U(P), P.a([0.0, NAN, 0.0], np.float32)), ValueError, "lo[1]", "NaN"),
    bad("clamp-lo-1e39", lambda P: ops.clamp_(P.h(), U(P), 1e39), ValueError, "lo", "float32 range"),
    bad("clamp-hi-minus-1e39", lambda P: ops.clamp_(P.h(), U(P), -INF, -1e39), ValueError, "hi", "float32 range"),
    bad("clamp-lo-np-float64-1e39", lambda P: ops.clamp_(P.h(), U(P), np.float64(1e39)), ValueError, "lo", "float32 range"),
    bad("clamp-lo-0d-1e39", lambda P: ops.clamp_(P.h(), U(P), np.array(1e39)), ValueError, "lo", "float32 range"),
    bad("clamp-lo-row-1e39", lambda P: ops.clamp_(P.h(), U(P), P.a([0.0, 1e39, 0.0], np.float64)), ValueError, "lo[1]", "float32"),
    bad("clamp-lo-plus-inf", lambda P: ops.clamp_(P.h(), U(P), INF), ValueError, "lo", "not a bound"),
    bad("clamp-hi-minus-inf", lambda P: ops.clamp_(P.h(), U(P), -INF, -INF), ValueError, "hi", "not a bound"),
    bad("clamp-lo-above-hi", lambda P: ops.clamp_(P.h(), U(P), 2.0, 1.0), ValueError, "lo = 2.0 > hi = 1.0"),
    bad("clamp-lo-above-hi-row", lambda P: ops.clamp_(P.h(), U(P), P.a([0.0, 3.0, 0.0], np.float32), 1.0), ValueError, "lo[1] > hi"),
    bad("clamp-lo-shape", lambda P: ops.clamp_(P.h(), U(P), P.a([0.0] * 5, np.float32)), ValueError, "lo", "broadcast"),
    bad("clamp-lo-bool-array", lambda P: ops.clamp_(P.h(), U(P), P.a([True, False, True], bool)), TypeError, "lo", "bool"),
    bad("clamp-lo-complex-array", lambda P: ops.clamp_(P.h(), U(P), P.a([0, 0, 0], np.complex64)), TypeError, "lo", "complex"),
    bad("clamp-lo-object-array", lambda P: ops.clamp_(P.h(), U(P), np.array([0.0, "a", None], object)), TypeError, "lo"),
    bad("clamp-lo-ragged", lambda P: ops.clamp_(P.h(), U(P), [[0.0], [0.0, 1.0]]), TypeError, "lo"),
    bad("clamp-return-stats-str", lambda P: ops.clamp_(P.h(), U(P), 0.0, return_stats="yes"), TypeError, "return_stats"),
    bad("clamp-return-stats-int", lambda P: ops.clamp_(P.h(), U(P), 0.0, return_stats=1), TypeError, "return_stats"),
    bad("clamp-u-complex", lambda P: ops.clamp_(P.h(), U(P, np.complex128), 0.0), TypeError, "u", "complex"),
    bad("clamp-u-int", lambda P: ops.clamp_(P.h(), P.a([1, 0, 0, 0], np.int32), 0.0), TypeError, "u", "int32"),
    bad("clamp-mask-half", lambda P: ops.clamp_(P.h(), U(P), 0.0, mask=P.a([0.5, 0.5, 0.5], np.float32)), TypeError, "mask"),
    # ---- set_projection_ / ablate_ / steer_
    bad("set-target-None", lambda P: ops.set_projection_(P.h(), U(P), None), TypeError, "target"),
    bad("set-target-nan", lambda P: ops.set_projection_(P.h(), U(P), NAN), ValueError, "target", "NaN"),
    bad("set-target-np-float32-nan", lambda P: ops.set_projection_(P.h(), U(P), np.float32("nan")), ValueError, "target", "NaN"),
    bad("set-target-inf", lambda P: ops.set_projection_(P.h(), U(P), INF), ValueError, "target", "finite"),
    bad("set-target-True", lambda P: ops.set_projection_(P.h(), U(P), True), TypeError, "target", "bool"),
    bad("set-target-str", lambda P: ops.set_projection_(P.h(), U(P), "1"), TypeError, "target", "str"),
    bad("set-target-complex", lambda P: ops.set_projection_(P.h(), U(P), 1 + 0j), TypeError, "target", "complex"),
    bad("set-target-1e39", lambda P: ops.set_projection_(P.h(), U(P), 1e39), ValueError, "target", "float32"),
    bad("set-target-row-inf", lambda P: ops.set_projection_(P.h(), U(P), P.a([0.0, INF, 0.0], np.float32)), ValueError, "target[1]"),
    bad("ablate-u-complex", lambda P: ops.ablate_(P.h(), U(P, np.complex64)), TypeError, "u", "complex"),
    bad("ablate-mask-half", lambda P: ops.ablate_(P.h(), U(P), mask=P.a([0.5, 1, 1], np.float64)), TypeError, "mask"),
    bad("steer-alpha-None", lambda P: ops.steer_(P.h(), U(P), None), TypeError, "alpha"),
    bad("steer-alpha-nan", lambda P: ops.steer_(P.h(), U(P), NAN), ValueError, "alpha", "NaN"),
    bad("steer-alpha-inf", lambda P: ops.steer_(P.h(), U(P), -INF), ValueError, "alpha", "finite"),
    bad("steer-alpha-True", lambda P: ops.steer_(P.h(), U(P), True), TypeError, "alpha", "bool"),
    bad("steer-alpha-str", lambda P: ops.steer_(P.h(), U(P), "1"), TypeError, "alpha", "str"),
    bad("steer-alpha-complex", lambda P: ops.steer_(P.h(), U(P), 2j), TypeError, "alpha", "complex"),
    bad("steer-w-complex", lambda P: ops.steer_(P.h(), U(P, np.complex64), 1.0), TypeError, "w", "complex"),
    bad("steer-w-int", lambda P: ops.steer_(P.h(), P.a([1, 0, 0, 0], np.int64), 1.0), TypeError, "w", "int64"),
    bad("steer-w-nan", lambda P: ops.steer_(P.h(), P.a([NAN, 0, 0, 0], np.float32), 1.0), ValueError, "w"),
    bad("steer-w-shape", lambda P: ops.steer_(P.h(), P.a([1.0, 0.0], np.float32), 1.0), ValueError, "w", "(4,)"),
    # ---- apply_ / apply: steps
    bad("apply-steps-None", lambda P: ops.apply_(P.h(), None), TypeError, "steps"),
    bad("apply-steps-str", lambda P: ops.apply_(P.h(), "clamp"), TypeError, "steps"),
    bad("apply-steps-empty", lambda P: ops.apply_(P.h(), []), ValueError, "steps", "empty"),
    bad("apply-step-of-5", lambda P: ops.apply_(P.h(), [("clamp", U(P), 0.0, 1.0, 2.0)]), TypeError, "steps[0]", "2 to 4"),
    bad("apply-step-of-1", lambda P: ops.apply_(P.h(), [("clamp",)]), TypeError, "steps[0]", "2 to 4"),
    bad("apply-step-not-tuple", lambda P: ops.apply_(P.h(), ["clamp"]), TypeError, "steps[0]"),
    bad("apply-op-int", lambda P: ops.apply_(P.h(), [(1, U(P), 0.0, 1.0)]), TypeError, "steps[0].op"),
    bad("apply-op-unknown", lambda P: ops.apply_(P.h(), [("cap", U(P), 0.0)]), ValueError, "steps[0].op", "'cap'"),
    bad("apply-set-no-target", lambda P: ops.apply_(P.h(), [("set", U(P))]), ValueError, "steps[0]", "target"),
    bad("apply-steer-no-alpha", lambda P: ops.apply_(P.h(), [("steer", U(P))]), ValueError, "steps[0]", "alpha"),
    bad("apply-set-target-nan", lambda P: ops.apply_(P.h(), [Step.set(U(P), NAN)]), ValueError, "steps[0].a", "NaN"),
    bad("apply-steer-alpha-True", lambda P: ops.apply_(P.h(), [Step.steer(U(P), True)]), TypeError, "steps[0].a", "bool"),
    bad("apply-clamp-lo-np-float32-nan", lambda P: ops.apply_(P.h(), [Step.clamp(U(P), np.float32("nan"))]), ValueError, "steps[0]: lo", "NaN"),
    bad("apply-clamp-lo-1e39", lambda P: ops.apply_(P.h(), [Step.clamp(U(P), 1e39)]), ValueError, "steps[0]: lo", "float32"),
    bad("apply-clamp-lo-True", lambda P: ops.apply_(P.h(), [Step.clamp(U(P), True)]), TypeError, "steps[0]: lo", "bool"),
    bad("apply-clamp-hi-str", lambda P: ops.apply_(P.h(), [Step.clamp(U(P), 0.0, "1")]), TypeError, "steps[0]: hi", "str"),
    bad("apply-second-step-lo-above-hi", lambda P: ops.apply_(P.h(), [Step.project(U(P)), Step.clamp(U(P), 1.0, 0.0)]), ValueError, "steps[1]", "lo <= hi"),
    bad("apply-dir-complex", lambda P: ops.apply_(P.h(), [Step.clamp(U(P, np.complex64), 0.0)]), TypeError, "steps[0].dir", "complex"),
    bad("apply-dir-int", lambda P: ops.apply_(P.h(), [Step.steer(P.a([1, 0, 0, 0], np.int64), 1.0)]), TypeError, "steps[0].dir", "int64"),
    bad("apply-dir-shape", lambda P: ops.apply_(P.h(), [Step.clamp(P.a([1.0, 0.0], np.float32), 0.0)]), ValueError, "steps[0].dir", "(4,)"),
    bad("apply-dir-not-unit", lambda P: ops.apply_(P.h(), [Step.clamp(P.a([2.0, 0, 0, 0], np.float32), 0.0)]), ValueError, "dirs[0]", "unit"),
    bad("apply-rows-do-not-broadcast", lambda P: ops.apply_(P.h(), [Step.clamp(U(P), P.a([0.0] * 3, np.float32)), Step.steer(U(P), P.a([0.0] * 2, np.float32))]), ValueError, "steps", "broadcast"),
    bad("apply-record-str", lambda P: ops.apply_(P.h(), [Step.project(U(P))], record="yes"), TypeError, "record"),
    bad("apply-mask-half", lambda P: ops.apply_(P.h(), [Step.project(U(P))], mask=P.a([0.5] * 3, np.float32)), TypeError, "mask"),
    bad("apply-out-of-place-lo-nan", lambda P: ops.apply(P.h(), [Step.clamp(U(P), NAN)]), ValueError, "steps[0]: lo", "NaN"),
    bad("clamp-out-of-place-lo-True", lambda P: ops.clamp(P.h(), U(P), True), TypeError, "lo", "bool"),
    bad("steer-out-of-place-alpha-str", lambda P: ops.steer(P.h(), U(P), "1"), TypeError, "alpha"),
    bad("ablate-out-of-place-u-int", lambda P: ops.ablate(P.h(), P.a([1, 0, 0, 0], np.int64)), TypeError, "u", "int64"),
    # ---- unit
    bad("unit-complex", lambda P: ops.unit(P.a([1, 1], np.complex64)), TypeError, "v", "complex"),
    bad("unit-int", lambda P: ops.unit(P.a([1, 1], np.int64)), TypeError, "v", "int64"),
    bad("unit-str", lambda P: ops.unit("ab"), TypeError, "v"),
    bad("unit-zero", lambda P: ops.unit(P.a([0.0, 0.0], np.float32)), ValueError, "v", "norm 0"),
    bad("unit-nan", lambda P: ops.unit(P.a([NAN, 1.0], np.float32)), ValueError, "v", "norm nan"),
    bad("unit-2d", lambda P: ops.unit(P.a([[1.0, 0.0]], np.float32)), ValueError, "v", "shape"),
]

BAD_NUMPY = [
    bad("numpy-threads-str", lambda: ops.project(_path("numpy").h(), np.eye(4, dtype=np.float32)[0], threads="x"), TypeError, "threads", "'x'"),
    bad("numpy-threads-True", lambda: ops.project(_path("numpy").h(), np.eye(4, dtype=np.float32)[0], threads=True), TypeError, "threads", "bool"),
    bad("numpy-threads-float", lambda: ops.project(_path("numpy").h(), np.eye(4, dtype=np.float32)[0], threads=2.5), TypeError, "threads"),
    bad("numpy-threads-negative", lambda: ops.clamp_(_path("numpy").h(), np.eye(4, dtype=np.float32)[0], 0.0, threads=-1), ValueError, "threads", "-1"),
    bad("numpy-h-list", lambda: ops.project([E1], np.eye(4, dtype=np.float32)[0]), TypeError, "h", "np.asarray"),
    bad("numpy-apply-h-list", lambda: ops.apply([E1], [Step.project(np.eye(4, dtype=np.float32)[0])]), TypeError, "h"),
    bad("numpy-lo-cuda-free-tensor-nan", lambda: ops.clamp_(_path("numpy").h(), np.eye(4, dtype=np.float32)[0], torch.tensor(NAN)), ValueError, "lo", "NaN"),
]


def _t_h():
    return _path("torch").h()


def _t_u():
    return torch.tensor(E1)


BAD_TORCH = [
    bad("torch-threads", lambda: ops.project(_t_h(), _t_u(), threads=2), TypeError, "threads", "NumPy"),
    bad("torch-dtype", lambda: ops.project(_t_h(), _t_u(), dtype="float32"), TypeError, "dtype", "NumPy"),
    bad("torch-lo-meta", lambda: ops.clamp_(_t_h(), _t_u(), torch.tensor(0.0, device="meta")), ValueError, "lo", "meta"),
    bad("torch-u-meta", lambda: ops.project(_t_h(), _t_u().to("meta")), ValueError, "u", "meta"),
    bad("torch-mask-meta", lambda: ops.project(_t_h(), _t_u(), mask=torch.ones(3, dtype=torch.bool, device="meta")), ValueError, "mask", "meta"),
    bad("torch-alpha-meta", lambda: ops.steer_(_t_h(), _t_u(), torch.tensor(1.0, device="meta")), ValueError, "alpha", "meta"),
    bad("torch-steps-dir-meta", lambda: ops.apply(_t_h(), [Step.clamp(_t_u().to("meta"), 0.0)]), ValueError, "steps[0].dir", "meta"),
    bad("torch-in-place-requires-grad", lambda: ops.clamp_(_t_h().requires_grad_(True) * 1, _t_u(), 0.0), ValueError, "requires grad"),
    bad("torch-lo-float64-1e39-tensor", lambda: ops.clamp_(_t_h(), _t_u(), torch.tensor(1e39, dtype=torch.float64)), ValueError, "lo", "float32"),
]


@pytest.mark.parametrize("case", params(BAD))
def test_both_paths_refuse(case, P):
    expect_error(case, P)


@pytest.mark.parametrize("case", params(BAD_NUMPY + BAD_TORCH))
def test_one_path_refuses(case):
    expect_error(case)


@pytest.mark.parametrize("case", params(BAD))
def test_an_error_writes_nothing(case):
    """Whatever a bad call refuses, it refuses before writing a row of ``h``."""
    for name in ("numpy", "torch"):
        P = _path(name)
        h = P.h()
        before = h.copy() if name == "numpy" else h.clone()
        P.h = lambda h=h: h
        try:
            case.call(P)
        except (TypeError, ValueError):
            pass
        assert (np.asarray(h) == np.asarray(before)).all(), f"{name}: h changed"


# ---- edge inputs both paths accept, with the same bits -------------------------------------------


def _result(out):
    """Every array of a result (``h``, or ``(h, stats)``), as NumPy arrays."""
    if isinstance(out, tuple):
        return [a for x in out for a in _result(x)]
    return [np.asarray(out.numpy() if hasattr(out, "numpy") else out)]


GOOD = [
    Good("clamp-open-bounds", lambda P: ops.clamp(P.h(), U(P), -INF, INF), lambda out, P: np.array_equal(np.asarray(out), np.asarray(P.h()))),
    Good("clamp-int-bound", lambda P: ops.clamp_(P.h(), U(P), 0)),
    Good("clamp-np-int64-bound", lambda P: ops.clamp_(P.h(), U(P), np.int64(0), np.int64(1))),
    Good("clamp-np-float32-bound", lambda P: ops.clamp_(P.h(), U(P), np.float32(0.5))),
    Good("clamp-0d-array-bound", lambda P: ops.clamp_(P.h(), U(P), np.array(0.5))),
    Good("clamp-list-rows", lambda P: ops.clamp_(P.h(), U(P), [0.0, 0.6, 5.0])),
    Good("clamp-int-array-rows", lambda P: ops.clamp_(P.h(), U(P), P.a([0, 1, 2], np.int64))),
    Good("clamp-float64-array-rows", lambda P: ops.clamp_(P.h(), U(P), P.a([0.0, 0.5, 1.0], np.float64))),
    Good("clamp-lo-equals-hi", lambda P: ops.clamp_(P.h(), U(P), 0.25, 0.25)),
    Good("clamp-float32-max", lambda P: ops.clamp_(P.h(), U(P), -float(np.finfo(np.float32).max))),
    Good("clamp-u-float64", lambda P: ops.clamp_(P.h(), U(P, np.float64), 0.5)),
    Good("clamp-u-list", lambda P: ops.clamp_(P.h(), E1, 0.5)),
    Good("clamp-stats", lambda P: ops.clamp_(P.h(), U(P), 0.5, return_stats=np.True_)),
    Good("project-mask-int01", lambda P: ops.project(P.h(), U(P), mask=P.a([1, 0, 1], np.int64))),
    Good("project-mask-uint8", lambda P: ops.project(P.h(), U(P), mask=P.a([1, 0, 1], np.uint8))),
    Good("project-mask-list", lambda P: ops.project(P.h(), U(P), mask=[True, False, True])),
    Good("project-mask-scalar", lambda P: ops.project(P.h(), U(P), mask=False)),
    Good("set-np-float64-target", lambda P: ops.set_projection_(P.h(), U(P), np.float64(0.5))),
    Good("steer-int-alpha", lambda P: ops.steer_(P.h(), U(P), 2)),
    Good("steer-zero-alpha", lambda P: ops.steer(P.h(), U(P), 0.0), lambda out, P: np.array_equal(np.asarray(out), np.asarray(P.h()))),
    Good("apply-step-list", lambda P: ops.apply_(P.h(), [["clamp", U(P), 0.5]], record=True)),
    Good("apply-defaults", lambda P: ops.apply_(P.h(), [Step("clamp", U(P)), Step.project(U(P))])),
]


@pytest.mark.parametrize("case", params(GOOD))
def test_both_paths_accept_the_same_bits(case):
    outs = [_result(expect_ok(case, _path(name))) for name in ("numpy", "torch")]
    assert len(outs[0]) == len(outs[1])
    for a, b in zip(*outs):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert np.array_equal(a, b, equal_nan=True), f"{case.id}: the paths disagree"


def test_numpy_threads_none_is_the_default():
    P = _path("numpy")
    assert np.array_equal(ops.clamp(P.h(), U(P), 0.5, threads=None), ops.clamp(P.h(), U(P), 0.5))
