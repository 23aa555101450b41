"""axis_steer with ``tensor_parallel_size=2`` on the CPU: every rank holds the
replicated residual stream after the all-reduce and applies the same caps to
it, so a mixed batch (capped and uncapped requests) gives HF's tokens with
the same caps attached (and plain HF's for the uncapped ones), the readings
from rank 0 equal HF's projections, and both ranks report the same caps and
hand their readings out once.

The engine runs in its own process (tensor_parallel_engine.py): a process
serves one caps file, and the offline tests' engine is already in this one.
Runs in the serving environment on a machine with at least 2 cores; about
two to four minutes, most of it the two workers' start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm")
torch = pytest.importorskip("torch")

from serving_fixtures import MODEL, PROMPTS, check_readings, hf_greedy, make_caps  # noqa: E402

MAX_TOKENS = 20
#: the all-reduce sums the two ranks' partial products in another order than
#: one rank does: a few more float32 ulps than the offline tests' 1e-3
PROJ_TOL = 2e-3
ENGINE = Path(__file__).with_name("tensor_parallel_engine.py")

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two ranks need two cores")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    caps = make_caps(tmp_path_factory.mktemp("caps") / "caps.safetensors")
    plans = [(PROMPTS[0], True), (PROMPTS[1], False), (PROMPTS[1], True)]
    spec = {"model": MODEL, "caps": caps, "max_tokens": MAX_TOKENS, "plans": plans}
    env = {k: v for k, v in os.environ.items() if k not in ("AXIS_STEER_VLLM_CAPS", "VLLM_ENABLE_V1_MULTIPROCESSING")}
    proc = subprocess.run([sys.executable, str(ENGINE), json.dumps(spec)], capture_output=True, text=True, env=env,
                          timeout=900, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"engine failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return caps, plans, json.loads(lines[-1][len("RESULT "):])


def test_two_ranks_match_hugging_face(run):
    from axis_steer.runtime.formats import load_caps

    caps, plans, got = run
    config = load_caps(caps)
    layers = sorted({e.layer for e in config.entries})
    dirs = {e.layer: e.direction for e in config.entries}
    for (messages, cap), prompt, tokens, rd in zip(plans, got["prompts"], got["tokens"], got["readings"]):
        want_prompt, want_tokens, want_proj = hf_greedy(messages, config if cap else None, MAX_TOKENS, dirs)
        assert prompt == want_prompt
        assert tokens == want_tokens, cap
        assert rd["capped"] == cap and rd["layers"] == layers
        check_readings(rd, cap=cap, lows=[e.lo for e in config.entries], want_proj=want_proj,
                       n=len(prompt) + MAX_TOKENS - 1, tol=PROJ_TOL)
        assert [any(f) for f in rd["fired"]] == [cap] * len(layers)
    # the caps change what the model says, or the comparison shows nothing
    assert got["tokens"][2] != got["tokens"][1]


def test_every_rank_serves_the_same_caps(run):
    caps, _, got = run
    info = got["info"]
    assert len(info) == 2
    assert info[0]["layers"] == info[1]["layers"] and info[0]["caps"] == info[1]["caps"] == str(Path(caps).resolve())
    # readings were taken on every rank, so none is left behind on either
    assert [i["pending_readings"] for i in info] == [0, 0]
