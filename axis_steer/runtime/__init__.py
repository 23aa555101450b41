"""The runtime: what runs inside a model's forward pass.

* :mod:`~axis_steer.runtime.ops` - project, clamp (capping), set projection /
  ablate, steer and fused programs of them, on NumPy arrays and torch tensors,
  over the C/CUDA core (``csrc/axis_steer.h``); :mod:`~axis_steer.runtime.steps`
  defines the steps and op codes they share.
* :mod:`~axis_steer.runtime.reference` - float64 versions of every operation
  (the tests' oracle, and a readable statement of the rules).
* :mod:`~axis_steer.runtime.hooks` - capping, steering, ablation and monitoring
  on a Hugging Face model (:class:`~axis_steer.runtime.hooks.Attachment`).
* :mod:`~axis_steer.runtime.monitor` - the monitor's device buffers and the
  drift readings they give (per token, per turn, plots).
* :mod:`~axis_steer.runtime.masks` - which tokens are real: padding read from
  2-D, 4-D and dicts of attention masks.
* :mod:`~axis_steer.runtime.models` - finding a model's blocks (which stack,
  which layouts are refused) and describing what was found.
* :mod:`~axis_steer.runtime.formats` - reference artefacts and axis_steer's own files.

Nothing here imports from :mod:`axis_steer.pipeline`, :mod:`axis_steer.personas`
or :mod:`axis_steer.apps` (tests/test_layers.py checks it).
"""
