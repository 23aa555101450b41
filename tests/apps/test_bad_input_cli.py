"""Bad arguments to the ``axis-steer`` command line: each must end with exit
status 2 and one line on stderr naming the option (or file), what it got and
what was expected — never a traceback, a hang, or a run on a silently
changed setting. See ``tests/bad_input.py``."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from axis_steer.apps.cli import main  # noqa: E402
from axis_steer.runtime.formats import Axis  # noqa: E402

from bad_input import bad, expect_error, make_fifo, make_loop, params  # noqa: E402

N_LAYERS, HIDDEN = 8, 128  # the built-in persona model


class CLIError(Exception):
    """``main`` returned 2; the message is what it printed on stderr."""


def cli(*argv: str) -> str:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main([str(a) for a in argv])
    if rc == 2:
        raise CLIError(err.getvalue().strip())
    assert rc == 0, f"exit status {rc}: {err.getvalue()}"
    return out.getvalue()


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    """A folder with an axis for the built-in model and a few input files."""
    d = tmp_path_factory.mktemp("cli_bad")
    Axis(torch.randn(N_LAYERS, HIDDEN)).save(d / "axis.safetensors")
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    (d / "good.jsonl").write_text(json.dumps(conv) + "\n")
    (d / "role5.jsonl").write_text(json.dumps([{"role": 5, "content": None}]) + "\n")
    (d / "null.jsonl").write_text(json.dumps([{"role": "user", "content": None}, conv[1]]) + "\n")
    (d / "latin1.jsonl").write_bytes(json.dumps(conv).encode()[:-3] + b"\xe9\"}]\n")
    (d / "texts_latin1.txt").write_bytes(b"caf\xe9 au lait\n")
    (d / "empty.txt").write_text("\n\n")
    (d / "a_file").write_text("x")
    (d / "a_dir.jsonl").mkdir()
    torch.save(torch.ones(3), d / "full.pt")
    (d / "trunc.pt").write_bytes((d / "full.pt").read_bytes()[:40])
    (d / "notes.txt").write_text("x")
    make_fifo(d / "fifo.jsonl")
    make_fifo(d / "fifo.txt")
    make_fifo(d / "fifo.safetensors")
    make_loop(d / "loop.pt")
    return d


def project(d, *extra):
    return cli("project", "--axis", d / "axis.safetensors", "--device", "cpu", "--no-plots", "--out", d / "proj", *extra)


def conv_project(d, name, *extra):
    return project(d, "--conversations", d / name, *extra)


BAD = [
    # ---- model options
    bad("device-bogus", lambda d: cli("generate", "--run", d / "r1", "--device", "bogus"), CLIError, "--device 'bogus'", "not a torch device"),
    bad("device-missing-gpu", lambda d: cli("generate", "--run", d / "r1", "--device", "cuda:99"), CLIError, "--device 'cuda:99'", "CUDA"),
    bad("device-meta", lambda d: cli("generate", "--run", d / "r1", "--device", "meta"), CLIError, "--device 'meta'"),
    bad("demo-device-bogus", lambda d: cli("demo", "--out", d / "demo", "--device", "gpu0"), CLIError, "--device 'gpu0'"),
    # ---- sampling settings (checked by generate_responses)
    bad("temperature-inf", lambda d: cli("generate", "--run", d / "r2", "--device", "cpu", "--temperature", "inf"), CLIError, "temperature = inf", "finite"),
    bad("temperature-nan", lambda d: cli("generate", "--run", d / "r2", "--device", "cpu", "--temperature", "nan"), CLIError, "temperature = nan"),
    bad("temperature-negative", lambda d: cli("generate", "--run", d / "r2", "--device", "cpu", "--temperature", "-1"), CLIError, "temperature = -1.0"),
    bad("top-p-zero", lambda d: cli("generate", "--run", d / "r2", "--device", "cpu", "--top-p", "0"), CLIError, "top_p = 0.0"),
    bad("batch-size-zero", lambda d: cli("generate", "--run", d / "r2", "--device", "cpu", "--batch-size", "0"), CLIError, "batch_size = 0"),
    bad("questions-zero", lambda d: cli("generate", "--run", d / "r2", "--device", "cpu", "--questions", "0"), CLIError, "n_questions = 0"),
    # ---- the run folder
    bad("run-is-a-file", lambda d: cli("axis", "--run", d / "a_file"), CLIError, "--run", "a_file", "not a folder"),
    bad("run-symlink-loop", lambda d: cli("axis", "--run", d / "loop.pt"), CLIError, "--run", "symbolic link loop"),
    bad("axis-min-score", lambda d: cli("axis", "--run", d, "--min-score", "5"), CLIError, "min_score = 5", "0..3"),
    bad("axis-min-count", lambda d: cli("axis", "--run", d, "--min-count", "0"), CLIError, "min_count = 0"),
    # ---- judge --callable
    bad("callable-no-module", lambda d: cli("judge", "--run", d, "--callable", "no_such_module_xyz:f"), CLIError, "--callable", "no_such_module_xyz", "cannot import"),
    bad("callable-no-function", lambda d: cli("judge", "--run", d, "--callable", "os:no_such_function"), CLIError, "--callable", "no_such_function"),
    bad("callable-no-colon", lambda d: cli("judge", "--run", d, "--callable", "os.path"), CLIError, "--callable", "module:function"),
    bad("callable-not-a-function", lambda d: cli("judge", "--run", d, "--callable", "os:sep"), CLIError, "--callable", "not a function"),
    bad("judge-scores-fifo", lambda d: cli("judge", "--run", d, "--scores", d / "fifo.txt"), CLIError, "fifo.txt", "FIFO", fifo=True),
    # ---- --layers
    bad("layers-empty-range", lambda d: conv_project(d, "good.jsonl", "--layers", "0:0"), CLIError, "--layers '0:0'", "empty range"),
    bad("layers-backwards", lambda d: conv_project(d, "good.jsonl", "--layers", "5:2"), CLIError, "--layers '5:2'", "empty range"),
    bad("layers-words", lambda d: conv_project(d, "good.jsonl", "--layers", "a:b"), CLIError, "--layers 'a:b'", "0:32"),
    bad("layers-three-parts", lambda d: conv_project(d, "good.jsonl", "--layers", "1:2:3"), CLIError, "--layers '1:2:3'"),
    bad("layers-blank", lambda d: conv_project(d, "good.jsonl", "--layers", ""), CLIError, "--layers ''"),
    bad("layers-out-of-range", lambda d: conv_project(d, "good.jsonl", "--layers", "99"), CLIError, "layers[0] = 99", "0..7"),
    bad("extract-layers-float", lambda d: cli("extract", "--run", d, "--device", "cpu", "--layers", "1.5"), CLIError, "--layers '1.5'"),
    # ---- conversation files
    bad("conversations-role-int", lambda d: conv_project(d, "role5.jsonl"), CLIError, "role5.jsonl:1", "role = 5"),
    bad("conversations-content-null", lambda d: conv_project(d, "null.jsonl"), CLIError, "null.jsonl:1", "content = None"),
    bad("conversations-not-utf8", lambda d: conv_project(d, "latin1.jsonl"), CLIError, "latin1.jsonl:1", "not UTF-8"),
    bad("conversations-fifo", lambda d: conv_project(d, "fifo.jsonl"), CLIError, "fifo.jsonl", "FIFO", fifo=True),
    bad("conversations-directory", lambda d: conv_project(d, "a_dir.jsonl"), CLIError, "a_dir.jsonl", "a directory"),
    bad("conversations-missing", lambda d: conv_project(d, "none.jsonl"), CLIError, "none.jsonl", "no such file"),
    bad("project-axis-fifo", lambda d: cli("project", "--axis", d / "fifo.safetensors", "--conversations", d / "good.jsonl", "--device", "cpu"), CLIError, "fifo.safetensors", "FIFO", fifo=True),
    bad("project-batch-size-zero", lambda d: conv_project(d, "good.jsonl", "--batch-size", "0"), CLIError, "batch_size = 0"),
    bad("chat-layer-out-of-range", lambda d: cli("chat", "--axis", d / "axis.safetensors", "--uncapped", "--device", "cpu", "--layer", "99"), CLIError, "layer = 99", "0..7"),
    bad("chat-max-new-tokens-zero", lambda d: cli("chat", "--axis", d / "axis.safetensors", "--uncapped", "--device", "cpu", "--max-new-tokens", "0"), CLIError, "max_new_tokens = 0"),
    # ---- info
    bad("info-fifo", lambda d: cli("info", d / "fifo.safetensors"), CLIError, "fifo.safetensors", "FIFO", fifo=True),
    bad("info-truncated-pt", lambda d: cli("info", d / "trunc.pt"), CLIError, "trunc.pt", "corrupt or truncated"),
    bad("info-directory-pt", lambda d: cli("info", d / "a_dir.jsonl"), CLIError, "a_dir.jsonl", ".safetensors or .pt"),
    bad("info-symlink-loop", lambda d: cli("info", d / "loop.pt"), CLIError, "loop.pt", "symbolic link loop"),
    bad("info-other-suffix", lambda d: cli("info", d / "notes.txt"), CLIError, "notes.txt", ".safetensors or .pt"),
    # ---- calibrate
    bad("calibrate-percentile-nan", lambda d: cli("calibrate", "--run", d, "--device", "cpu", "--percentile", "nan"), CLIError, "percentiles[0] = nan"),
    bad("calibrate-percentile-25", lambda d: cli("calibrate", "--run", d, "--device", "cpu", "--percentile", "25"), CLIError, "percentiles[0] = 25.0", "outside"),
    bad("calibrate-window-backwards", lambda d: cli("calibrate", "--run", d, "--device", "cpu", "--window", "5:2"), CLIError, "[5, 2)", "not a layer range"),
    bad("calibrate-window-word", lambda d: cli("calibrate", "--run", d, "--device", "cpu", "--window", "x"), CLIError, "--window 'x'", "a:b"),
    # ---- eval
    bad("eval-texts-fifo", lambda d: _eval(d, "--texts", d / "fifo.txt"), CLIError, "--texts", "FIFO", fifo=True),
    bad("eval-texts-not-utf8", lambda d: _eval(d, "--texts", d / "texts_latin1.txt"), CLIError, "--texts", "not UTF-8"),
    bad("eval-texts-empty", lambda d: _eval(d, "--texts", d / "empty.txt"), CLIError, "--texts", "no texts"),
    bad("eval-caps-fifo", lambda d: cli("eval", "--caps", d / "fifo.safetensors", "--texts", d / "good.jsonl", "--device", "cpu"), CLIError, "fifo.safetensors", "FIFO", fifo=True),
]


def _eval(d, *extra):
    caps = d / "caps.safetensors"
    if not caps.exists():
        from axis_steer.runtime.formats import CapConfig, CapEntry

        CapConfig([CapEntry(1, torch.eye(HIDDEN)[0], -1.0, float("inf"))]).save(caps)
    return cli("eval", "--caps", caps, "--device", "cpu", "--no-plots", "--out", d / "eval", *extra)


@pytest.mark.parametrize("case", params(BAD))
def test_cli_refuses(case, d):
    expect_error(case, d, fifo_dir=str(d))


def test_cli_describes_a_pt_that_is_not_a_tensor(d):
    torch.save([1, 2], d / "list.pt")
    assert '"kind": "a list"' in cli("info", d / "list.pt")
