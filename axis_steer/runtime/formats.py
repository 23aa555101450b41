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
naming ``trust_pickle=True``, the knowing opt-in.

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
from axis_steer.runtime.checks import unit_vector

FORMAT_VERSION = 1
_META_KEY = "axis_steer"


def _torch():
    import torch

    return torch


# ---- loading .pt without pickle -------------------------------------------------------


def load_pt(path: str | Path, *, trust_pickle: bool = False) -> Any:
    """``torch.load`` of a reference ``.pt`` file onto the CPU, tensors only.

    With ``trust_pickle=False`` (the default) only tensors, dicts, lists and
    plain values are accepted; anything else is an error rather than code run
    from the file. Pass ``trust_pickle=True`` only for files you trust."""
    torch = _torch()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:  # the unpickler's errors vary by torch version
        if trust_pickle:
            raise
        raise AxisSteerError(
            f"{path}: cannot be read as plain tensors and containers ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). It needs Python objects from pickle; "
            "if you trust the file, pass trust_pickle=True to run that code knowingly."
        ) from exc


def _as_matrix(t: Any, path: Path, what: str) -> Any:
    torch = _torch()
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{path}: {what} is a {type(t).__name__} (expected a tensor (n_layers, d))")
    if t.dim() != 2:
        raise ValueError(f"{path}: {what} has shape {tuple(t.shape)} (expected (n_layers, d))")
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
        v = torch.as_tensor(self.vectors)
        if v.dim() != 2:
            raise ValueError(f"vectors: shape {tuple(v.shape)} (expected (n_layers, d))")
        self.vectors = v.detach().to(torch.float32).contiguous()

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
        if not -self.n_layers <= layer < self.n_layers:
            raise ValueError(f"layer {layer} is out of range (the axis has {self.n_layers} layers)")
        return unit_vector(self.vectors[layer], f"axis[{layer}]", "; was this layer left out when the axis was computed?")

    def save(self, path: str | Path) -> Path:
        """Writes the axis as axis_steer's safetensors file (see :func:`load_axis`)."""
        meta = dict(self.metadata)
        meta.update(kind="axis", n_layers=self.n_layers, hidden_size=self.hidden_size)
        return save_tensors(path, {"axis": self.vectors}, meta)


def load_axis(path: str | Path, *, trust_pickle: bool = False) -> Axis:
    """Reads an axis: axis_steer's ``.safetensors``, or a reference ``.pt`` (a raw
    tensor, or ``{"axis": tensor, "metadata": dict}``). Always float32."""
    path = Path(path)
    if path.suffix == ".safetensors":
        tensors, meta = load_tensors(path)
        if "axis" not in tensors:
            raise ValueError(f"{path}: no 'axis' tensor (found {sorted(tensors)}); is this an axis file?")
        return Axis(_as_matrix(tensors["axis"], path, "'axis'"), meta)
    obj = load_pt(path, trust_pickle=trust_pickle)
    if isinstance(obj, dict):
        if "axis" not in obj:
            raise ValueError(f"{path}: a dict without an 'axis' entry (keys: {sorted(map(str, obj))})")
        meta = obj.get("metadata") or {}
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
    path = Path(path)
    obj = load_pt(path, trust_pickle=trust_pickle)
    if isinstance(obj, dict):
        if "vector" not in obj:
            raise ValueError(f"{path}: a dict without a 'vector' entry (keys: {sorted(map(str, obj))})")
        return RoleVector(_as_matrix(obj["vector"], path, "'vector'"), obj.get("type"), obj.get("role"))
    return RoleVector(_as_matrix(obj, path, "the tensor"), None, path.stem)


def load_vectors(folder: str | Path, *, trust_pickle: bool = False) -> dict[str, RoleVector]:
    """Every ``*.pt`` vector in a folder, by file stem."""
    folder = Path(folder)
    files = sorted(folder.glob("*.pt"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .pt vector files")
    return {f.stem: load_vector(f, trust_pickle=trust_pickle) for f in files}


_RESPONSE_KEY = re.compile(r"^pos_p(\d+)_q(\d+)$")


def response_key(prompt_index: int, question_index: int) -> str:
    """The reference's key for one response: ``pos_p{prompt}_q{question}``."""
    return f"pos_p{int(prompt_index)}_q{int(question_index)}"


def parse_response_key(key: str) -> tuple[int, int]:
    m = _RESPONSE_KEY.match(key)
    if not m:
        raise ValueError(f"{key!r} is not a response key (expected 'pos_p<prompt>_q<question>')")
    return int(m.group(1)), int(m.group(2))


def load_activations(path: str | Path, *, trust_pickle: bool = False) -> dict[str, Any]:
    """Per-response activations: ``{"pos_p{p}_q{q}": (n_layers, d)}`` (reference
    ``.pt``, or axis_steer's ``.safetensors`` with the same keys)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        tensors, _ = load_tensors(path)
        obj = tensors
    else:
        obj = load_pt(path, trust_pickle=trust_pickle)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: a {type(obj).__name__} (expected a dict of response activations)")
    out = {}
    for key, t in obj.items():
        parse_response_key(str(key))
        out[str(key)] = _as_matrix(t, path, repr(key))
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
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a {type(data).__name__} (expected an object of scores)")
    out = {}
    for key, v in data.items():
        parse_response_key(key)
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
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc


def read_responses(path: str | Path) -> Iterator[dict]:
    """Yields the objects of a reference ``responses.jsonl``, checked: each has
    the reference fields and a conversation ending with the assistant."""
    for lineno, obj in iter_jsonl(path):
        missing = [k for k in RESPONSE_FIELDS if not isinstance(obj, dict) or k not in obj]
        if missing:
            raise ValueError(f"{path}:{lineno}: missing {missing} (expected fields {list(RESPONSE_FIELDS)})")
        conv = obj["conversation"]
        if not isinstance(conv, list) or not conv or conv[-1].get("role") != "assistant":
            raise ValueError(f"{path}:{lineno}: 'conversation' must be a list of messages ending with the assistant's")
        yield obj


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


def _from_json_float(x: Any) -> float:
    return float(x)


def load_caps(path: str | Path) -> CapConfig:
    """Reads axis_steer's own capping file (``CapConfig.save``)."""
    path = Path(path)
    tensors, meta = load_tensors(path)
    if meta.get("kind") != "caps" or "directions" not in tensors:
        raise ValueError(f"{path}: not an axis_steer capping file (kind={meta.get('kind')!r})")
    dirs = tensors["directions"]
    rows = meta.get("entries", [])
    if len(rows) != dirs.shape[0]:
        raise ValueError(f"{path}: {len(rows)} entries for {dirs.shape[0]} directions")
    entries = [
        CapEntry(int(r["layer"]), dirs[i].float(), _from_json_float(r["lo"]), _from_json_float(r["hi"]), r.get("name", ""))
        for i, r in enumerate(rows)
    ]
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

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    meta = json.loads(raw[_META_KEY]) if _META_KEY in raw else {}
    return tensors, meta


def load_kind(path: str | Path, kind: str, what: str, in_folder: str) -> tuple[dict[str, Any], dict]:
    """Reads an axis_steer file of one ``kind`` (its metadata's ``"kind"``): ``path`` is
    the file, or a run folder holding it at ``in_folder``. Another kind is a ValueError
    that says the file is not ``what``."""
    path = Path(path)
    if path.is_dir():
        path = path / in_folder
    tensors, meta = load_tensors(path)
    if meta.get("kind") != kind:
        raise ValueError(f"{path}: not {what} (kind={meta.get('kind')!r})")
    return tensors, meta


def read_metadata(path: str | Path) -> dict:
    """The JSON description of an axis_steer file, without loading tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
        shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    meta = json.loads(raw[_META_KEY]) if _META_KEY in raw else {}
    meta["tensors"] = shapes
    return meta
