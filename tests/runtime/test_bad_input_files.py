"""Hostile files given to the loaders (``axis_steer.runtime.formats`` and the
pipeline's own file readers): missing files, directories, FIFOs (which block
a reader forever), symbolic-link loops, truncated and corrupt files, files
declaring far more data than they hold, pickle payloads, wrong dtypes and
shapes, metadata of the wrong JSON type, text that is not UTF-8, and fields
of the wrong type. Each must be refused with an error naming the file and
what was expected; a corrupt file must not be blamed on pickle. See
``tests/bad_input.py``."""

from __future__ import annotations

import collections
import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import save_file  # noqa: E402

from axis_steer.errors import AxisSteerError  # noqa: E402
from axis_steer.pipeline.axis import load_persona_space, load_role_vectors  # noqa: E402
from axis_steer.pipeline.extract import load_sums  # noqa: E402
from axis_steer.pipeline.runs import read_response_rows  # noqa: E402
from axis_steer.runtime import formats as F  # noqa: E402

from bad_input import bad, expect_error, make_fifo, make_loop, params  # noqa: E402

L, D = 4, 8


# ---- hostile files ---------------------------------------------------------------------------------


def pt(d: Path, obj, name="f.pt") -> Path:
    p = d / name
    torch.save(obj, p)
    return p


def st(d: Path, tensors: dict, meta=None, name="f.safetensors", raw_meta: str | None = None) -> Path:
    p = d / name
    header = None
    if raw_meta is not None:
        header = {"axis_steer": raw_meta}
    elif meta is not None:
        header = {"axis_steer": json.dumps(meta)}
    save_file(tensors, str(p), metadata=header)
    return p


def truncated(p: Path, keep: float = 0.5) -> Path:
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * keep)])
    return p


def raw(d: Path, data: bytes, name="f.pt") -> Path:
    p = d / name
    p.write_bytes(data)
    return p


def fifo(d: Path, name: str) -> Path:
    return Path(make_fifo(d / name))


def loop(d: Path, name: str) -> Path:
    return Path(make_loop(d / name))


def folder_named(d: Path, name: str) -> Path:
    p = d / name
    p.mkdir()
    return p


class _Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (print, ("pickled code ran",))


class Plain:
    """A plain Python object: loading it needs pickle, not code from the file."""


def huge_pt(d: Path, numel: int = 2**40) -> Path:
    """A .pt whose tensor declares ``numel`` float elements while the file holds 16 bytes."""
    marker = object()

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel) if obj is marker else None

    class Rebuild:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (marker, 0, (2**20, 2**20), (2**20, 1), False, collections.OrderedDict()))

    buf = io.BytesIO()
    P(buf, protocol=2).dump(Rebuild())
    p = d / "huge.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("huge/data.pkl", buf.getvalue())
        z.writestr("huge/byteorder", "little")
        z.writestr("huge/data/0", b"\0" * 16)
        z.writestr("huge/version", "3\n")
    return p


def legacy_truncated(d: Path) -> Path:
    p = d / "legacy.pt"
    torch.save(torch.ones(L, D), p, _use_new_zipfile_serialization=False)
    return truncated(p)


def axis_meta(**kw):
    return dict(dict(kind="axis", n_layers=L, hidden_size=D), **kw)


def caps_file(d: Path, dirs=None, entries=None, **meta) -> Path:
    dirs = torch.eye(D)[:1] if dirs is None else dirs
    entries = [{"layer": 1, "lo": "-inf", "hi": 0.5, "name": ""}] if entries is None else entries
    return st(d, {"directions": dirs}, dict(kind="caps", entries=entries, hidden_size=D, **meta), name="caps.safetensors")


def role_vectors_file(d: Path, roles=("a", "b", "c"), n=1, counts=None, layers=None, default=None) -> Path:
    meta = dict(
        kind="role_vectors",
        roles=list(roles),
        counts=[5] * len(roles) if counts is None else counts,
        default_count=5,
        layers=list(range(L)) if layers is None else layers,
        n_layers=L,
        hidden_size=D,
    )
    t = {"role_vectors": torch.ones(n, L, D), "default": torch.ones(L, D) if default is None else default}
    return st(d, t, meta, name="role_vectors.safetensors")


def sums_file(d: Path, shape=(L, D), **meta) -> Path:
    m = dict(kind="activation_sums", layers=list(range(L)), hidden_size=D, counts={"a/score3": 1}, tokens={"a/score3": 3})
    m.update(meta)
    return st(d, {"sum/a/score3": torch.ones(*shape)}, m, name="sums.safetensors")


def text(d: Path, name: str, body: bytes) -> Path:
    p = d / name
    p.write_bytes(body)
    return p


CONV = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
ROW = dict(system_prompt="", prompt_index=0, question_index=0, question="q", label="a")


def responses(d: Path, conversation) -> Path:
    return text(d, "responses.jsonl", (json.dumps(dict(ROW, conversation=conversation)) + "\n").encode())


NOT_UTF8 = b'{"pos_p0_q0": 3, "x": "\xff\xfe"}'

BAD = [
    # ---- load_pt: what is not a file, corrupt files, pickle payloads
    bad("pt-missing", lambda d: F.load_pt(d / "none.pt"), FileNotFoundError, "none.pt", "no such file"),
    bad("pt-path-int", lambda d: F.load_pt(5), TypeError, "path", "str or os.PathLike"),
    bad("pt-path-empty", lambda d: F.load_pt(""), ValueError, "path", "empty"),
    bad("pt-directory", lambda d: F.load_pt(folder_named(d, "dir.pt")), ValueError, "dir.pt", "a directory", "regular file"),
    bad("pt-fifo", lambda d: F.load_pt(fifo(d, "f.pt")), ValueError, "f.pt", "FIFO", fifo=True),
    bad("pt-symlink-loop", lambda d: F.load_pt(loop(d, "loop.pt")), ValueError, "loop.pt", "symbolic link loop"),
    bad("pt-device", lambda d: F.load_pt("/dev/null"), ValueError, "/dev/null", "device"),
    bad("pt-truncated", lambda d: F.load_pt(truncated(pt(d, torch.ones(L, D)))), ValueError, "f.pt", "corrupt or truncated"),
    bad("pt-ten-bytes", lambda d: F.load_pt(truncated(pt(d, torch.ones(L, D)), 0.01)), ValueError, "corrupt or truncated"),
    bad("pt-empty", lambda d: F.load_pt(raw(d, b"")), ValueError, "corrupt or truncated"),
    bad("pt-garbage", lambda d: F.load_pt(raw(d, b"hello world" * 10)), ValueError, "corrupt or truncated"),
    bad("pt-legacy-truncated", lambda d: F.load_pt(legacy_truncated(d)), ValueError, "corrupt or truncated"),
    bad("pt-huge-declared", lambda d: F.load_pt(huge_pt(d)), ValueError, "huge.pt", "corrupt or truncated"),
    bad("pt-pickle-payload", lambda d: F.load_pt(pt(d, {"x": _Payload()})), AxisSteerError, "print", "trust_pickle=True"),
    bad("pt-pickle-class", lambda d: F.load_pt(pt(d, Plain())), AxisSteerError, "Plain", "trust_pickle"),
    # ---- load_axis
    bad("axis-fifo-safetensors", lambda d: F.load_axis(fifo(d, "axis.safetensors")), ValueError, "axis.safetensors", "FIFO", fifo=True),
    bad("axis-fifo-pt", lambda d: F.load_axis(fifo(d, "axis.pt")), ValueError, "axis.pt", "FIFO", fifo=True),
    bad("axis-directory", lambda d: F.load_axis(folder_named(d, "axis.safetensors")), ValueError, "a directory"),
    bad("axis-symlink-loop", lambda d: F.load_axis(loop(d, "axis.safetensors")), ValueError, "symbolic link loop"),
    bad("axis-int-pt", lambda d: F.load_axis(pt(d, torch.ones(L, D, dtype=torch.int64))), ValueError, "f.pt", "int64", "float"),
    bad("axis-int-safetensors", lambda d: F.load_axis(st(d, {"axis": torch.ones(L, D, dtype=torch.int32)}, axis_meta())), ValueError, "int32", "float"),
    bad("axis-bool-pt", lambda d: F.load_axis(pt(d, torch.ones(L, D, dtype=torch.bool))), ValueError, "bool"),
    bad("axis-complex-pt", lambda d: F.load_axis(pt(d, torch.ones(L, D, dtype=torch.complex64))), ValueError, "complex64"),
    bad("axis-3d", lambda d: F.load_axis(pt(d, torch.ones(1, L, D))), ValueError, "shape (1, 4, 8)", "(n_layers, d)"),
    bad("axis-empty", lambda d: F.load_axis(pt(d, torch.ones(0, D))), ValueError, "shape (0, 8)"),
    bad("axis-list", lambda d: F.load_axis(pt(d, [1.0, 2.0])), ValueError, "list", "tensor"),
    bad("axis-dict-without-axis", lambda d: F.load_axis(pt(d, {"vectors": torch.ones(L, D)})), ValueError, "'axis'", "keys"),
    bad("axis-metadata-list", lambda d: F.load_axis(pt(d, {"axis": torch.ones(L, D), "metadata": [1]})), ValueError, "'metadata'", "dict"),
    bad("axis-metadata-empty-list", lambda d: F.load_axis(pt(d, {"axis": torch.ones(L, D), "metadata": []})), ValueError, "'metadata'", "dict"),
    bad("axis-st-metadata-list", lambda d: F.load_axis(st(d, {"axis": torch.ones(L, D)}, raw_meta="[1, 2]")), ValueError, "metadata", "JSON object"),
    bad("axis-st-metadata-not-json", lambda d: F.load_axis(st(d, {"axis": torch.ones(L, D)}, raw_meta="{nope")), ValueError, "metadata", "not valid JSON"),
    bad("axis-st-truncated", lambda d: F.load_axis(truncated(st(d, {"axis": torch.ones(L, D)}, axis_meta()))), ValueError, "corrupt or truncated"),
    bad("axis-st-no-axis", lambda d: F.load_axis(st(d, {"other": torch.ones(L, D)}, axis_meta())), ValueError, "no 'axis' tensor"),
    bad("axis-st-garbage", lambda d: F.load_axis(raw(d, b"\xff" * 64, "g.safetensors")), ValueError, "g.safetensors", "corrupt"),
    bad("axis-st-huge-header", lambda d: F.load_axis(raw(d, (2**40).to_bytes(8, "little") + b"{}", "h.safetensors")), ValueError, "h.safetensors"),
    # ---- vectors and activations
    bad("vector-int", lambda d: F.load_vector(pt(d, {"vector": torch.ones(L, D, dtype=torch.int64)})), ValueError, "'vector'", "int64"),
    bad("vector-role-not-str", lambda d: F.load_vector(pt(d, {"vector": torch.ones(L, D), "role": 5})), ValueError, "'role'", "string"),
    bad("vector-fifo", lambda d: F.load_vector(fifo(d, "pirate.pt")), ValueError, "FIFO", fifo=True),
    bad("vectors-folder-is-file", lambda d: F.load_vectors(pt(d, torch.ones(L, D))), ValueError, "not a folder"),
    bad("vectors-folder-empty", lambda d: F.load_vectors(folder_named(d, "empty")), FileNotFoundError, "no .pt vector files"),
    bad("vectors-folder-missing", lambda d: F.load_vectors(d / "missing"), FileNotFoundError, "missing", "no such folder"),
    bad("activations-bad-key", lambda d: F.load_activations(pt(d, {"resp_0": torch.ones(L, D)})), ValueError, "f.pt", "'resp_0'", "pos_p"),
    bad("activations-int-key", lambda d: F.load_activations(pt(d, {0: torch.ones(L, D)})), ValueError, "0", "pos_p"),
    bad("activations-mixed-shapes", lambda d: F.load_activations(pt(d, {"pos_p0_q0": torch.ones(L, D), "pos_p0_q1": torch.ones(L, D + 1)})), ValueError, "'pos_p0_q1'", "one shape"),
    bad("activations-int-dtype", lambda d: F.load_activations(pt(d, {"pos_p0_q0": torch.ones(L, D, dtype=torch.int16)})), ValueError, "int16"),
    bad("activations-list", lambda d: F.load_activations(pt(d, [torch.ones(L, D)])), ValueError, "list", "dict"),
    bad("activations-fifo", lambda d: F.load_activations(fifo(d, "a.safetensors")), ValueError, "FIFO", fifo=True),
    # ---- judge scores
    bad("scores-not-utf8", lambda d: F.load_scores(text(d, "s.json", NOT_UTF8)), ValueError, "s.json", "not UTF-8"),
    bad("scores-not-json", lambda d: F.load_scores(text(d, "s.json", b"{nope")), ValueError, "s.json", "not valid JSON"),
    bad("scores-list", lambda d: F.load_scores(text(d, "s.json", b"[3, 2]")), ValueError, "list", "object of scores"),
    bad("scores-bool", lambda d: F.load_scores(text(d, "s.json", b'{"pos_p0_q0": true}')), ValueError, "pos_p0_q0 = True", "0..3"),
    bad("scores-float", lambda d: F.load_scores(text(d, "s.json", b'{"pos_p0_q0": 2.5}')), ValueError, "pos_p0_q0 = 2.5"),
    bad("scores-four", lambda d: F.load_scores(text(d, "s.json", b'{"pos_p0_q0": 4}')), ValueError, "0..3"),
    bad("scores-bad-key", lambda d: F.load_scores(text(d, "s.json", b'{"p0q0": 3}')), ValueError, "s.json", "'p0q0'"),
    bad("scores-deep", lambda d: F.load_scores(text(d, "s.json", b"[" * 100000 + b"]" * 100000)), ValueError, "s.json"),
    bad("scores-fifo", lambda d: F.load_scores(fifo(d, "s.json")), ValueError, "FIFO", fifo=True),
    bad("scores-directory", lambda d: F.load_scores(folder_named(d, "s.json")), ValueError, "a directory"),
    # ---- JSONL and responses
    bad("jsonl-not-utf8", lambda d: list(F.iter_jsonl(text(d, "r.jsonl", b'{"a": 1}\n' + NOT_UTF8 + b"\n"))), ValueError, "r.jsonl:2", "not UTF-8"),
    bad("jsonl-fifo", lambda d: list(F.iter_jsonl(fifo(d, "r.jsonl"))), ValueError, "FIFO", fifo=True),
    bad("jsonl-symlink-loop", lambda d: list(F.iter_jsonl(loop(d, "r.jsonl"))), ValueError, "symbolic link loop"),
    bad("responses-role-int", lambda d: list(F.read_responses(responses(d, [{"role": 5, "content": "x"}, CONV[1]]))), ValueError, "responses.jsonl:1", "[0]: role = 5"),
    bad("responses-content-null", lambda d: list(F.read_responses(responses(d, [{"role": "user", "content": None}, CONV[1]]))), ValueError, "content = None", "string"),
    bad("responses-message-str", lambda d: list(F.read_responses(responses(d, ["hi", CONV[1]]))), ValueError, "[0] = 'hi'", "message"),
    bad("responses-last-user", lambda d: list(F.read_responses(responses(d, CONV[:1]))), ValueError, "ends with a 'user'", "assistant"),
    bad("responses-empty-conversation", lambda d: list(F.read_responses(responses(d, []))), ValueError, "'conversation'", "non-empty"),
    bad("responses-missing-fields", lambda d: list(F.read_responses(text(d, "r.jsonl", b'{"conversation": []}\n'))), ValueError, "missing"),
    bad("run-rows-last-not-dict", lambda d: read_response_rows(responses(d, [CONV[0], "bye"]), tolerant=False), ValueError, "conversation"),
    # ---- axis_steer capping files
    bad("caps-directions-3d", lambda d: F.load_caps(caps_file(d, dirs=torch.eye(D)[None, :2])), ValueError, "'directions'", "(1, 2, 8)", "(n_entries, d)"),
    bad("caps-directions-int", lambda d: F.load_caps(caps_file(d, dirs=torch.ones(1, D, dtype=torch.int64))), ValueError, "'directions'", "int64"),
    bad("caps-directions-nan", lambda d: F.load_caps(caps_file(d, dirs=torch.full((1, D), float("nan")))), ValueError, "'directions'", "NaN"),
    bad("caps-entries-missing", lambda d: F.load_caps(st(d, {"directions": torch.eye(D)[:1]}, {"kind": "caps"})), ValueError, "'entries'", "list"),
    bad("caps-entries-dict", lambda d: F.load_caps(caps_file(d, entries={"layer": 1})), ValueError, "'entries'", "list"),
    bad("caps-entries-count", lambda d: F.load_caps(caps_file(d, entries=[])), ValueError, "0 entries for 1 directions"),
    bad("caps-entry-not-dict", lambda d: F.load_caps(caps_file(d, entries=[[1, 0, 1]])), ValueError, "entries[0]", "'layer'"),
    bad("caps-layer-float", lambda d: F.load_caps(caps_file(d, entries=[{"layer": 1.7, "lo": 0.0, "hi": "inf"}])), ValueError, "entries[0].layer", "1.7"),
    bad("caps-layer-whole-float", lambda d: F.load_caps(caps_file(d, entries=[{"layer": 1.0, "lo": 0.0, "hi": "inf"}])), ValueError, "entries[0].layer"),
    bad("caps-layer-True", lambda d: F.load_caps(caps_file(d, entries=[{"layer": True, "lo": 0.0, "hi": "inf"}])), ValueError, "entries[0].layer", "bool"),
    bad("caps-layer-str", lambda d: F.load_caps(caps_file(d, entries=[{"layer": "1", "lo": 0.0, "hi": "inf"}])), ValueError, "entries[0].layer"),
    bad("caps-layer-negative", lambda d: F.load_caps(caps_file(d, entries=[{"layer": -1, "lo": 0.0, "hi": "inf"}])), ValueError, "entries[0].layer", "-1"),
    bad("caps-lo-str-number", lambda d: F.load_caps(caps_file(d, entries=[{"layer": 1, "lo": "0.5", "hi": "inf"}])), ValueError, "entries[0].lo", "'0.5'"),
    bad("caps-lo-True", lambda d: F.load_caps(caps_file(d, entries=[{"layer": 1, "lo": True, "hi": "inf"}])), ValueError, "entries[0].lo"),
    bad("caps-lo-nan", lambda d: F.load_caps(caps_file(d, entries=[{"layer": 1, "lo": "nan", "hi": "inf"}])), ValueError, "entries[0]: lo", "NaN"),
    bad("caps-hi-minus-inf", lambda d: F.load_caps(caps_file(d, entries=[{"layer": 1, "lo": "-inf", "hi": "-inf"}])), ValueError, "entries[0]: hi", "not a bound"),
    bad("caps-lo-above-hi", lambda d: F.load_caps(caps_file(d, entries=[{"layer": 1, "lo": 2, "hi": 1}])), ValueError, "entries[0]", "lo <= hi"),
    bad("caps-lo-1e39", lambda d: F.load_caps(caps_file(d, entries=[{"layer": 1, "lo": 1e39, "hi": "inf"}])), ValueError, "entries[0]: lo", "float32"),
    bad("caps-name-int", lambda d: F.load_caps(caps_file(d, entries=[{"layer": 1, "lo": 0, "hi": "inf", "name": 5}])), ValueError, "entries[0].name"),
    bad("caps-wrong-kind", lambda d: F.load_caps(st(d, {"directions": torch.eye(D)[:1]}, {"kind": "axis"})), ValueError, "not an axis_steer capping file"),
    bad("caps-fifo", lambda d: F.load_caps(fifo(d, "caps.safetensors")), ValueError, "FIFO", fifo=True),
    # ---- metadata and typed files
    bad("metadata-fifo", lambda d: F.read_metadata(fifo(d, "x.safetensors")), ValueError, "FIFO", fifo=True),
    bad("metadata-list", lambda d: F.read_metadata(st(d, {"x": torch.ones(1)}, raw_meta="[]")), ValueError, "JSON list", "JSON object"),
    bad("metadata-truncated", lambda d: F.read_metadata(truncated(st(d, {"x": torch.ones(64)}, axis_meta()), 0.05)), ValueError, "corrupt or truncated"),
    bad("metadata-missing", lambda d: F.read_metadata(d / "none.safetensors"), FileNotFoundError, "none.safetensors"),
    bad("kind-wrong", lambda d: F.load_kind(st(d, {"x": torch.ones(1)}, {"kind": "axis"}), "caps", "a caps file", "c.safetensors"), ValueError, "not a caps file"),
    bad("role-vectors-3-names-1-vector", lambda d: load_role_vectors(role_vectors_file(d)), ValueError, "'roles'", "3 items for 1"),
    bad("role-vectors-counts", lambda d: load_role_vectors(role_vectors_file(d, roles=("a",), counts=[1, 2])), ValueError, "'counts'"),
    bad("role-vectors-layers-float", lambda d: load_role_vectors(role_vectors_file(d, roles=("a",), layers=[0, 1, 2.5, 3])), ValueError, "layers[2]", "2.5"),
    bad("role-vectors-layers-count", lambda d: load_role_vectors(role_vectors_file(d, roles=("a",), layers=[0, 1])), ValueError, "'layers'", "2 items for 4"),
    bad("role-vectors-default-shape", lambda d: load_role_vectors(role_vectors_file(d, roles=("a",), default=torch.ones(L, D + 1))), ValueError, "'default'", "shape"),
    bad("role-vectors-names-int", lambda d: load_role_vectors(role_vectors_file(d, roles=(5,))), ValueError, "roles[0] = 5", "string"),
    bad("persona-space-roles", lambda d: load_persona_space(st(d, {
        "components": torch.ones(1, 2, D), "loadings": torch.ones(1, 3, 2), "variance_ratio": torch.ones(1, 2),
        "default_loading": torch.ones(1, 2), "cos_pc1_axis": torch.ones(1), "axis_projection": torch.ones(1, 3),
        "default_projection": torch.ones(1)}, {"kind": "persona_space", "roles": ["a"], "layers": [0]})), ValueError, "'roles'", "1 items for 3"),
    bad("sums-shape", lambda d: load_sums(sums_file(d, shape=(L, D + 1))), ValueError, "'sum/a/score3'", "shape"),
    bad("sums-layers-str", lambda d: load_sums(sums_file(d, layers=["0", "1"])), ValueError, "layers[0]"),
    bad("sums-no-count", lambda d: load_sums(sums_file(d, counts={})), ValueError, "no count"),
    bad("sums-hidden-size-missing", lambda d: load_sums(st(d, {"sum/a/x": torch.ones(L, D)}, {"kind": "activation_sums", "layers": [0, 1, 2, 3]}, name="sums.safetensors")), ValueError, "'hidden_size'"),
]


@pytest.mark.parametrize("case", params(BAD))
def test_loaders_refuse(case, tmp_path):
    expect_error(case, tmp_path, fifo_dir=str(tmp_path))


def test_a_good_caps_file_loads(tmp_path):
    cfg = F.load_caps(caps_file(tmp_path))
    assert cfg.entries[0].layer == 1 and cfg.entries[0].lo == -float("inf") and cfg.entries[0].hi == 0.5


def test_a_symlink_to_a_file_loads(tmp_path):
    p = pt(tmp_path, torch.ones(L, D))
    (tmp_path / "link.pt").symlink_to(p.name)
    assert F.load_axis(tmp_path / "link.pt").n_layers == L


def test_trust_pickle_still_reports_a_corrupt_file(tmp_path):
    with pytest.raises(ValueError, match="corrupt or truncated"):
        F.load_pt(truncated(pt(tmp_path, torch.ones(L, D))), trust_pickle=True)
