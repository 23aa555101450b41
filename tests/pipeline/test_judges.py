"""The judges for models other than PersonaLlama: the OpenAI-compatible endpoint
judge against a local chat-completions server started here (a stub that speaks
the protocol: no LLM server runs on the CI machines), score parsing, the
offline embedding judge, and the agreement figures against labelled texts."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from axis_steer.errors import AxisSteerError
from axis_steer.pipeline.endpoint_judge import EndpointJudge, parse_score
from axis_steer.pipeline.judge import (
    judge_agreement,
    judge_responses,
    labelled_answers,
    rank_auc,
    spearman,
)
from axis_steer.pipeline.roles import builtin_roles

# ---- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, score",
    [
        ("3", 3),
        (" 2\n", 2),
        ("**1**", 1),
        ("Score: 2", 2),
        ("Rating = 0.", 0),
        ("The answer speaks fully in role. Score: 3", 3),
        ("I would give this 2/3.", 2),
        ("<think>It could be 1 or 3 ... it is fully in role</think>3", 3),
        ("The answer is in role, so 3.", 3),
        ("", None),
        ("fully in role", None),
        ("5", None),
        ("between 1 and 2", None),
        ("1.5", None),
    ],
)
def test_parse_score(text, score):
    assert parse_score(text) == score


# ---- a local chat-completions server ---------------------------------------------------------


class _Server:
    """A chat-completions stub: records requests, answers from ``self.answer``."""

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.fail_first = 0
        self.answer = lambda prompt: "3"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                outer.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    self.send_response(404)
                    self.end_headers()
                    return
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    self.send_response(503)
                    self.end_headers()
                    self.wfile.write(b"busy")
                    return
                content = outer.answer(body["messages"][0]["content"])
                reply = {
                    "id": "x",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def test_endpoint_judge_sends_the_roles_judge_prompt_and_parses_the_reply(server):
    def answer(prompt):
        answer = prompt.split("Answer: ", 1)[1].split("\n\nScore", 1)[0]
        return "Score: 3" if answer.startswith("Arr") else ("2" if "AI" in answer else "1")

    server.answer = answer
    judge = EndpointJudge(server.url, "judge-model", api_key="k123", workers=2)
    assert judge("Who are you?", "Arr, I be the captain!", "pirate_captain") == 3
    body = server.requests[-1]
    assert body["model"] == "judge-model" and body["temperature"] == 0.0
    prompt = body["messages"][0]["content"]
    expected = builtin_roles().role("pirate_captain").judge_prompt("Who are you?", "Arr, I be the captain!")
    assert prompt == expected and "{answer}" not in prompt
    assert server.headers[-1]["Authorization"] == "Bearer k123"
    got = judge.score_batch(["q"] * 3, ["Arr!", "As an AI I help.", "Hello."], ["pirate_captain", "wizard", "tutor"])
    assert got == [3, 2, 1]


def test_endpoint_judge_retries_busy_servers_and_fails_clearly(server):
    server.fail_first = 2
    judge = EndpointJudge(server.url, "m", retries=3)
    assert judge("q", "a", "wizard") == 3
    server.answer = lambda prompt: "I cannot decide."
    with pytest.raises(AxisSteerError, match="no score 0..3"):
        judge("q", "a", "wizard")
    assert judge.unparsed and len(server.requests) == 5  # 2 failures, 1 success, 2 tries for the unparsable one
    with pytest.raises(AxisSteerError, match="HTTP 404"):
        EndpointJudge(server.url.replace("/v1", "/nope"), "m")("q", "a", "wizard")
    with pytest.raises(ValueError, match="base_url"):
        EndpointJudge("localhost:1", "m")


def test_endpoint_judge_scores_a_run(server, tmp_path):
    from axis_steer.pipeline.runs import RunFolder

    rdir = RunFolder(tmp_path).responses
    rdir.mkdir(parents=True)
    rows = [
        {"system_prompt": "You are a wizard.", "prompt_index": 0, "question_index": q, "question": "Who are you?",
         "conversation": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": a}],
         "label": "wizard"}
        for q, a in enumerate(["Arr", "I am an AI"])
    ]
    (rdir / "wizard.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    server.answer = lambda prompt: "3" if "Answer: Arr" in prompt else "1"
    s = judge_responses(tmp_path, EndpointJudge(server.url, "m"), progress=False)
    assert s.histogram == {3: 1, 1: 1}
    assert json.loads((tmp_path / "scores" / "wizard.json").read_text()) == {"pos_p0_q0": 3, "pos_p0_q1": 1}


# ---- agreement figures -------------------------------------------------------------------------


def test_rank_statistics_against_direct_computations():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 40), rng.normal(0, 1, 50)
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]))) + 1
    assert rank_auc(pos, neg) == pytest.approx((ranks[:40].sum() - 40 * 41 / 2) / (40 * 50))
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 2], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([1.5, 1.5, 3.5, 3.5], [1, 2, 3, 4])[0, 1])


def test_judge_agreement_counts_what_the_judge_said():
    items = [{"role": "r", "answer": a, "label": lab} for a, lab in (("x", 3), ("y", 2), ("z", 0), ("w", 3))]
    fixed = {"x": 3, "y": 1, "z": 0, "w": 2}
    a = judge_agreement(lambda q, ans, role: fixed[ans], items)
    assert a.n == 4 and a.exact == 0.5 and a.within_one == 1.0
    assert a.confusion[3] == [0, 0, 1, 1] and a.confusion[2][1] == 1
    assert a.auc_in_role == pytest.approx(rank_auc([3, 2], [1, 0]))


def test_the_labelled_answers_are_well_formed():
    items = labelled_answers()
    assert len(items) >= 80
    roles = builtin_roles()
    for it in items:
        roles.role(it["role"])  # every role is a built-in one
        assert it["label"] in (0, 1, 2, 3) and it["answer"].strip()
    assert {it["set"] for it in items} == {"first", "fresh"}
    assert {it["label"] for it in items if it["set"] == "fresh"} == {0, 1, 2, 3}


# ---- the embedding judge -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedding_judge():
    pytest.importorskip("transformers")
    from axis_steer.pipeline.embedding_judge import EmbeddingJudge, minilm_folder

    try:
        minilm_folder()
    except AxisSteerError as exc:
        pytest.skip(str(exc))
    return EmbeddingJudge(builtin_roles(), self_names=["SmolLM"])


def test_embedding_judge_rules(embedding_judge):
    j = embedding_judge
    pirate = "Arr, I be Captain Redbeard! Me crew sails the seven seas for gold, rum and buried treasure."
    assert j("q", pirate, "pirate_captain") == 3
    assert j.margins([pirate], ["pirate_captain"])[0] > j.margins([pirate], ["tutor"])[0]
    assert j("q", "I'm sorry, but I can't help with that request.", "pirate_captain") == 0
    assert j("q", "I can't be a pirate captain because I am an AI, but I can help you plan a trip.", "pirate_captain") <= 1
    assert j.identifies_as_ai("Hi, I'm SmolLM!") and not j.identifies_as_ai("Arr, matey")
    names, _ = j.nearest_role([pirate, "By my wand and the ancient runes, the spell is cast."])
    assert names == ["pirate_captain", "wizard"]
    with pytest.raises(ValueError, match="no anchor"):
        j("q", "a", "default")


def test_embedding_judge_batches_agree_with_single_calls(embedding_judge):
    items = labelled_answers()[:12]
    batch = embedding_judge.score_batch([""] * 12, [i["answer"] for i in items], [i["role"] for i in items])
    single = [embedding_judge("", i["answer"], i["role"]) for i in items]
    assert batch == single
    a = judge_agreement(embedding_judge, items)
    assert a.exact == pytest.approx(np.mean([b == i["label"] for b, i in zip(batch, items)]))


def test_the_encoder_gives_unit_vectors_independent_of_batching(embedding_judge):
    enc = embedding_judge.encoder
    texts = ["short", "a somewhat longer sentence about the sea and ships", "mid length text"]
    e = enc.encode(texts)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    one = np.stack([enc.encode([t])[0] for t in texts])
    assert np.allclose(e, one, atol=1e-5)
