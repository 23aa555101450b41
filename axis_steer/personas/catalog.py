"""The personas of PersonaLlama, axis_steer's own chat model.

PersonaLlama (``axis_steer/personas/data/persona-llama``) was trained from scratch by
``training/train_persona_model.py`` on synthetic conversations in which the system prompt
selects a persona: the default Assistant or one of the role personas. The roles span
assistant-likeness, as the role sets of the Assistant Axis paper do: professional roles that
answer like the Assistant with a professional frame (tutor, analyst, customer support agent,
editor, consultant, research assistant), and character roles from the librarian to the gothic
poet, each of which can also be asked for only a light touch of its style.

The personas are data: ``axis_steer/personas/data/personas.json`` holds every field of every
:class:`Persona` (the Assistant first, then the roles from most assistant-like to most
theatrical), the light-touch prompt templates and the default system prompts. This module
loads that file into :class:`Persona` objects once, at import; the data generator, the judge
(:mod:`axis_steer.personas.judge`) and the demo all read them from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

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
    "get_persona",
    "load_personas",
    "personas_file",
]

#: Name of the default persona.
ASSISTANT = "assistant"


@dataclass(frozen=True)
class Persona:
    """One persona of PersonaLlama.

    Attributes:
        name: identifier, also the role file name (``roles/{name}.json``).
        title: a short noun phrase ("pirate captain"), used in user requests and judge prompts.
        description: one sentence describing the persona's manner, for judge prompts.
        theatricality: how far the persona's style is from the Assistant's. 0: the Assistant.
            1: professional roles (tutor, analyst, ...), which keep the Assistant's content and
            layout and add one or two professional phrases (an opener, a closer or a remark). 2: character roles that keep the numbered list but speak in character
            (librarian, coach). 3: character roles that answer in styled prose. 4: character
            roles that also rewrite the content's words (pirate, bard) or are the most removed
            from the Assistant.
        system_prompts: system prompts selecting the persona. The first five are used in
            training and in the role data; the rest are held out for evaluation.
        markers: lower-case words and phrases typical of the persona (the judge's vocabulary).
        openers, closers, interjections: phrases the persona opens with, ends with and
            sprinkles through an answer.
        frames: templates with one ``{}`` that introduce each point of an answer.
        list_header: for theatricality <= 2, the line that introduces the numbered list.
        substitutions: whole-word replacements applied to the content (``is`` -> ``be``).
        identity: answers to "Who are you?".
        requests: how a user asks the default Assistant to adopt this persona (drift data).
        role_questions: questions specific to the persona (the role files' ``questions``).
    """

    name: str
    title: str
    description: str
    theatricality: int
    system_prompts: tuple[str, ...]
    markers: tuple[str, ...]
    openers: tuple[str, ...]
    closers: tuple[str, ...]
    interjections: tuple[str, ...] = ()
    frames: tuple[str, ...] = ()
    list_header: tuple[str, ...] = ()
    substitutions: dict[str, str] = field(default_factory=dict)
    identity: tuple[str, ...] = ()
    requests: tuple[str, ...] = ()
    role_questions: tuple[str, ...] = ()

    @property
    def train_system_prompts(self) -> tuple[str, ...]:
        """The five system prompts used in training and in the role data."""
        return self.system_prompts[:5]

    @property
    def heldout_system_prompts(self) -> tuple[str, ...]:
        """System prompts never seen in training (evaluation only)."""
        return self.system_prompts[5:]

    @property
    def professional(self) -> bool:
        """A professional role (theatricality 1): the Assistant's answers with a light,
        professional touch (one or two of its phrases). Its full in-role answer is that
        light style."""
        return self.theatricality == 1

    @property
    def light_system_prompts(self) -> tuple[str, ...]:
        """System prompts asking a character role for only a light touch of its style:
        :data:`LIGHT_PROMPT_TEMPLATES` with the persona's title (the first five are trained,
        the sixth is held out). Empty for the Assistant and the professional roles, whose
        style has one intensity."""
        if self.theatricality < 2:
            return ()
        return tuple(t.format(title=self.title) for t in LIGHT_PROMPT_TEMPLATES)



def personas_file() -> Path:
    """The JSON file that defines PersonaLlama's personas."""
    return Path(__file__).resolve().parent / "data" / "personas.json"


def _persona(obj: Any, where: str) -> Persona:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: a {type(obj).__name__} (expected an object with the Persona fields)")
    known = {f.name: f for f in fields(Persona)}
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown fields {unknown} (expected some of {sorted(known)})")
    values = {}
    for name, value in obj.items():
        if name == "substitutions":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ValueError(f"{where}.substitutions: expected an object of strings")
            values[name] = dict(value)
        elif name == "theatricality":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 4:
                raise ValueError(f"{where}.theatricality = {value!r} (expected an integer 0..4)")
            values[name] = value
        elif name in ("name", "title", "description"):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{where}.{name} = {value!r} (expected a non-empty string)")
            values[name] = value
        else:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{where}.{name}: expected a list of strings")
            values[name] = tuple(value)
    try:
        return Persona(**values)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from None


def load_personas(path: str | Path | None = None) -> tuple[str, tuple[str, ...], tuple[str, ...], dict[str, Persona]]:
    """Reads a personas file (default :func:`personas_file`).

    Returns:
        ``(model_name, light_prompt_templates, default_system_prompts, personas)``, the last
        a ``{name: Persona}`` dict in file order, the Assistant (:data:`ASSISTANT`) first.

    Raises:
        ValueError: the file is not valid JSON or a field has the wrong type.
    """
    path = Path(path) if path is not None else personas_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a {type(data).__name__} (expected an object)")
    for key in ("model_name", "light_prompt_templates", "default_system_prompts", "personas"):
        if key not in data:
            raise ValueError(f"{path}: no {key!r} (expected model_name, light_prompt_templates, default_system_prompts, personas)")
    personas: dict[str, Persona] = {}
    for i, obj in enumerate(data["personas"]):
        p = _persona(obj, f"{path}: personas[{i}]")
        if p.name in personas:
            raise ValueError(f"{path}: personas[{i}] repeats the name {p.name!r}")
        personas[p.name] = p
    if next(iter(personas), None) != ASSISTANT:
        raise ValueError(f"{path}: the first persona must be {ASSISTANT!r}")
    return (
        str(data["model_name"]),
        tuple(data["light_prompt_templates"]),
        tuple(data["default_system_prompts"]),
        personas,
    )


_MODEL_NAME, _LIGHT, _DEFAULTS, _PERSONAS = load_personas()

#: The name the model knows itself by; substituted for ``{model_name}`` in system prompts.
MODEL_NAME: str = _MODEL_NAME

#: System prompts that ask a character role for a light touch of its style instead of the
#: full character (:attr:`Persona.light_system_prompts`; ``{title}`` is the persona's title).
#: The first five are used in training, the sixth is held out.
LIGHT_PROMPT_TEMPLATES: tuple[str, ...] = _LIGHT

#: Default-Assistant system prompts. The first five (``""`` meaning no system message) are the
#: role data's ``default.json`` instructions; all are used in training.
DEFAULT_SYSTEM_PROMPTS: tuple[str, ...] = _DEFAULTS

#: All personas by name: the Assistant first, then the roles from most assistant-like to most
#: theatrical.
PERSONAS: dict[str, Persona] = _PERSONAS

#: Names of the role personas (everything but the Assistant), in :data:`PERSONAS` order.
ROLE_PERSONAS: tuple[str, ...] = tuple(n for n in PERSONAS if n != ASSISTANT)

#: The professional roles (theatricality 1), near the Assistant.
PROFESSIONAL_PERSONAS: tuple[str, ...] = tuple(n for n in ROLE_PERSONAS if PERSONAS[n].professional)

#: The character roles (theatricality 2-4): theatrical styles, with light-touch prompts.
CHARACTER_PERSONAS: tuple[str, ...] = tuple(n for n in ROLE_PERSONAS if not PERSONAS[n].professional)


def get_persona(name: str) -> Persona:
    """Return the persona called ``name``.

    Raises:
        ValueError: ``name`` is not one of :data:`PERSONAS`.
    """
    try:
        return PERSONAS[name]
    except KeyError:
        raise ValueError(
            f"persona={name!r} is not a persona of this model; expected one of {sorted(PERSONAS)}"
        ) from None

