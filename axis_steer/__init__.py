"""axis_steer: monitor, steer and cap a language model's activations along its
Assistant Axis (Lu et al., "The Assistant Axis", 2026).

``import axis_steer`` needs only NumPy; the torch parts load when first used.
The modules, by what they are for:

* :mod:`axis_steer.ops` - project, clamp (capping), set projection / ablate,
  steer, fused programs; on NumPy arrays and torch tensors.
* :mod:`axis_steer.reference` - float64 versions of every operation.
"""

from __future__ import annotations

import importlib
from typing import Any

from axis_steer.errors import AxisSteerError

__version__ = "0.1.0"
__all__ = ["AxisSteerError", "__version__"]

_LAZY = {"ops", "reference"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"axis_steer.{name}")
    raise AttributeError(f"module 'axis_steer' has no attribute {name!r}")
