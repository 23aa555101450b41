"""PersonaLlama, the small chat model axis_steer ships and trains itself: its personas
(:mod:`~axis_steer.personas.catalog`, loaded from ``data/personas.json``), the vocabulary
judge for them (:mod:`~axis_steer.personas.judge`), the committed weights and data
(:mod:`~axis_steer.personas.model`) and the whole job on it (:mod:`~axis_steer.personas.demo`,
``axis-steer demo``). Imports without torch; the demo and model loading import it when used.
"""

from axis_steer.personas import catalog, judge, model
from axis_steer.personas.catalog import *  # noqa: F403  (the personas)
from axis_steer.personas.judge import *  # noqa: F403  (the vocabulary judge)
from axis_steer.personas.model import *  # noqa: F403  (the weights and data)

__all__ = [*catalog.__all__, *judge.__all__, *model.__all__]
