"""The axis pipeline: from a model and role prompts to an axis, calibrated caps and
a measured capability cost, one module per step.

:mod:`~axis_steer.pipeline.roles` (role data), :mod:`~axis_steer.pipeline.generate`
(responses), :mod:`~axis_steer.pipeline.judge` (role-adherence scores),
:mod:`~axis_steer.pipeline.spans` (which tokens are the response),
:mod:`~axis_steer.pipeline.extract` (mean activations), :mod:`~axis_steer.pipeline.axis`
(role vectors, the axis, persona space), :mod:`~axis_steer.pipeline.calibrate` (caps),
:mod:`~axis_steer.pipeline.project` (projections of conversations),
:mod:`~axis_steer.pipeline.replies` (greedy replies and scripted conversations) and
:mod:`~axis_steer.pipeline.evaluate` (what an intervention costs). The run folder's
layout is :mod:`~axis_steer.pipeline.runs`; padding a batch is
:mod:`~axis_steer.pipeline.batching`.

Builds on :mod:`axis_steer.runtime`; imports nothing from :mod:`axis_steer.personas`
or :mod:`axis_steer.apps`.
"""
