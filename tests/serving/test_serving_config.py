"""The serving configuration without vLLM: request options, the caps file
checked against the served model, and the decoder-layer form the vLLM hooks
need (tests/serving runs them inside vLLM)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from axis_steer.runtime.formats import CapConfig, CapEntry  # noqa: E402
from axis_steer.serving.config import RequestOptions, ServingCaps, parse_request_options  # noqa: E402
from axis_steer.serving.plugin import _check_layer_form, external_id  # noqa: E402


def _caps(path, d=16, layers=(1, 2), n_layers=None, lo=2.0):
    meta = {"side": "floor"} if n_layers is None else {"side": "floor", "n_layers": n_layers}
    entries = [CapEntry(layer, torch.ones(d) * 3.0, lo, math.inf) for layer in layers]
    CapConfig(entries, meta).save(path)
    return str(path)


def test_request_options():
    assert parse_request_options(None) == RequestOptions(False, 0.0, False)
    assert parse_request_options({"axis_steer_cap": 1, "axis_steer_offset": "-1.5", "axis_steer_readings": "true",
                                  "other_plugin": 3}) == RequestOptions(True, -1.5, True)
    assert parse_request_options({"axis_steer_cap": False}).cap is False


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"axis_steer_capp": 1}, "axis_steer_capp: not an axis_steer request option"),
        ({"axis_steer": '{"cap": true}'}, "axis_steer: not an axis_steer request option"),
        ({"axis_steer_cap": 2}, r"axis_steer_cap=2 \(expected 0 or 1"),
        ({"axis_steer_offset": "x"}, "axis_steer_offset='x' \\(expected a number"),
        ({"axis_steer_offset": math.inf}, "expected a finite number"),
        ({"axis_steer_readings": [1]}, "axis_steer_readings=\\[1\\]"),
    ],
)
def test_bad_request_options(extra, words):
    with pytest.raises(ValueError, match=words):
        parse_request_options(extra)


def test_default_cap_from_the_environment(monkeypatch):
    monkeypatch.setenv("AXIS_STEER_VLLM_DEFAULT_CAP", "1")
    assert parse_request_options({}).cap is True
    monkeypatch.setenv("AXIS_STEER_VLLM_DEFAULT_CAP", "yes")
    with pytest.raises(ValueError, match="AXIS_STEER_VLLM_DEFAULT_CAP='yes'"):
        parse_request_options({})


def test_caps_file_fits_the_model(tmp_path):
    caps = ServingCaps.load(_caps(tmp_path / "c.safetensors", layers=(2, 1, 2)), hidden_size=16, n_layers=4)
    assert caps.layers == [1, 2] and caps.rows == {2: [0, 2], 1: [1]}
    assert torch.allclose(caps.directions.norm(dim=1), torch.ones(3))  # normalised on load


@pytest.mark.parametrize(
    "kw, load_kw, words",
    [
        ({"d": 32}, {}, "directions of size 32 but the served model's hidden size is 16"),
        ({"layers": (1, 4)}, {}, "entry 1 caps layer 4 but the served model has layers 0..3"),
        ({"n_layers": 6}, {}, "computed on a model with 6 layers but the served model has 4"),
    ],
)
def test_caps_file_that_does_not_fit_is_refused(tmp_path, kw, load_kw, words):
    path = _caps(tmp_path / "c.safetensors", **kw)
    with pytest.raises(ValueError, match=words):
        ServingCaps.load(path, hidden_size=16, n_layers=4)


def test_missing_caps_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="AXIS_STEER_VLLM_CAPS=.*no such file"):
        ServingCaps.load(str(tmp_path / "none.safetensors"), hidden_size=16, n_layers=4)


def test_layers_without_a_residual_output_are_refused():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    layer = LlamaDecoderLayer(LlamaConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                          num_key_value_heads=2, num_hidden_layers=1), 0)
    with pytest.raises(TypeError, match="decoder layer 3 is LlamaDecoderLayer, whose forward takes no `residual`"):
        _check_layer_form(layer, 3)

    class SplitLayer(torch.nn.Module):
        def forward(self, positions, hidden_states, residual):
            return hidden_states, residual

    _check_layer_form(SplitLayer(), 0)


def test_external_ids():
    assert external_id("chatcmpl-abc-1f2e3d4c") == "chatcmpl-abc"
    assert external_id("7-0123abcd") == "7"
    assert external_id("plain") == "plain"
    assert external_id("x-notahexid") == "x-notahexid"
