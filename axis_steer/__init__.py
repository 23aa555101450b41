"""axis_steer: monitor, steer and cap a language model's activations along its
Assistant Axis (Lu et al., "The Assistant Axis", 2026).

``import axis_steer`` needs only NumPy; the torch parts load when first used.
The package has four layers, each a subpackage that imports only from the
layers above it in this list:

* :mod:`axis_steer.runtime` - what runs inside a model's forward pass: the
  operations on hidden states (:mod:`~axis_steer.runtime.ops`, over the C/CUDA
  core), their float64 reference, the hooks that cap, steer, ablate and monitor
  a Hugging Face model (:class:`~axis_steer.runtime.hooks.Attachment`), the
  drift readings, decoder-block discovery and the file formats.
* :mod:`axis_steer.pipeline` - computing an axis and measuring interventions,
  one module per step: roles, generate, spans, extract, judge, axis,
  calibrate, project, replies, evaluate; the run folder (``runs``) and batching.
* :mod:`axis_steer.personas` - PersonaLlama, the small chat model the project
  trains itself: its personas (data), its vocabulary judge, its weights and
  the whole job on it (``axis-steer demo``).
* :mod:`axis_steer.apps` - the ``axis-steer`` command and the interactive chat.

The most used names are also reachable from the top: ``axis_steer.Attachment``,
``axis_steer.load_axis``, ``axis_steer.load_caps``, ``axis_steer.load_capping_config``,
``axis_steer.find_layers``, ``axis_steer.describe`` (what axis_steer hooks on a
model). The module paths of releases before the layers
(``axis_steer.hooks``, ``axis_steer.formats``, ``axis_steer.extract``, ...) still
import: each is the same module object as its new home.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from typing import Any

from axis_steer.errors import AxisSteerError

__version__ = "0.1.0"
__all__ = [
    "AxisSteerError",
    "Attachment",
    "describe",
    "find_layers",
    "load_axis",
    "load_caps",
    "load_capping_config",
    "__version__",
]

_SUBPACKAGES = ("runtime", "pipeline", "personas", "apps")

#: Module paths before the layers -> where the module lives now.
MOVED = {
    **{m: f"axis_steer.runtime.{m}" for m in ("ops", "reference", "hooks", "models", "monitor", "formats")},
    **{
        m: f"axis_steer.pipeline.{m}"
        for m in ("roles", "generate", "spans", "extract", "judge", "axis", "calibrate", "project", "evaluate")
    },
    "demo": "axis_steer.personas.demo",
    "cli": "axis_steer.apps.cli",
    "chat": "axis_steer.apps.chat",
}

_TOP = {
    "Attachment": "axis_steer.runtime.hooks",
    "describe": "axis_steer.runtime.models",
    "find_layers": "axis_steer.runtime.models",
    "load_axis": "axis_steer.runtime.formats",
    "load_caps": "axis_steer.runtime.formats",
    "load_capping_config": "axis_steer.runtime.formats",
}


class _MovedModule(importlib.abc.Loader):
    """Loads ``axis_steer.<old>`` as the module at its new path (the same object)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return importlib.import_module(self.target)

    def exec_module(self, module: Any) -> None:
        return None


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        prefix, _, name = fullname.rpartition(".")
        if prefix != __name__ or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedModule(MOVED[name]))


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedFinder())


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"axis_steer.{name}")
    if name in MOVED:
        return importlib.import_module(f"axis_steer.{name}")
    if name in _TOP:
        return getattr(importlib.import_module(_TOP[name]), name)
    raise AttributeError(f"module 'axis_steer' has no attribute {name!r}")
