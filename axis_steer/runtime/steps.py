"""The steps of a fused program: their op codes (those of ``csrc/axis_steer.h``),
the :class:`Step` tuple users write, and the one function that checks a list of
steps and fills in their defaults, shared by the NumPy and torch paths of
:mod:`axis_steer.runtime.ops`, the float64 reference and the hooks.

A step is ``(op, dir, a, b)``:

* ``"project"``: record ``<h, dir>``; ``a``, ``b`` unused.
* ``"clamp"``: ``a`` = lo (default ``-inf``), ``b`` = hi (default ``+inf``).
* ``"set"``: ``a`` = target (required); ``b`` unused.
* ``"steer"``: ``a`` = alpha (required); ``dir`` is any vector ``w``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

from axis_steer.runtime.checks import as_real, check_bounds, show

__all__ = ["CLAMP", "OP_NAMES", "PROJECT", "SET", "SIDES", "STEER", "Step", "normalize_steps"]

PROJECT, CLAMP, SET, STEER = 0, 1, 2, 3
OP_NAMES = {"project": PROJECT, "clamp": CLAMP, "set": SET, "steer": STEER}

#: The sides of a cap: a floor (the paper's cap), a ceiling (the reference code's), a band.
SIDES = ("floor", "ceiling", "band")

INF = math.inf


class Step(NamedTuple):
    """One step of a fused program (see :func:`axis_steer.runtime.ops.apply_`).

    ``op`` is ``"project"``, ``"clamp"`` (``a`` = lo, ``b`` = hi), ``"set"``
    (``a`` = target) or ``"steer"`` (``a`` = alpha; ``dir`` is any vector ``w``).
    """

    op: str
    dir: Any
    a: Any = None
    b: Any = None

    @classmethod
    def project(cls, u: Any) -> Step:
        return cls("project", u)

    @classmethod
    def clamp(cls, u: Any, lo: Any = -INF, hi: Any = INF) -> Step:
        return cls("clamp", u, lo, hi)

    @classmethod
    def set(cls, u: Any, target: Any) -> Step:
        return cls("set", u, target)

    @classmethod
    def steer(cls, w: Any, alpha: Any) -> Step:
        return cls("steer", w, alpha)


def normalize_steps(steps: Sequence[Any]) -> list[tuple[int, Any, Any, Any]]:
    """``[(code, dir, a, b)]`` for ``steps`` (Step objects or 2- to 4-tuples), with
    the defaults filled in (clamp bounds ``-inf`` / ``+inf``, 0 for unused
    parameters) and the parameters checked and converted as
    :func:`~axis_steer.runtime.checks.as_real` does: clamp bounds by
    :func:`~axis_steer.runtime.checks.check_bounds`, a set step's target and a
    steer step's alpha must be given and finite. Errors name ``steps[k]``.
    Directions are checked by the caller, which knows ``d``."""
    if steps is None or isinstance(steps, (str, bytes)) or not hasattr(steps, "__len__"):
        raise TypeError(f"steps = {show(steps)} (expected a list of Step tuples)")
    if len(steps) == 0:
        raise ValueError("steps: empty (expected at least one Step)")
    out = []
    for k, s in enumerate(steps):
        if not isinstance(s, (tuple, list)) or not 2 <= len(s) <= 4:
            raise TypeError(
                f"steps[{k}] = {show(s)} (expected Step(op, dir, a, b): a tuple of 2 to 4 items)"
            )
        s = Step(*s)
        if not isinstance(s.op, str):
            raise TypeError(f"steps[{k}].op = {show(s.op)} (expected an op name, one of {sorted(OP_NAMES)})")
        if s.op not in OP_NAMES:
            raise ValueError(f"steps[{k}].op = {s.op!r} (expected one of {sorted(OP_NAMES)})")
        code = OP_NAMES[s.op]
        if code == CLAMP:
            a, b = check_bounds(-INF if s.a is None else s.a, INF if s.b is None else s.b, f"steps[{k}]")
        elif code in (SET, STEER):
            what = "target" if code == SET else "alpha"
            if s.a is None:
                raise ValueError(f"steps[{k}]: a {s.op!r} step needs its {what} as a (got None)")
            a, b = as_real(s.a, f"steps[{k}].a ({what})", finite=True), 0.0
        else:
            a, b = 0.0, 0.0
        out.append((code, s.dir, a, b))
    return out
