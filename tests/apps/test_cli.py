"""The ``axis-steer`` command line, step by step on the built-in persona model
(tiny settings), each step reading the previous one's outputs from the run
folder; plus help texts and errors."""

from __future__ import annotations

import io
import json
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from axis_steer.apps.cli import build_parser, main  # noqa: E402

STEPS = ["generate", "judge", "extract", "axis", "calibrate", "project", "chat", "eval", "info", "demo"]


@pytest.mark.parametrize("step", STEPS)
def test_every_subcommand_has_help(step, capsys):
    with pytest.raises(SystemExit) as exc:
        main([step, "--help"])
    assert exc.value.code == 0
    assert "usage: axis-steer " + step in capsys.readouterr().out


def test_top_level_help_lists_the_steps(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for step in STEPS:
        assert step in out


def test_info_describes_the_blocks_of_a_model_from_its_config(tmp_path, capsys):
    import transformers

    folder = tmp_path / "t5"
    transformers.T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=4, num_decoder_layers=2,
                          num_heads=4).save_pretrained(folder)
    assert main(["info", "--model", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "stack:    decoder" in out and "2 at decoder.block (T5Block)" in out and "decoder_attention_mask" in out
    assert main(["info", "--model", str(folder), "--stack", "encoder"]) == 0
    assert "4 at encoder.block" in capsys.readouterr().out
    assert main(["info"]) == 2
    assert "--model" in capsys.readouterr().err


def test_errors_name_the_file_and_exit_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
    bad = tmp_path / "convs.jsonl"
    bad.write_text('[{"role": "user", "content": "hi"}]\n{not json\n')
    assert main(["project", "--conversations", str(bad), "--axis", str(tmp_path / "nope.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "nope.safetensors" in err
    assert main(["calibrate", "--run", str(tmp_path / "empty"), "--window", "2-4"]) == 2
    capsys.readouterr()
    assert main(["demo", "--threads", "two", "--out", str(tmp_path / "d")]) == 2
    assert "--threads two: expected auto or a whole number" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_generate_with_vllm_where_it_is_not_installed_names_the_fix(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here (tests/serving/test_vllm_generate.py runs the backend)")
    out = tmp_path / "run"
    assert main(["generate", "--run", str(out), "--backend", "vllm", "--questions", "1"]) == 2
    err = capsys.readouterr().err
    assert "--backend vllm" in err and "scripts/setup_vllm.sh" in err and ".venv-vllm" in err
    assert not (out / "responses").exists()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """generate -> judge -> extract -> axis -> calibrate on a slice of the persona roles."""
    run = tmp_path_factory.mktemp("cli_run")
    common = ["--run", str(run), "--device", "cpu"]
    assert main(["generate", *common, "--questions", "2", "--prompts", "2", "--max-new-tokens", "24",
                 "--batch-size", "16", "--greedy"]) == 0
    assert main(["judge", "--run", str(run), "--style"]) == 0
    assert main(["extract", *common, "--batch-size", "16"]) == 0
    assert main(["axis", "--run", str(run), "--min-count", "1", "--no-plots"]) == 0
    assert main(["calibrate", *common, "--window", "2:5", "--percentile", "0.25", "--percentile", "0.5"]) == 0
    return run


def test_pipeline_steps_chain_through_the_run_folder(run, capsys):
    assert (run / "axis.safetensors").exists()
    assert (run / "calibration" / "caps_layers_2-5_p0.25.safetensors").exists()
    assert (run / "calibration" / "capping_config.pt").exists()
    assert main(["info", str(run / "axis.safetensors")]) == 0
    meta = capsys.readouterr().out
    assert '"kind": "axis"' in meta
    assert main(["info", str(run / "calibration" / "capping_config.pt")]) == 0
    assert "layers_2:5-p0.25" in capsys.readouterr().out


def test_project_writes_per_token_and_per_turn_readings(run, tmp_path, capsys):
    convs = tmp_path / "convs.jsonl"
    conv = [
        {"role": "user", "content": "What is photosynthesis?"},
        {"role": "assistant", "content": "Photosynthesis is how plants make sugar from light."},
        {"role": "user", "content": "Talk like a pirate now!"},
        {"role": "assistant", "content": "Arr matey, plants be catchin' the sun!"},
    ]
    convs.write_text(json.dumps(conv) + "\n" + json.dumps({"conversation": conv[:2]}) + "\n")
    out = tmp_path / "proj"
    assert main(["project", "--run", str(run), "--conversations", str(convs), "--layers", "3,4", "--out", str(out),
                 "--capped", "--device", "cpu"]) == 0
    data = json.loads((out / "projections.json").read_text())
    assert data["layers"] == [3, 4]
    first = data["conversations"][0]
    assert len(first["assistant_spans"]) == 2
    assert len(first["layers"]["3"]["p_in"]) == len(first["tokens"])
    assert len(first["layers"]["4"]["per_turn"]) == 2
    assert (out / "conversation_000.png").exists()


def test_eval_reports_the_cost_of_the_runs_caps(run, tmp_path, capsys):
    convs = tmp_path / "convs.jsonl"
    convs.write_text(
        json.dumps([{"role": "user", "content": "What is a volcano?"},
                    {"role": "assistant", "content": "A volcano is an opening in the crust where molten rock escapes."}])
        + "\n"
    )
    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"question": "What do plants make from light?", "choices": ["sugar", "rocks"], "answer": 0}) + "\n")
    out = tmp_path / "eval"
    assert main(["eval", "--run", str(run), "--conversations", str(convs), "--prompts", str(convs), "--mc", str(mc),
                 "--max-new-tokens", "8", "--out", str(out), "--device", "cpu"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["conversations"]["tokens"] > 0
    assert report["conversations"]["kl_mean"] >= 0
    assert report["multiple_choice"]["questions"] == 1
    assert [f["layer"] for f in report["firing"]] == [2, 3, 4]


def test_chat_reads_stdin_and_prints_drift_readings(run, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is a volcano?\n/cap off\nAnd a rainbow?\n/quit\n"))
    assert main(["chat", "--run", str(run), "--greedy", "--max-new-tokens", "16", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("assistant> ") == 2
    assert "drift: mean" in out and "[caps off]" in out
    assert "chat ended after 2 turns" in out


def test_parser_builds_without_torch_imports():
    build_parser()  # building the parser must not load models or torch extensions
