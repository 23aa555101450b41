"""Bad arguments to the pipeline's entry points (generate, judge, extract, axis,
calibrate, project, evaluate, and their helpers): counts that are floats or
bools, non-finite or out-of-range settings, layers of the wrong type, one
string where a list of names belongs, conversations that are not message
lists. Each is refused before any model work, naming the argument. See
``tests/bad_input.py``."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from axis_steer.pipeline.axis import compute_axis, compute_role_vectors  # noqa: E402
from axis_steer.pipeline.batching import batched, pad_batch  # noqa: E402
from axis_steer.pipeline.calibrate import calibrate, thresholds_from_projections  # noqa: E402
from axis_steer.pipeline.evaluate import evaluate, load_multiple_choice  # noqa: E402
from axis_steer.pipeline.extract import (  # noqa: E402
    extract_activations,
    residual_norms,
    response_means,
    token_projections,
)
from axis_steer.pipeline.generate import generate_responses  # noqa: E402
from axis_steer.pipeline.judge import judge_responses  # noqa: E402
from axis_steer.pipeline.project import project_conversations  # noqa: E402
from axis_steer.pipeline.roles import builtin_roles  # noqa: E402
from axis_steer.pipeline.spans import prompt_ids  # noqa: E402
from axis_steer.runtime.formats import Axis  # noqa: E402
from axis_steer.runtime.hooks import Attachment  # noqa: E402

from bad_input import bad, expect_error, params  # noqa: E402
from chat_fixtures import small_run_setup  # noqa: E402

NAN, INF = math.nan, math.inf
Q = dict(progress=False)
CONV = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """A run folder with responses and an axis, its model and tokenizer; ``file``
    is a plain file where a folder belongs."""
    rs, tok, model = small_run_setup()
    run = tmp_path_factory.mktemp("bad_run")
    generate_responses(model, tok, rs, run, batch_size=6, max_new_tokens=4, **Q)
    n, d = len(model.model.layers), model.config.hidden_size
    Axis(torch.randn(n, d), {"layers": list(range(n))}).save(run / "axis.safetensors")
    file = run / "a_file.txt"
    file.write_text("x")
    return dict(rs=rs, tok=tok, model=model, run=run, file=file, n=n, d=d)


def gen(c, **kw):
    return generate_responses(c["model"], c["tok"], c["rs"], c["run"] / "gen", **dict(Q, **kw))


def ext(c, **kw):
    return extract_activations(c["model"], c["tok"], c["run"], **dict(Q, **kw))


def cal(c, percentiles=(0.25,), windows=None, **kw):
    return calibrate(c["model"], c["tok"], c["run"], percentiles, windows, **dict(Q, **kw))


def proj(c, convs=(CONV,), layers=(1,), **kw):
    return project_conversations(c["model"], c["tok"], Attachment(c["model"], torch.randn(c["n"], c["d"])), list(convs), layers, **kw)


def ev(c, **kw):
    att = kw.pop("att", None) or Attachment(c["model"], torch.randn(c["n"], c["d"]))
    return evaluate(c["model"], c["tok"], att, texts=["a b"], **kw)


BAD = [
    # ---- generate_responses
    bad("generate-temperature-inf", lambda c: gen(c, temperature=INF), ValueError, "temperature", "inf"),
    bad("generate-temperature-nan", lambda c: gen(c, temperature=NAN), ValueError, "temperature", "nan"),
    bad("generate-temperature-negative", lambda c: gen(c, temperature=-0.5), ValueError, "temperature", "-0.5"),
    bad("generate-temperature-str", lambda c: gen(c, temperature="0.7"), TypeError, "temperature", "str"),
    bad("generate-temperature-True", lambda c: gen(c, temperature=True), TypeError, "temperature", "bool"),
    bad("generate-top-p-zero", lambda c: gen(c, top_p=0.0), ValueError, "top_p", "(0, 1]"),
    bad("generate-top-p-above-one", lambda c: gen(c, top_p=1.5), ValueError, "top_p"),
    bad("generate-top-p-nan", lambda c: gen(c, top_p=NAN), ValueError, "top_p"),
    bad("generate-batch-zero", lambda c: gen(c, batch_size=0), ValueError, "batch_size", "positive"),
    bad("generate-batch-float", lambda c: gen(c, batch_size=2.5), TypeError, "batch_size", "2.5"),
    bad("generate-batch-True", lambda c: gen(c, batch_size=True), TypeError, "batch_size", "bool"),
    bad("generate-max-new-tokens-zero", lambda c: gen(c, max_new_tokens=0), ValueError, "max_new_tokens"),
    bad("generate-max-new-tokens-float", lambda c: gen(c, max_new_tokens=8.0), TypeError, "max_new_tokens"),
    bad("generate-seed-float", lambda c: gen(c, seed=1.5), TypeError, "seed"),
    bad("generate-greedy-str", lambda c: gen(c, greedy="yes"), TypeError, "greedy"),
    bad("generate-max-items-negative", lambda c: gen(c, max_items=-1), ValueError, "max_items"),
    bad("generate-n-questions-float", lambda c: gen(c, n_questions=2.5), TypeError, "n_questions", "2.5"),
    bad("generate-n-questions-True", lambda c: gen(c, n_questions=True), TypeError, "n_questions", "bool"),
    bad("generate-n-prompts-zero", lambda c: gen(c, n_prompts=0), ValueError, "n_prompts"),
    bad("generate-roles-one-string", lambda c: gen(c, roles="dragon"), TypeError, "roles", "'dragon'"),
    bad("generate-out-dir-is-a-file", lambda c: generate_responses(c["model"], c["tok"], c["rs"], c["file"], **Q), ValueError, "out_dir", "not a folder"),
    bad("role-set-select-float", lambda c: builtin_roles().select(n_questions=1.5), TypeError, "n_questions"),
    # ---- judge_responses
    bad("judge-not-callable", lambda c: judge_responses(c["run"], 5, **Q), TypeError, "judge", "callable"),
    bad("judge-overwrite-str", lambda c: judge_responses(c["run"], lambda q, a, r: 3, overwrite="yes", **Q), TypeError, "overwrite"),
    bad("judge-roles-one-string", lambda c: judge_responses(c["run"], lambda q, a, r: 3, roles="dragon", **Q), TypeError, "roles"),
    bad("judge-run-missing", lambda c: judge_responses(c["run"] / "nope", lambda q, a, r: 3, **Q), FileNotFoundError, "out_dir", "no such folder"),
    bad("judge-returns-bool", lambda c: judge_responses(c["run"], lambda q, a, r: True, overwrite=True, **Q), ValueError, "expected an integer 0..3"),
    # ---- extract_activations and friends
    bad("extract-batch-zero", lambda c: ext(c, batch_size=0), ValueError, "batch_size"),
    bad("extract-batch-float", lambda c: ext(c, batch_size=1.5), TypeError, "batch_size"),
    bad("extract-layers-str", lambda c: ext(c, layers="0"), TypeError, "layers", "'0'"),
    bad("extract-layers-True", lambda c: ext(c, layers=[True]), TypeError, "layers[0]", "bool"),
    bad("extract-layers-float", lambda c: ext(c, layers=[0, 1.7]), TypeError, "layers[1]", "1.7"),
    bad("extract-layers-empty", lambda c: ext(c, layers=[]), ValueError, "layers", "empty"),
    bad("extract-layers-out-of-range", lambda c: ext(c, layers=[9]), ValueError, "layers[0]", "out of range"),
    bad("extract-max-length-zero", lambda c: ext(c, max_length=0), ValueError, "max_length"),
    bad("extract-checkpoint-every-float", lambda c: ext(c, checkpoint_every=0.5), TypeError, "checkpoint_every"),
    bad("extract-per-sample", lambda c: ext(c, per_sample="npz"), ValueError, "per_sample"),
    bad("extract-turns", lambda c: ext(c, turns="each"), ValueError, "turns"),
    bad("extract-out-dir-is-a-file", lambda c: extract_activations(c["model"], c["tok"], c["file"], **Q), ValueError, "out_dir", "not a folder"),
    bad("response-means-turns", lambda c: response_means(c["model"], c["tok"], [CONV], turns=3), TypeError, "turns"),
    bad("response-means-conversations-str", lambda c: response_means(c["model"], c["tok"], "hello"), TypeError, "conversations"),
    bad("response-means-role-int", lambda c: response_means(c["model"], c["tok"], [[{"role": 5, "content": "x"}, CONV[1]]]), ValueError, "conversations[0][0]: role = 5"),
    bad("response-means-content-None", lambda c: response_means(c["model"], c["tok"], [[{"role": "user", "content": None}, CONV[1]]]), ValueError, "content = None"),
    bad("response-means-message-str", lambda c: response_means(c["model"], c["tok"], [["hello", CONV[1]]]), ValueError, "conversations[0][0] = 'hello'"),
    bad("token-projections-int-directions", lambda c: token_projections(c["model"], c["tok"], [CONV], np.ones((1, c["d"]), np.int64), [0]), TypeError, "directions", "int64"),
    bad("token-projections-complex-directions", lambda c: token_projections(c["model"], c["tok"], [CONV], torch.ones(1, c["d"], dtype=torch.complex64), [0]), TypeError, "directions", "complex"),
    bad("token-projections-1d-directions", lambda c: token_projections(c["model"], c["tok"], [CONV], torch.ones(c["d"]), [0]), ValueError, "directions", "shape"),
    bad("residual-norms-layers-float", lambda c: residual_norms(c["model"], {"input_ids": torch.ones(1, 3, dtype=torch.long)}, [0.5]), TypeError, "layers[0]"),
    bad("residual-norms-inputs-None", lambda c: residual_norms(c["model"], None), TypeError, "inputs"),
    bad("prompt-ids-role-int", lambda c: prompt_ids(c["tok"], [{"role": 1, "content": "x"}]), ValueError, "conversation[0]: role = 1"),
    # ---- compute_axis / compute_role_vectors
    bad("axis-min-score-four", lambda c: compute_axis(c["run"], min_score=4, **Q), ValueError, "min_score", "0..3"),
    bad("axis-min-score-True", lambda c: compute_axis(c["run"], min_score=True, **Q), TypeError, "min_score", "bool"),
    bad("axis-min-count-zero", lambda c: compute_role_vectors(c["run"], min_count=0), ValueError, "min_count"),
    bad("axis-min-count-float", lambda c: compute_role_vectors(c["run"], min_count=2.5), TypeError, "min_count"),
    bad("axis-judge-str", lambda c: compute_role_vectors(c["run"], judge="yes"), TypeError, "judge"),
    bad("axis-roles-one-string", lambda c: compute_role_vectors(c["run"], roles="dragon"), TypeError, "roles"),
    bad("axis-run-missing", lambda c: compute_role_vectors(c["run"] / "nope"), FileNotFoundError, "out_dir", "no such folder"),
    bad("axis-run-is-a-file", lambda c: compute_role_vectors(c["file"]), ValueError, "out_dir", "not a folder"),
    # ---- calibrate
    bad("calibrate-percentile-nan", lambda c: cal(c, (NAN,)), ValueError, "percentiles[0]", "nan"),
    bad("calibrate-percentile-25", lambda c: cal(c, (25,)), ValueError, "percentiles[0]", "outside"),
    bad("calibrate-percentile-str", lambda c: cal(c, ("0.25",)), TypeError, "percentiles[0]", "str"),
    bad("calibrate-percentile-True", lambda c: cal(c, (True,)), TypeError, "percentiles[0]", "bool"),
    bad("calibrate-percentiles-scalar", lambda c: cal(c, 0.25), TypeError, "percentiles", "list"),
    bad("calibrate-percentiles-empty", lambda c: cal(c, ()), ValueError, "percentiles", "empty"),
    bad("calibrate-window-empty-range", lambda c: cal(c, windows=[(1, 1)]), ValueError, "windows", "not a layer range"),
    bad("calibrate-window-float", lambda c: cal(c, windows=[(0.5, 2)]), TypeError, "windows[0] start", "0.5"),
    bad("calibrate-window-not-pair", lambda c: cal(c, windows=[(1,)]), TypeError, "windows[0]", "pair"),
    bad("calibrate-windows-str", lambda c: cal(c, windows="0:2"), TypeError, "windows"),
    bad("calibrate-windows-empty", lambda c: cal(c, windows=[]), ValueError, "windows", "empty"),
    bad("calibrate-batch-zero", lambda c: cal(c, batch_size=0), ValueError, "batch_size"),
    bad("calibrate-max-per-role-float", lambda c: cal(c, max_per_role=1.5), TypeError, "max_per_role"),
    bad("thresholds-percentile-above-one", lambda c: thresholds_from_projections(np.zeros((3, 2)), [1.5]), ValueError, "percentiles[0]", "outside"),
    bad("thresholds-percentile-str", lambda c: thresholds_from_projections(np.zeros((3, 2)), ["a"]), TypeError, "percentiles[0]"),
    # ---- project_conversations
    bad("project-role-int", lambda c: proj(c, [[{"role": 5, "content": None}]]), ValueError, "conversations[0][0]: role = 5"),
    bad("project-content-None", lambda c: proj(c, [[{"role": "user", "content": None}]]), ValueError, "conversations[0][0]: content = None"),
    bad("project-conversation-str", lambda c: proj(c, ["hello"]), ValueError, "conversations[0]"),
    bad("project-conversations-str", lambda c: project_conversations(c["model"], c["tok"], Attachment(c["model"]), "hi", [1]), TypeError, "conversations"),
    bad("project-conversations-empty", lambda c: proj(c, []), ValueError, "conversations", "empty"),
    bad("project-layers-empty", lambda c: proj(c, layers=[]), ValueError, "layers", "empty"),
    bad("project-layers-str", lambda c: proj(c, layers="1"), TypeError, "layers"),
    bad("project-layers-out-of-range", lambda c: proj(c, layers=[9]), ValueError, "layers[0]", "out of range"),
    bad("project-batch-zero", lambda c: proj(c, batch_size=0), ValueError, "batch_size"),
    bad("project-attachment-None", lambda c: project_conversations(c["model"], c["tok"], None, [CONV], [1]), TypeError, "attachment"),
    # ---- evaluate
    bad("evaluate-batch-zero", lambda c: ev(c, batch_size=0), ValueError, "batch_size"),
    bad("evaluate-max-new-tokens-float", lambda c: ev(c, max_new_tokens=2.5), TypeError, "max_new_tokens"),
    bad("evaluate-max-length-True", lambda c: ev(c, max_length=True), TypeError, "max_length"),
    bad("evaluate-attachment-str", lambda c: evaluate(c["model"], c["tok"], "caps", texts=["a"]), TypeError, "attachment"),
    bad("evaluate-mc-answer-True", lambda c: load_multiple_choice(_mc(c, '{"question": "q", "choices": ["a", "b"], "answer": true}')), ValueError, "'answer' = True"),
    # ---- batching
    bad("pad-batch-side", lambda c: pad_batch([[1]], 0, side="top"), ValueError, "side", "'top'"),
    bad("pad-batch-pad-float", lambda c: pad_batch([[1]], 0.5, side="left"), TypeError, "pad"),
    bad("batched-float", lambda c: list(batched([1, 2, 3], 1.5)), TypeError, "batch_size"),
    bad("batched-zero", lambda c: list(batched([1, 2, 3], 0)), ValueError, "batch_size"),
]


def _mc(c, line):
    p = c["run"] / "mc.jsonl"
    p.write_text(line + "\n")
    return p


@pytest.mark.parametrize("case", params(BAD))
def test_entry_points_refuse(case, ctx):
    expect_error(case, ctx)
