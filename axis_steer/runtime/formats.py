"""Reading and writing axes, vectors and capping configurations.

Two families of files:

* **Reference artefacts** (the paper's released code and vectors), read as they
  are: axis ``.pt`` (a raw ``(n_layers, d)`` tensor or ``{"axis": tensor,
  "metadata": dict}``), role/default/trait vector ``.pt`` (raw, or ``{"vector",
  "type", "role"}``), per-response activations ``.pt`` (``{"pos_p{p}_q{q}":
  (n_layers, d)}``), judge scores ``.json``, responses ``.jsonl`` and capping
  configs ``.pt`` (``{"vectors": {name: {"vector", "layer"}}, "experiments":
  [{"id", "interventions": [{"vector", "cap"}]}]}``). Capping configs can also
  be written, so a calibration made here runs in the reference code.
* **axis_steer's own files**: one ``.safetensors`` file with the tensors and a
  JSON description in its header (model, number of layers, hidden size, side,
  thresholds, units, how it was made). Readable without pickle, diffable with
  ``axis-steer info``.

Loading never runs pickled code: ``.pt`` files are read with
``torch.load(weights_only=True)``. A file that needs more fails with an error
naming ``trust_pickle=True``, the knowing opt-in; a corrupt or truncated file
is reported as such (the opt-in would not help). Every loader checks first
that its path is a regular file (not a directory, a FIFO that would block, a
device or a symbolic-link loop), and then what it read: dtypes, shapes, and
the types of metadata fields, naming the file and the field.

Conventions (see DESIGN): an axis is stored raw (not unit norm), shape
``(n_layers, d)``, pointing toward the Assistant; layer ``i`` is the output of
decoder block ``i``. Thresholds are projections on the *unit* axis, in the
units of the residual stream.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from axis_steer.errors import AxisSteerError
from axis_steer.runtime.checks import (
    as_float_array,
    as_folder,
    as_int,
    check_bounds,
    regular_file,
    show,
    unit_vector,
)

FORMAT_VERSION = 1
_META_KEY = "axis_steer"


def _torch():
    import torch

    return torch


# ---- loading .pt without pickle -------------------------------------------------------


def load_pt(path: str | Path, *, trust_pickle: bool = False) -> Any:
    """``torch.load`` of a reference ``.pt`` file onto the CPU, tensors only.

    With ``trust_pickle=False`` (the default) only tensors, dicts, lists and
    plain values are accepted; a file that needs other Python objects is an
    AxisSteerError naming them and the opt-in, ``trust_pickle=True`` (pass it
    only for files you trust). A corrupt or truncated file (or one declaring
    more data than it holds) is a ValueError that says so."""
    torch = _torch()
    path = regular_file(path, "path")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:  # the unpickler's errors vary by torch version
        text = str(exc)
        needs = None if trust_pickle else _PICKLE_GLOBAL.search(text)
        if needs is not None:
            raise AxisSteerError(
                f"{path}: cannot be read as plain tensors and containers: it needs the Python object "
                f"{needs.group(1)} from pickle. If you trust the file, pass trust_pickle=True to run that "
                "code knowingly."
            ) from exc
        first = text.splitlines()[0] if text else ""
        raise ValueError(
            f"{path}: a corrupt or truncated file, not a readable .pt ({type(exc).__name__}: {first[:200]})"
        ) from exc


# what torch's weights-only unpickler says when a file names a global it will not load
_PICKLE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*) was not")


def _as_matrix(t: Any, path: Path, what: str) -> Any:
    """A float tensor ``(n_layers, d)`` read from ``path``, as float32."""
    torch = _torch()
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{path}: {what} is a {type(t).__name__} (expected a tensor (n_layers, d))")
    if not t.is_floating_point():
        raise ValueError(
            f"{path}: {what} has dtype {str(t.dtype).replace('torch.', '')} (expected a float tensor "
            "(n_layers, d): float32, bfloat16, float16 or float64)"
        )
    if t.dim() != 2 or 0 in t.shape:
        raise ValueError(f"{path}: {what} has shape {tuple(t.shape)} (expected (n_layers, d), neither empty)")
    return t.detach().to(torch.float32).contiguous()


# ---- the axis -------------------------------------------------------------------------


@dataclass
class Axis:
    """An Assistant Axis: raw vectors ``(n_layers, d)`` float32, pointing toward
    the default Assistant, plus a metadata dict (model, how it was made...)."""

    vectors: Any
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        torch = _torch()
        v = as_float_array(self.vectors, "axis", (None, None), narrow=True, expected="shape (n_layers, d)")
        if 0 in v.shape:
            raise ValueError(f"axis: shape {tuple(v.shape)} (expected (n_layers, d) with at least one layer)")
        self.vectors = torch.as_tensor(v).contiguous()
        if not isinstance(self.metadata, dict):
            raise TypeError(f"metadata = {show(self.metadata)} (expected a dict)")

    @property
    def n_layers(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.vectors.shape[1])

    def norms(self) -> Any:
        """``||axis[L]||`` per layer, float32 ``(n_layers,)``."""
        return self.vectors.norm(dim=-1)

    def unit(self, layer: int) -> Any:
        """``axis[layer] / ||axis[layer]||`` as float32 ``(d,)``; raises for a zero
        or non-finite row."""
        n = self.n_layers
        layer = as_int(layer, "layer", min=-n, max=n - 1, expected=f"a layer index 0..{n - 1}: the axis has {n} layers")
        return unit_vector(self.vectors[layer], f"axis[{layer}]", "; was this layer left out when the axis was computed?")

    def save(self, path: str | Path) -> Path:
        """Writes the axis as axis_steer's safetensors file (see :func:`load_axis`)."""
        meta = dict(self.metadata)
        meta.update(kind="axis", n_layers=self.n_layers, hidden_size=self.hidden_size)
        return save_tensors(path, {"axis": self.vectors}, meta)


def load_axis(path: str | Path, *, trust_pickle: bool = False) -> Axis:
    """Reads an axis: axis_steer's ``.safetensors``, or a reference ``.pt`` (a raw
    tensor, or ``{"axis": tensor, "metadata": dict}``). Always float32."""
    path = regular_file(path, "path")
    if path.suffix == ".safetensors":
        tensors, meta = load_tensors(path)
        if "axis" not in tensors:
            raise ValueError(f"{path}: no 'axis' tensor (found {sorted(tensors)}); is this an axis file?")
        return Axis(_as_matrix(tensors["axis"], path, "'axis'"), meta)
    obj = load_pt(path, trust_pickle=trust_pickle)
    if isinstance(obj, dict):
        if "axis" not in obj:
            raise ValueError(f"{path}: a dict without an 'axis' entry (keys: {sorted(map(str, obj))})")
        meta = obj.get("metadata")
        meta = {} if meta is None else meta
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: 'metadata' is a {type(meta).__name__} (expected a dict)")
        return Axis(_as_matrix(obj["axis"], path, "'axis'"), dict(meta, source=str(path)))
    return Axis(_as_matrix(obj, path, "the tensor"), {"source": str(path)})


# ---- vectors, activations, scores, responses ------------------------------------------


@dataclass
class RoleVector:
    """A role, default or trait vector ``(n_layers, d)`` float32 with what the
    reference stored about it (``type`` "pos_3" / "mean", ``role``)."""

    vector: Any
    type: str | None = None
    role: str | None = None


def load_vector(path: str | Path, *, trust_pickle: bool = False) -> RoleVector:
    """Reads a reference role/default/trait vector ``.pt`` (raw or dict)."""
    path = regular_file(path, "path")
    obj = load_pt(path, trust_pickle=trust_pickle)
    if isinstance(obj, dict):
        if "vector" not in obj:
            raise ValueError(f"{path}: a dict without a 'vector' entry (keys: {sorted(map(str, obj))})")
        for key in ("type", "role"):
            if not isinstance(obj.get(key), (str, type(None))):
                raise ValueError(f"{path}: {key!r} = {show(obj[key])} (expected a string)")
        return RoleVector(_as_matrix(obj["vector"], path, "'vector'"), obj.get("type"), obj.get("role"))
    return RoleVector(_as_matrix(obj, path, "the tensor"), None, path.stem)


def load_vectors(folder: str | Path, *, trust_pickle: bool = False) -> dict[str, RoleVector]:
    """Every ``*.pt`` vector in a folder, by file stem."""
    where = as_folder(folder, "folder")
    files = sorted(where.glob("*.pt"))
    if not files:
        raise FileNotFoundError(f"{where}: no .pt vector files")
    return {f.stem: load_vector(f, trust_pickle=trust_pickle) for f in files}


_RESPONSE_KEY = re.compile(r"^pos_p(\d+)_q(\d+)$")


def response_key(prompt_index: int, question_index: int) -> str:
    """The reference's key for one response: ``pos_p{prompt}_q{question}``."""
    return f"pos_p{int(prompt_index)}_q{int(question_index)}"


def parse_response_key(key: str) -> tuple[int, int]:
    m = _RESPONSE_KEY.match(key) if isinstance(key, str) else None
    if not m:
        raise ValueError(f"{key!r} is not a response key (expected 'pos_p<prompt>_q<question>')")
    return int(m.group(1)), int(m.group(2))


def load_activations(path: str | Path, *, trust_pickle: bool = False) -> dict[str, Any]:
    """Per-response activations: ``{"pos_p{p}_q{q}": (n_layers, d)}`` (reference
    ``.pt``, or axis_steer's ``.safetensors`` with the same keys)."""
    path = regular_file(path, "path")
    if path.suffix == ".safetensors":
        tensors, _ = load_tensors(path)
        obj = tensors
    else:
        obj = load_pt(path, trust_pickle=trust_pickle)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: a {type(obj).__name__} (expected a dict of response activations)")
    out: dict[str, Any] = {}
    for key, t in obj.items():
        try:
            parse_response_key(key)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        out[key] = _as_matrix(t, path, repr(key))
        first = next(iter(out.values()))
        if out[key].shape != first.shape:
            raise ValueError(
                f"{path}: {key!r} has shape {tuple(out[key].shape)} but the first response has "
                f"{tuple(first.shape)} (expected one shape (n_layers, d) for all)"
            )
    return out


def save_activations(path: str | Path, acts: dict[str, Any], metadata: dict | None = None) -> Path:
    """Writes per-response activations: ``.pt`` in the reference layout, or
    ``.safetensors`` with the same keys."""
    torch = _torch()
    path = Path(path)
    for key in acts:
        parse_response_key(key)
    if path.suffix == ".safetensors":
        return save_tensors(path, acts, dict(metadata or {}, kind="activations"))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in acts.items()}, path)
    return path


def load_scores(path: str | Path) -> dict[str, int]:
    """Judge scores ``{"pos_p{p}_q{q}": 0..3}`` (3 = fully in role)."""
    path = regular_file(path, "path")
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a {type(data).__name__} (expected an object of scores)")
    out = {}
    for key, v in data.items():
        try:
            parse_response_key(key)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 3:
            raise ValueError(f"{path}: score {key} = {v!r} (expected an integer 0..3)")
        out[key] = v
    return out


def save_scores(path: str | Path, scores: dict[str, int]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(sorted(scores.items())), indent=1))
    return path


RESPONSE_FIELDS = ("system_prompt", "prompt_index", "question_index", "question", "conversation", "label")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, object)`` for each non-blank line of a JSONL file; a
    line that is not JSON is a ValueError naming the file and line."""
    path = regular_file(path, "path")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = _utf8(raw, path, lineno)
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            except RecursionError:
                raise ValueError(f"{path}:{lineno}: JSON nested too deeply") from None


def _utf8(raw: bytes, path: Path, lineno: int | None = None) -> str:
    """``raw`` decoded as UTF-8, or a ValueError naming the file (and line)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"{path}:{lineno}" if lineno is not None else str(path)
        raise ValueError(
            f"{where}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}; expected a UTF-8 JSON file)"
        ) from None


def _read_json(path: Path) -> Any:
    """The JSON value of a UTF-8 file, or a ValueError naming the file and what is wrong."""
    text = _utf8(path.read_bytes(), path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None


def read_responses(path: str | Path) -> Iterator[dict]:
    """Yields the objects of a reference ``responses.jsonl``, checked: each has
    the reference fields and a conversation ending with the assistant."""
    for lineno, obj in iter_jsonl(path):
        missing = [k for k in RESPONSE_FIELDS if not isinstance(obj, dict) or k not in obj]
        if missing:
            raise ValueError(f"{path}:{lineno}: missing {missing} (expected fields {list(RESPONSE_FIELDS)})")
        check_messages(obj["conversation"], f"{path}:{lineno}: 'conversation'", last="assistant")
        yield obj


MESSAGE_ROLES = ("system", "user", "assistant")


def check_messages(conv: Any, where: str, *, last: str | None = None) -> list[dict]:
    """A chat message list: a non-empty list of ``{"role", "content"}`` dicts, each
    role one of :data:`MESSAGE_ROLES` and each content a string; ``last``, when
    given, is the role the list must end with. Raises ValueError starting with
    ``where``."""
    if not isinstance(conv, (list, tuple)) or not conv:
        raise ValueError(f"{where} = {show(conv)} (expected a non-empty list of {{'role', 'content'}} messages)")
    for i, m in enumerate(conv):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"{where}[{i}] = {show(m)} (expected a {{'role', 'content'}} message)")
        if m["role"] not in MESSAGE_ROLES:
            raise ValueError(f"{where}[{i}]: role = {show(m['role'])} (expected one of {list(MESSAGE_ROLES)})")
        if not isinstance(m["content"], str):
            raise ValueError(f"{where}[{i}]: content = {show(m['content'])} (expected a string)")
    if last is not None and conv[-1]["role"] != last:
        raise ValueError(f"{where}: ends with a {conv[-1]['role']!r} message (expected the {last}'s last)")
    return list(conv)


def write_responses(path: str | Path, rows: Iterable[dict], *, append: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w") as f:
        for obj in rows:
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return path


# ---- capping configurations ---------------------------------------------------------


@dataclass
class CapEntry:
    """One cap: at ``layer``, keep ``<h, direction>`` within ``[lo, hi]``
    (``direction`` unit, float32 ``(d,)``; ``-inf``/``inf`` for an open side)."""

    layer: int
    direction: Any
    lo: float = -math.inf
    hi: float = math.inf
    name: str = ""


@dataclass
class CapConfig:
    """An ordered list of caps (several on one layer apply in list order, each
    seeing the previous result) and its metadata (model, side, percentile,
    units, how it was made)."""

    entries: list[CapEntry]
    metadata: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted({e.layer for e in self.entries})

    def save(self, path: str | Path) -> Path:
        """Writes axis_steer's own ``.safetensors`` capping file."""
        torch = _torch()
        if not self.entries:
            raise ValueError("entries: empty (nothing to save)")
        dirs = torch.stack([torch.as_tensor(e.direction, dtype=torch.float32) for e in self.entries])
        meta = dict(self.metadata)
        meta.update(
            kind="caps",
            entries=[
                {"layer": int(e.layer), "lo": _json_float(e.lo), "hi": _json_float(e.hi), "name": e.name}
                for e in self.entries
            ],
            hidden_size=int(dirs.shape[1]),
        )
        return save_tensors(path, {"directions": dirs}, meta)


def _json_float(x: float) -> float | str:
    x = float(x)
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf" if x < 0 else "nan")


_JSON_SPECIALS = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _from_json_float(x: Any, where: str) -> float:
    """A float written by :func:`_json_float`: a JSON number, or "inf" / "-inf" / "nan"."""
    if isinstance(x, str) and x in _JSON_SPECIALS:
        return _JSON_SPECIALS[x]
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"{where} = {show(x)} (expected a number, or 'inf' / '-inf')")
    return float(x)


def load_caps(path: str | Path) -> CapConfig:
    """Reads axis_steer's own capping file (``CapConfig.save``), checked: one
    entry ``{"layer": int >= 0, "lo", "hi", "name"}`` per row of a float
    ``(n_entries, d)`` ``directions`` tensor of finite values, and bounds that
    :func:`~axis_steer.runtime.checks.check_bounds` accepts."""
    torch = _torch()
    tensors, meta = load_tensors(path)
    path = Path(path)
    if meta.get("kind") != "caps" or "directions" not in tensors:
        raise ValueError(f"{path}: not an axis_steer capping file (kind={meta.get('kind')!r})")
    dirs = tensors["directions"]
    if not dirs.is_floating_point() or dirs.dim() != 2 or 0 in dirs.shape:
        raise ValueError(
            f"{path}: 'directions' has dtype {str(dirs.dtype).replace('torch.', '')} and shape "
            f"{tuple(dirs.shape)} (expected a float tensor (n_entries, d))"
        )
    dirs = dirs.float()
    if not torch.isfinite(dirs).all():
        raise ValueError(f"{path}: 'directions' holds NaN or infinite values (expected finite vectors)")
    rows = meta.get("entries")
    if not isinstance(rows, list):
        raise ValueError(f"{path}: metadata 'entries' = {show(rows)} (expected a list of caps)")
    if len(rows) != dirs.shape[0]:
        raise ValueError(f"{path}: {len(rows)} entries for {dirs.shape[0]} directions (expected one entry per direction)")
    entries = []
    for i, r in enumerate(rows):
        where = f"{path}: entries[{i}]"
        if not isinstance(r, dict) or not {"layer", "lo", "hi"} <= set(r):
            raise ValueError(f"{where} = {show(r)} (expected {{'layer', 'lo', 'hi', 'name'}})")
        try:
            layer = as_int(r["layer"], f"{where}.layer", min=0)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        lo, hi = check_bounds(_from_json_float(r["lo"], f"{where}.lo"), _from_json_float(r["hi"], f"{where}.hi"), where)
        name = r.get("name", "")
        if not isinstance(name, str):
            raise ValueError(f"{where}.name = {show(name)} (expected a string)")
        entries.append(CapEntry(layer, dirs[i], lo, hi, name))
    meta = {k: v for k, v in meta.items() if k != "entries"}
    return CapConfig(entries, meta)


def experiment_id(start: int, stop: int, percentile: float) -> str:
    """The reference's experiment id: ``layers_{a}:{b}-p{q}`` for the half-open
    layer range ``[a, b)`` and percentile ``q``."""
    return f"layers_{int(start)}:{int(stop)}-p{percentile:g}"


@dataclass
class ReferenceCappingConfig:
    """A reference ``capping_config.pt``: named vectors with their layer, and
    experiments listing ``(vector name, cap)`` interventions.

    Reference semantics, reproduced exactly by :meth:`experiment`: each
    intervention is a *ceiling* at ``cap`` on the normalised stored vector
    ``v̂`` — ``h <- h - v̂ max(<h, v̂> - cap, 0)`` — at every token, several on
    one layer in list order. The released configs store ``v = -axis[L]`` with
    negative caps, which is a floor at ``-cap`` on the +axis."""

    vectors: dict[str, tuple[Any, int]]
    experiments: list[dict]
    source: str = ""

    def experiment_ids(self) -> list[str]:
        return [str(e.get("id", i)) for i, e in enumerate(self.experiments)]

    def experiment(self, which: str | int) -> CapConfig:
        """The caps of one experiment, by id (a string) or list index (an
        integer, NumPy's included). Interventions without a ``"cap"`` are not
        capping and are skipped (their names are listed in the metadata)."""
        if not isinstance(self.experiments, list):
            raise ValueError(
                f"experiments: a {type(self.experiments).__name__} (expected a list of {{'id', 'interventions'}} dicts)"
            )
        if isinstance(which, numbers.Integral) and not isinstance(which, bool):
            which = int(which)
            if not -len(self.experiments) <= which < len(self.experiments):
                raise ValueError(
                    f"experiment index {which} is out of range ({len(self.experiments)} experiments)"
                )
            exp = self.experiments[which]
        elif isinstance(which, str):
            found = [e for e in self.experiments if isinstance(e, dict) and e.get("id") == which]
            if not found:
                ids = self.experiment_ids()
                shown = ", ".join(ids[:12]) + (" ..." if len(ids) > 12 else "")
                raise ValueError(f"experiment {which!r} not found (ids: {shown})")
            exp = found[0]
        else:
            raise ValueError(f"experiment: {which!r} (expected an id string or a list index)")
        where = f"experiment {exp.get('id')!r}" if isinstance(exp, dict) else f"experiment {which!r}"
        interventions = exp.get("interventions", []) if isinstance(exp, dict) else None
        if not isinstance(interventions, list):
            raise ValueError(
                f"{where}: 'interventions' is a {type(interventions).__name__} (expected a list of "
                "{'vector': name, 'cap': number} dicts)"
            )
        entries, skipped = [], []
        for j, iv in enumerate(interventions):
            if not isinstance(iv, dict):
                raise ValueError(f"{where} intervention {j}: a {type(iv).__name__} (expected a {{'vector', 'cap'}} dict)")
            name = iv.get("vector")
            if not isinstance(name, str) or name not in self.vectors:
                raise ValueError(f"{where} intervention {j}: unknown vector {name!r}")
            if "cap" not in iv or iv["cap"] is None:
                skipped.append(name)
                continue
            vec, layer = self.vectors[name]
            cap = _reference_number(iv["cap"], f"{where} intervention {j} ('cap')")
            layer = _reference_layer(layer, f"vectors[{name!r}]['layer']")
            entries.append(CapEntry(layer, unit_vector(vec, f"vector {name!r}"), -math.inf, cap, name))
        meta = {
            "kind": "caps",
            "side": "ceiling",
            "semantics": "reference: ceiling at cap on each normalised stored vector, in list order",
            "experiment": exp.get("id"),
            "skipped_without_cap": skipped,
            "source": self.source,
        }
        return CapConfig(entries, meta)

    def save(self, path: str | Path) -> Path:
        torch = _torch()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        obj = {
            "vectors": {n: {"vector": v.detach().cpu(), "layer": int(layer)} for n, (v, layer) in self.vectors.items()},
            "experiments": self.experiments,
        }
        torch.save(obj, path)
        return path


def _reference_layer(value: Any, what: str) -> int:
    """A layer index of a reference config: an integer (never a float, a string or a bool)."""
    torch = _torch()
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point() and value.dtype != torch.bool:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{what} = {value!r}: expected an integer layer index")
    return int(value)


def _reference_number(value: Any, what: str) -> float:
    """A cap of a reference config: a real number, not NaN (never a string or a bool)."""
    torch = _torch()
    if isinstance(value, torch.Tensor) and value.dim() == 0 and value.dtype != torch.bool:
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} = {value!r}: expected a number")
    if math.isnan(float(value)):
        raise ValueError(f"{what} is NaN: expected a number")
    return float(value)


def load_capping_config(path: str | Path, *, trust_pickle: bool = False) -> ReferenceCappingConfig:
    """Reads a reference ``capping_config.pt`` (see :class:`ReferenceCappingConfig`),
    checking its structure: a malformed field is an error that names it."""
    torch = _torch()
    path = Path(path)
    obj = load_pt(path, trust_pickle=trust_pickle)
    if not isinstance(obj, dict) or "vectors" not in obj or "experiments" not in obj:
        raise ValueError(f"{path}: expected a dict with 'vectors' and 'experiments' (a reference capping config)")
    if not isinstance(obj["vectors"], dict):
        raise ValueError(
            f"{path}: 'vectors' is a {type(obj['vectors']).__name__} (expected a dict "
            "{name: {'vector': tensor (d,), 'layer': int}})"
        )
    vectors = {}
    for name, spec in obj["vectors"].items():
        if not isinstance(spec, dict) or "vector" not in spec or "layer" not in spec:
            raise ValueError(f"{path}: vectors[{name!r}] needs 'vector' and 'layer'")
        v = spec["vector"]
        if not isinstance(v, torch.Tensor) or v.dim() != 1:
            raise ValueError(f"{path}: vectors[{name!r}]['vector'] must be a 1-D tensor (d,)")
        layer = _reference_layer(spec["layer"], f"{path}: vectors[{name!r}]['layer']")
        vectors[str(name)] = (v.detach().to(torch.float32), layer)
    if not isinstance(obj["experiments"], list):
        raise ValueError(
            f"{path}: 'experiments' is a {type(obj['experiments']).__name__} (expected a list of "
            "{'id': str, 'interventions': [...]} dicts)"
        )
    experiments = list(obj["experiments"])
    for i, e in enumerate(experiments):
        if not isinstance(e, dict) or "interventions" not in e:
            raise ValueError(f"{path}: experiments[{i}] needs an 'interventions' list")
        ivs = e["interventions"]
        if not isinstance(ivs, list):
            raise ValueError(
                f"{path}: experiments[{i}]['interventions'] is a {type(ivs).__name__} (expected a list of "
                "{'vector': name, 'cap': number} dicts)"
            )
        for j, iv in enumerate(ivs):
            where = f"{path}: experiments[{i}]['interventions'][{j}]"
            if not isinstance(iv, dict):
                raise ValueError(f"{where} is a {type(iv).__name__} (expected a {{'vector', 'cap'}} dict)")
            if iv.get("vector") not in vectors:
                raise ValueError(f"{where}: unknown vector {iv.get('vector')!r}")
            if iv.get("cap") is not None:
                _reference_number(iv["cap"], f"{where}['cap']")
    return ReferenceCappingConfig(vectors, experiments, str(path))


def reference_config_from_thresholds(
    axis: Axis,
    thresholds: dict[float, Sequence[float]],
    windows: Sequence[tuple[int, int]],
) -> ReferenceCappingConfig:
    """Builds a reference-format capping config from per-layer floors on the
    +axis: for each percentile ``q`` (thresholds[q][L] = floor at layer L) and
    each layer window ``[a, b)``, an experiment ``layers_{a}:{b}-p{q}`` whose
    interventions are ceilings at ``-floor`` on ``v = -axis[L]`` — the
    reference's own encoding, which its code applies as a floor at ``floor``."""
    vectors = {f"axis_neg_layer_{layer}": (-axis.vectors[layer], layer) for layer in range(axis.n_layers)}
    experiments = []
    for q, per_layer in thresholds.items():
        for a, b in windows:
            if not 0 <= a < b <= axis.n_layers:
                raise ValueError(f"window [{a}, {b}) is outside the axis's {axis.n_layers} layers")
            experiments.append(
                {
                    "id": experiment_id(a, b, q),
                    "interventions": [
                        {"vector": f"axis_neg_layer_{layer}", "cap": -float(per_layer[layer])} for layer in range(a, b)
                    ],
                }
            )
    return ReferenceCappingConfig(vectors, experiments)


# ---- safetensors with a JSON header -------------------------------------------------------


def save_tensors(path: str | Path, tensors: dict[str, Any], metadata: dict) -> Path:
    """Writes tensors to ``.safetensors`` with ``metadata`` as JSON in the header."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: axis_steer files end in .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(metadata, format_version=FORMAT_VERSION)
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
        str(path),
        metadata={_META_KEY: json.dumps(meta, default=str)},
    )
    return path


def finite_or_none(obj: Any) -> Any:
    """``obj`` ready for JSON, which has no NaN: non-finite floats anywhere in nested
    dicts, lists and tuples become ``None`` (tuples become lists)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def load_tensors(path: str | Path) -> tuple[dict[str, Any], dict]:
    """Reads a ``.safetensors`` file: (tensors on the CPU, axis_steer metadata)."""
    from safetensors import safe_open

    path = regular_file(path, "path")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ValueError(f"{path}: a corrupt or truncated file, not a readable safetensors file ({exc})") from exc
    return tensors, _header_meta(raw, path)


def _header_meta(raw: dict, path: Path) -> dict:
    """axis_steer's JSON description from a safetensors header: a JSON object."""
    if _META_KEY not in raw:
        return {}
    try:
        meta = json.loads(raw[_META_KEY])
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: the {_META_KEY!r} metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(
            f"{path}: the {_META_KEY!r} metadata is a JSON {type(meta).__name__} (expected a JSON object)"
        )
    return meta


class Fields:
    """Typed reads of the metadata of an axis_steer file, each error a ValueError
    naming the file and the field: ``Fields(meta, path).ints("layers")``."""

    _MISSING = object()

    def __init__(self, meta: dict, path: str | Path) -> None:
        self.meta, self.path = meta, Path(path)

    def _get(self, key: str, default: Any) -> Any:
        if key in self.meta:
            return self.meta[key]
        if default is Fields._MISSING:
            raise ValueError(f"{self.path}: metadata has no {key!r} (expected it in an axis_steer file of this kind)")
        return default

    def _int(self, v: Any, what: str, min: int | None) -> int:
        try:
            return as_int(v, what, min=min)
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    def int(self, key: str, *, min: int | None = 0, default: Any = _MISSING) -> int:
        return self._int(self._get(key, default), f"{self.path}: metadata {key!r}", min)

    def ints(self, key: str, *, min: int | None = 0, n: int | None = None, default: Any = _MISSING) -> list[int]:
        v = self._list(key, n, default)
        return [self._int(x, f"{self.path}: metadata {key}[{i}]", min) for i, x in enumerate(v)]

    def strs(self, key: str, *, n: int | None = None, default: Any = _MISSING) -> list[str]:
        v = self._list(key, n, default)
        for i, x in enumerate(v):
            if not isinstance(x, str):
                raise ValueError(f"{self.path}: metadata {key}[{i}] = {show(x)} (expected a string)")
        return list(v)

    def counts(self, key: str, *, default: Any = _MISSING) -> dict[str, int]:
        v = self._get(key, default)
        if not isinstance(v, dict):
            raise ValueError(f"{self.path}: metadata {key!r} = {show(v)} (expected an object of counts)")
        return {str(k): self._int(x, f"{self.path}: metadata {key}[{k!r}]", 0) for k, x in v.items()}

    def _list(self, key: str, n: int | None, default: Any) -> list:
        v = self._get(key, default)
        if not isinstance(v, list):
            raise ValueError(f"{self.path}: metadata {key!r} = {show(v)} (expected a list)")
        if n is not None and len(v) != n:
            raise ValueError(f"{self.path}: metadata {key!r} has {len(v)} items for {n} rows of data (expected {n})")
        return v


def tensor_of(tensors: dict, key: str, path: str | Path, shape: tuple) -> Any:
    """``tensors[key]`` as float32, checked to be a float tensor of ``shape``
    (``None`` for a free size); a ValueError naming the file otherwise."""
    t = tensors.get(key)
    torch = _torch()
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{path}: no {key!r} tensor (found {sorted(tensors)})")
    bad_shape = t.dim() != len(shape) or any(n is not None and g != n for g, n in zip(t.shape, shape))
    if not t.is_floating_point() or bad_shape:
        want = "(" + ", ".join("*" if n is None else str(n) for n in shape) + ")"
        raise ValueError(
            f"{path}: {key!r} has dtype {str(t.dtype).replace('torch.', '')} and shape {tuple(t.shape)} "
            f"(expected a float tensor of shape {want})"
        )
    return t.float()


def kind_path(path: str | Path, in_folder: str) -> Path:
    """The file :func:`load_kind` reads: ``path``, or ``path / in_folder`` for a run folder."""
    path = Path(path)
    return path / in_folder if path.is_dir() else path


def load_kind(path: str | Path, kind: str, what: str, in_folder: str) -> tuple[dict[str, Any], dict]:
    """Reads an axis_steer file of one ``kind`` (its metadata's ``"kind"``): ``path`` is
    the file, or a run folder holding it at ``in_folder``. Another kind is a ValueError
    that says the file is not ``what``."""
    path = kind_path(path, in_folder)
    tensors, meta = load_tensors(path)
    if meta.get("kind") != kind:
        raise ValueError(f"{path}: not {what} (kind={meta.get('kind')!r})")
    return tensors, meta


def read_metadata(path: str | Path) -> dict:
    """The JSON description of an axis_steer file, without loading tensors."""
    from safetensors import safe_open

    path = regular_file(path, "path")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:
        raise ValueError(f"{path}: a corrupt or truncated file, not a readable safetensors file ({exc})") from exc
    meta = _header_meta(raw, path)
    meta["tensors"] = shapes
    return meta
