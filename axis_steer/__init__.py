"""axis_steer: monitor, steer and cap a language model's activations along its
Assistant Axis (Lu et al., "The Assistant Axis", 2026).

``import axis_steer`` needs only NumPy; the torch parts load when first used.
The modules, by what they are for:

* :mod:`axis_steer.ops` - project, clamp (capping), set projection / ablate,
  steer, fused programs; on NumPy arrays and torch tensors.
* :mod:`axis_steer.reference` - float64 versions of every operation.
* :mod:`axis_steer.hooks` - capping, steering, ablation and monitoring on a
  Hugging Face model (:class:`~axis_steer.hooks.Attachment`).
* :mod:`axis_steer.monitor` - drift readings, per-turn means, plots.
* :mod:`axis_steer.models` - finding a model's decoder blocks.
* :mod:`axis_steer.formats` - reference artefacts and axis_steer's own files.
* The axis pipeline, one module per step: :mod:`~axis_steer.roles`,
  :mod:`~axis_steer.generate`, :mod:`~axis_steer.spans`, :mod:`~axis_steer.extract`,
  :mod:`~axis_steer.judge`, :mod:`~axis_steer.axis`, :mod:`~axis_steer.calibrate`,
  then :mod:`~axis_steer.project` and :mod:`~axis_steer.chat`.
* :mod:`axis_steer.evaluate` - what an intervention costs in capability.
* :mod:`axis_steer.personas` - the built-in persona model and its judge.
* :mod:`axis_steer.cli` - the ``axis-steer`` command.
"""

from __future__ import annotations

import importlib
from typing import Any

from axis_steer.errors import AxisSteerError

__version__ = "0.1.0"
__all__ = ["AxisSteerError", "__version__"]

_LAZY = {
    "ops",
    "reference",
    "hooks",
    "monitor",
    "models",
    "formats",
    "roles",
    "generate",
    "spans",
    "extract",
    "judge",
    "axis",
    "calibrate",
    "project",
    "chat",
    "evaluate",
    "personas",
    "cli",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"axis_steer.{name}")
    raise AttributeError(f"module 'axis_steer' has no attribute {name!r}")
