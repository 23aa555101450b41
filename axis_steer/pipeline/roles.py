"""Role data: the roles, their system prompts and the extraction questions.

A role set is a folder in the reference layout::

    roles/{role}.json      # {"instruction": [{"pos": system prompt}, ...],   (5 per role)
                           #  "questions": [...role-specific questions...],
                           #  "eval_prompt": "... {question} ... {answer} ..."}  (the judge prompt)
    roles/default.json     # {"instruction": [{"pos": ""}, {"pos": "You are an AI assistant."}, ...]}
    questions.jsonl        # {"question": "...", "id": 0} per line

``""`` as a system prompt means no system message; ``{model_name}`` in a
prompt is replaced by the model's name. The reference code's own layout (role
files in ``data/roles/instructions/``, questions in
``data/extraction_questions.jsonl``) loads too: pass the role folder and, when
the questions file is not next to it, ``questions=``.

Two sets ship with axis_steer: :func:`builtin_roles` (39 roles from
assistant-like professions to fantastical and theatrical characters, 80
questions; for real chat models) and the persona set of axis_steer's own small
model (``axis_steer/personas/data/roles``, see :mod:`axis_steer.personas`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from axis_steer.runtime.checks import as_positive_int

__all__ = [
    "DEFAULT_ROLE",
    "Role",
    "RoleSet",
    "as_role_set",
    "builtin_roles",
    "builtin_roles_dir",
    "load_role_set",
]

#: The name of the neutral (default Assistant) role.
DEFAULT_ROLE = "default"

_QUESTION_FILES = ("questions.jsonl", "extraction_questions.jsonl")


@dataclass(frozen=True)
class Role:
    """One role: its system prompts (``""`` = no system message), its own
    questions (not used to compute the axis) and its judge prompt."""

    name: str
    instructions: tuple[str, ...]
    questions: tuple[str, ...] = ()
    eval_prompt: str | None = None
    source: str = ""

    def judge_prompt(self, question: str, answer: str) -> str:
        """The role's judge prompt with the question and answer filled in."""
        if not self.eval_prompt:
            raise ValueError(f"role {self.name!r} ({self.source}): has no eval_prompt to fill in")
        return self.eval_prompt.replace("{question}", question).replace("{answer}", answer)


@dataclass(frozen=True)
class RoleSet:
    """Roles, the default role and the extraction questions.

    Attributes:
        roles: the character roles by name, sorted (the default role excluded).
        default: the neutral role whose responses give the default vector.
        questions: the extraction questions, in file order; a response's
            ``question_index`` is a position in this list.
        question_ids: the ``id`` of each question as written in the file.
        source: where the set was read from.
    """

    roles: dict[str, Role]
    default: Role
    questions: tuple[str, ...]
    question_ids: tuple[Any, ...] = ()
    source: str = ""

    @property
    def names(self) -> list[str]:
        """Every role name, the default first, then the roles sorted."""
        return [DEFAULT_ROLE, *self.roles]

    def role(self, name: str) -> Role:
        """A role by name (``"default"`` for the default role)."""
        if name == DEFAULT_ROLE:
            return self.default
        if name not in self.roles:
            shown = ", ".join(list(self.roles)[:10]) + (" ..." if len(self.roles) > 10 else "")
            raise ValueError(f"role {name!r} is not in the role set {self.source} (roles: {shown})")
        return self.roles[name]

    def instructions(self, name: str, model_name: str | None = None) -> list[str]:
        """The system prompts of a role with ``{model_name}`` replaced.

        Raises ``ValueError`` if a prompt needs a model name and none is given."""
        out = []
        for i, text in enumerate(self.role(name).instructions):
            if "{model_name}" in text:
                if not model_name:
                    raise ValueError(
                        f"role {name!r} prompt {i} ({text!r}) needs a model name: pass model_name="
                    )
                text = text.replace("{model_name}", model_name)
            out.append(text)
        return out

    def select(
        self,
        roles: Iterable[str] | None = None,
        *,
        n_questions: int | None = None,
        n_prompts: int | None = None,
    ) -> RoleSet:
        """A smaller set: only ``roles`` (the default role is always kept), the
        first ``n_questions`` questions and the first ``n_prompts`` prompts of
        each role. Indices stay those of the full set."""
        chosen = dict(self.roles)
        if isinstance(roles, (str, bytes)):
            raise TypeError(f"roles = {roles!r} is one string (expected a list of role names, e.g. [{roles!r}])")
        if roles is not None:
            names = [r for r in roles if r != DEFAULT_ROLE]
            for r in names:
                self.role(r)
            chosen = {r: self.roles[r] for r in sorted(set(names))}
        if n_questions is not None:
            n_questions = as_positive_int(n_questions, "n_questions")
        if n_prompts is not None:
            n_prompts = as_positive_int(n_prompts, "n_prompts")

        def cut(role: Role) -> Role:
            return replace(role, instructions=role.instructions[:n_prompts]) if n_prompts else role

        qs, ids = self.questions, self.question_ids
        if n_questions is not None:
            qs, ids = qs[:n_questions], ids[:n_questions]
        return RoleSet(
            {k: cut(v) for k, v in chosen.items()}, cut(self.default), qs, ids, self.source
        )

    def __len__(self) -> int:
        return len(self.roles)

    def __str__(self) -> str:
        n_prompts = sorted({len(r.instructions) for r in self.roles.values()})
        return (
            f"RoleSet({len(self.roles)} roles + default, {len(self.questions)} questions, "
            f"{'/'.join(map(str, n_prompts)) or 0} prompts per role, from {self.source or 'memory'})"
        )


# ---- loading ----------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from exc


def _read_role(path: Path, *, default: bool) -> Role:
    obj = _read_json(path)
    if not isinstance(obj, dict):
        raise ValueError(
            f"{path}: a JSON {type(obj).__name__} (expected an object with an 'instruction' list)"
        )
    inst = obj.get("instruction")
    if not isinstance(inst, list) or not inst:
        raise ValueError(
            f"{path}: 'instruction' is {'missing' if inst is None else repr(inst)[:60]} "
            '(expected a non-empty list of {"pos": system prompt})'
        )
    prompts = []
    for i, item in enumerate(inst):
        if not isinstance(item, dict) or not isinstance(item.get("pos"), str):
            raise ValueError(
                f'{path}: instruction[{i}] = {item!r} (expected {{"pos": "a system prompt"}})'
            )
        prompts.append(item["pos"])
    questions = obj.get("questions", [])
    if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
        raise ValueError(f"{path}: 'questions' must be a list of strings")
    ev = obj.get("eval_prompt")
    if ev is not None:
        if not isinstance(ev, str):
            raise ValueError(f"{path}: 'eval_prompt' is a {type(ev).__name__} (expected a string)")
        missing = [p for p in ("{question}", "{answer}") if p not in ev]
        if missing:
            raise ValueError(f"{path}: 'eval_prompt' lacks the placeholder(s) {missing}")
    if not default and not prompts:
        raise ValueError(f"{path}: no system prompts")
    return Role(path.stem, tuple(prompts), tuple(questions), ev, str(path))


def _read_questions(path: Path) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    texts, ids = [], []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("question"), str):
                raise ValueError(
                    f'{path}:{lineno}: expected an object {{"question": "...", "id": ...}}'
                )
            texts.append(obj["question"])
            ids.append(obj.get("id", len(ids)))
    if not texts:
        raise ValueError(f"{path}: no questions")
    return tuple(texts), tuple(ids)


def _find_questions(roles_dir: Path, root: Path) -> Path:
    looked = []
    for folder in dict.fromkeys([root, roles_dir, roles_dir.parent, roles_dir.parent.parent]):
        for name in _QUESTION_FILES:
            p = folder / name
            looked.append(str(p))
            if p.is_file():
                return p
    raise FileNotFoundError(
        f"no questions file for the role set {root} (looked for {', '.join(looked)}); pass questions=PATH"
    )


def load_role_set(path: str | Path, *, questions: str | Path | None = None) -> RoleSet:
    """Reads a role set in the reference layout (see the module docs).

    Args:
        path: the set's folder (holding ``roles/`` and ``questions.jsonl``), or
            the folder of role ``.json`` files itself.
        questions: the questions ``.jsonl``; by default ``questions.jsonl`` or
            ``extraction_questions.jsonl`` next to the roles or one or two
            folders up.

    Raises ``ValueError`` naming the file (and line) for malformed data and
    ``FileNotFoundError`` for missing folders or files.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: no such folder (expected a role set: roles/*.json and questions.jsonl)"
        )
    roles_dir = root / "roles" if (root / "roles").is_dir() else root
    files = sorted(roles_dir.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{roles_dir}: no role .json files")
    default_file = roles_dir / f"{DEFAULT_ROLE}.json"
    if not default_file.is_file():
        raise FileNotFoundError(
            f"{roles_dir}: no {DEFAULT_ROLE}.json (the neutral prompts whose responses give the default vector)"
        )
    default = _read_role(default_file, default=True)
    roles = {f.stem: _read_role(f, default=False) for f in files if f.stem != DEFAULT_ROLE}
    if not roles:
        raise ValueError(f"{roles_dir}: only {DEFAULT_ROLE}.json (expected role files beside it)")
    qpath = Path(questions) if questions is not None else _find_questions(roles_dir, root)
    if not qpath.is_file():
        raise FileNotFoundError(f"{qpath}: no such questions file")
    qs, ids = _read_questions(qpath)
    return RoleSet(roles, default, qs, ids, str(root))


def builtin_roles_dir() -> Path:
    """Folder of the built-in role set (reference layout)."""
    return Path(__file__).resolve().parent / "data" / "roles"


def builtin_roles() -> RoleSet:
    """The built-in role set: 39 roles with 5 system prompts each, from
    assistant-like professions (tutor, librarian, accountant) to fantastical and
    theatrical characters (dragon, ghost, pirate captain, oracle, jester), the
    neutral default prompts, and 80 extraction questions (persona-revealing
    questions, advice and ordinary tasks)."""
    return load_role_set(builtin_roles_dir())


def as_role_set(roles: RoleSet | str | Path | None) -> RoleSet:
    """A :class:`RoleSet` from itself, a folder path, or ``None`` (the built-in set)."""
    if roles is None:
        return builtin_roles()
    if isinstance(roles, RoleSet):
        return roles
    return load_role_set(roles)
