"""PersonaLlama, the small chat model axis_steer ships and trains itself: its personas
(:mod:`~axis_steer.personas.catalog`, loaded from ``data/personas.json``), the vocabulary
judge for them (:mod:`~axis_steer.personas.judge`), the committed weights and data
(:mod:`~axis_steer.personas.model`) and the whole job on it (:mod:`~axis_steer.personas.demo`,
``axis-steer demo``). Imports without torch; the demo and model loading import it when used.
"""

from axis_steer.personas.catalog import (
    ASSISTANT,
    CHARACTER_PERSONAS,
    DEFAULT_SYSTEM_PROMPTS,
    LIGHT_PROMPT_TEMPLATES,
    MODEL_NAME,
    PERSONAS,
    PROFESSIONAL_PERSONAS,
    ROLE_PERSONAS,
    Persona,
    get_persona,
    load_personas,
    personas_file,
)
from axis_steer.personas.judge import (
    detect_persona,
    marker_hits,
    role_style_rate,
    style_intensity,
    style_judge,
    style_score,
)
from axis_steer.personas.model import (
    default_model_path,
    eval_data_dir,
    load_persona_model,
    role_data_dir,
)

__all__ = [
    "ASSISTANT",
    "CHARACTER_PERSONAS",
    "DEFAULT_SYSTEM_PROMPTS",
    "LIGHT_PROMPT_TEMPLATES",
    "MODEL_NAME",
    "PERSONAS",
    "PROFESSIONAL_PERSONAS",
    "ROLE_PERSONAS",
    "Persona",
    "default_model_path",
    "detect_persona",
    "eval_data_dir",
    "get_persona",
    "load_persona_model",
    "load_personas",
    "marker_hits",
    "personas_file",
    "role_data_dir",
    "role_style_rate",
    "style_intensity",
    "style_judge",
    "style_score",
]
