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

from axis_steer.runtime.checks import check_bounds

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
    parameters) and scalar bounds checked. Raises ValueError naming
    ``steps[k]`` for an unknown op, a missing target or alpha, or a bad bound."""
    if steps is None or isinstance(steps, (str, bytes)) or not hasattr(steps, "__len__"):
        raise TypeError(f"steps: {type(steps).__name__} (expected a list of Step tuples)")
    if len(steps) == 0:
        raise ValueError("steps: empty (expected at least one Step)")
    out = []
    for k, s in enumerate(steps):
        if not isinstance(s, (tuple, list)) or not 2 <= len(s) <= 4:
            raise TypeError(
                f"steps[{k}]: {s!r} (expected Step(op, dir, a, b): a tuple of 2 to 4 items)"
            )
        s = Step(*s)
        if not isinstance(s.op, str) or s.op not in OP_NAMES:
            raise ValueError(f"steps[{k}].op = {s.op!r} (expected one of {sorted(OP_NAMES)})")
        code = OP_NAMES[s.op]
        if code == CLAMP:
            a = -INF if s.a is None else s.a
            b = INF if s.b is None else s.b
            check_bounds(a, b, f"steps[{k}]")
        elif code in (SET, STEER):
            if s.a is None:
                what = "target" if code == SET else "alpha"
                raise ValueError(f"steps[{k}]: a {s.op!r} step needs its {what} as a (got None)")
            a, b = s.a, 0.0
        else:
            a, b = 0.0, 0.0
        out.append((code, s.dir, a, b))
    return out
