"""axis_steer inside vLLM's offline engine, against Hugging Face: a mixed
batch (capped, uncapped, capped with an offset) in one ``generate`` call on the
project's small Llama in float32 with greedy decoding. Each capped request's
tokens equal HF's with the same caps attached (``Attachment.cap_config``),
its readings equal HF's projections at the capped layers, the uncapped one
equals plain HF, and an unknown request option is an error.

Runs in the serving environment (scripts/setup_vllm.sh); skips elsewhere.
The engine is vLLM's default for the CPU: compiled (torch.compile), so the
hooks are checked inside the compiled graph."""

from __future__ import annotations

import os

import pytest

vllm = pytest.importorskip("vllm")
torch = pytest.importorskip("torch")

from axis_steer.runtime.formats import CapConfig, CapEntry  # noqa: E402

from serving_fixtures import (  # noqa: E402
    CAPPED,
    ENGINE_KW,
    MODEL,
    N_LAYERS,
    PROMPTS,
    check_readings,
    hf_greedy,
    make_caps,
)

MAX_TOKENS = 20
#: |vLLM - HF| for projections (float32 model, float32 caps): a few float32
#: ulps of the stream, accumulated over 8 layers in two implementations
PROJ_TOL = 1e-3


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    caps = make_caps(tmp_path_factory.mktemp("caps") / "caps.safetensors")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # one process: the engine starts in seconds; the hooks run the same
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM

    from axis_steer.serving import capped_llm

    # a plain engine first in this process (vLLM then counts its plugins as
    # loaded): the capped one must still be capped
    plain = LLM(model=MODEL, **ENGINE_KW)
    del plain
    llm = capped_llm(MODEL, caps, **ENGINE_KW)
    yield llm, caps
    del llm


def _offset_caps(caps, offset):
    from axis_steer.runtime.formats import load_caps

    cfg = load_caps(caps)
    return CapConfig([CapEntry(e.layer, e.direction, e.lo + offset, e.hi + offset) for e in cfg.entries],
                     cfg.metadata)


def test_mixed_batch_matches_hugging_face(engine):
    from vllm import SamplingParams

    from axis_steer.runtime.formats import load_caps
    from axis_steer.serving import readings, request_options

    llm, caps = engine
    offset = -3.0
    plans = [(PROMPTS[0], True, 0.0), (PROMPTS[0], False, 0.0), (PROMPTS[1], True, offset), (PROMPTS[1], False, 0.0),
             (PROMPTS[1], True, 0.0)]
    params = [SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True,
                             extra_args=request_options(cap, offset=off, readings=True)) for _, cap, off in plans]
    outs = llm.chat([p for p, _, _ in plans], params, use_tqdm=False)
    reads = readings(llm, outs)
    config = load_caps(caps)
    layers = sorted({e.layer for e in config.entries})
    dirs = {e.layer: e.direction for e in config.entries}
    for (prompt, cap, off), out, rd in zip(plans, outs, reads):
        cfg = (_offset_caps(caps, off) if off else config) if cap else None
        want_prompt, want_tokens, want_proj = hf_greedy(prompt, cfg, MAX_TOKENS, dirs)
        assert list(out.prompt_token_ids) == want_prompt
        got = list(out.outputs[0].token_ids)
        assert got == want_tokens, (cap, off, out.outputs[0].text)
        assert rd is not None and rd["capped"] == cap and rd["layers"] == layers
        check_readings(rd, cap=cap, lows=[e.lo + off for e in config.entries], want_proj=want_proj,
                       n=len(out.prompt_token_ids) + MAX_TOKENS - 1, tol=PROJ_TOL)
    # the caps change what the model says, or the test shows nothing
    assert list(outs[4].outputs[0].token_ids) != list(outs[3].outputs[0].token_ids)
    # readings are handed out once
    assert readings(llm, outs[:1]) == [None]


def test_unknown_request_option_is_an_error(engine):
    from vllm import SamplingParams

    llm, _ = engine
    # vLLM raises its VLLMValidationError (the server's HTTP 400) from our ValueError
    for extra, words in (({"axis_steer_capped": 1}, "axis_steer_capped: not an axis_steer request option"),
                         ({"axis_steer_offset": "high"}, "axis_steer_offset='high'")):
        with pytest.raises(Exception, match=words) as err:
            llm.generate(["Hello"], SamplingParams(max_tokens=2, extra_args=extra), use_tqdm=False)
        assert isinstance(err.value, ValueError) or isinstance(err.value.__cause__, ValueError)


def test_a_second_caps_file_in_one_process_is_refused(engine, tmp_path):
    from axis_steer.serving import capped_llm

    other = make_caps(tmp_path / "other.safetensors", seed=1)
    with pytest.raises(ValueError, match="one process serves one caps file"):
        capped_llm(MODEL, other)


def test_layers_are_the_model_layers(engine):
    llm, _ = engine
    (info,) = llm.collective_rpc("axis_steer_rpc", args=("info",))
    assert info["layers"] == list(CAPPED) and max(CAPPED) < N_LAYERS
