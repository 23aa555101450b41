"""The OpenAI-compatible server with axis_steer: started on 127.0.0.1 as
``python -m axis_steer.serving serve`` (vLLM's ``vllm serve``) with a caps file,
sent capped and uncapped chat requests at the same time with the ``openai``
client, checked against Hugging Face (tokens) and for their readings, sent a
request with an unknown option (HTTP 400), and stopped.

Runs in the serving environment (scripts/setup_vllm.sh); skips elsewhere."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")
torch = pytest.importorskip("torch")

from serving_fixtures import CAPPED, MODEL, PROMPTS, hf_greedy, make_caps  # noqa: E402

MAX_TOKENS = 16
START_TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import urllib.request

    folder = tmp_path_factory.mktemp("server")
    caps = make_caps(folder / "caps.safetensors")
    port = _free_port()
    env = dict(os.environ, AXIS_STEER_VLLM_CAPS=caps, VLLM_PLUGINS="axis_steer", VLLM_TARGET_DEVICE="cpu")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "axis_steer.serving", "serve", MODEL, "--host", "127.0.0.1", "--port", str(port),
         "--dtype", "float32", "--max-model-len", "512", "--enforce-eager", "--no-enable-prefix-caching",
         "--seed", "0"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    t0 = time.time()
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            log.close()
            pytest.fail(f"the server exited with {proc.returncode}:\n{(folder / 'server.log').read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.time() - t0 > START_TIMEOUT_S:
            proc.kill()
            pytest.fail(f"the server did not start in {START_TIMEOUT_S} s")
        time.sleep(1)
    print(f"server up in {time.time() - t0:.0f} s")
    yield url, caps
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def test_capped_and_uncapped_requests_at_once(server):
    import json
    import urllib.request

    from axis_steer.runtime.formats import load_caps

    url, caps = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="none")
    config = load_caps(caps)
    dirs = {e.layer: e.direction for e in config.entries}
    plans = [(PROMPTS[1], 1), (PROMPTS[1], 0), (PROMPTS[0], 1), (PROMPTS[0], 0)]

    def ask(plan):
        messages, cap = plan
        return client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=MAX_TOKENS, temperature=0.0,
            extra_body={"vllm_xargs": {"axis_steer_cap": cap, "axis_steer_readings": 1},
                        "ignore_eos": True, "return_token_ids": True},
        )

    with ThreadPoolExecutor(len(plans)) as pool:
        answers = list(pool.map(ask, plans))
    texts = []
    for (messages, cap), ans in zip(plans, answers):
        _, want, want_proj = hf_greedy(messages, config if cap else None, MAX_TOKENS, dirs)
        choice = ans.choices[0]
        assert choice.model_extra["token_ids"] == want, (cap, choice.message.content)
        texts.append(choice.message.content)
        with urllib.request.urlopen(f"{url}/axis_steer/readings?id={ans.id}", timeout=30) as r:
            body = json.loads(r.read())
        rd = body["readings"]
        assert body["id"] == ans.id and rd["capped"] == bool(cap) and rd["layers"] == list(CAPPED)
        for k in range(len(CAPPED)):
            got = torch.tensor(rd["p_after"][k])
            assert torch.allclose(got, want_proj[k][: got.shape[0]], atol=1e-3, rtol=0)
            assert any(rd["fired"][k]) == bool(cap)
        assert (min(rd["firing_rate"]) > 0) == bool(cap)
        # readings are handed out once
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/axis_steer/readings?id={ans.id}", timeout=30)
        assert err.value.code == 404
    assert texts[0] != texts[1]


def test_unknown_option_is_http_400(server):
    url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="none")
    with pytest.raises(openai.BadRequestError, match="axis_steer_layers: not an axis_steer request option"):
        client.chat.completions.create(model=MODEL, messages=PROMPTS[0], max_tokens=2,
                                       extra_body={"vllm_xargs": {"axis_steer_layers": 3}})
