"""Judge, role vectors, the axis and persona space, checked against direct
computations from the per-response activations."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from axis_steer.pipeline.axis import compute_axis, load_persona_space, load_role_vectors  # noqa: E402
from axis_steer.pipeline.extract import extract_activations  # noqa: E402
from axis_steer.pipeline.generate import generate_responses  # noqa: E402
from axis_steer.pipeline.judge import judge_info, judge_responses, load_run_scores  # noqa: E402
from axis_steer.runtime import formats  # noqa: E402

from chat_fixtures import small_run_setup  # noqa: E402

torch.set_num_threads(1)
QUIET = dict(progress=False)
ROLES = ("dragon", "tutor", "ghost", "librarian")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    rs, tok, model = small_run_setup(roles=ROLES)
    out = tmp_path_factory.mktemp("base")
    generate_responses(model, tok, rs, out, batch_size=8, max_new_tokens=10, **QUIET)
    return rs, tok, model, out


def fresh(base, path, *, extract=True, **kw):
    rs, tok, model, out = base
    (path / "responses").mkdir(parents=True)
    for p in (out / "responses").glob("*"):
        (path / "responses" / p.name).write_text(p.read_text())
    if extract:
        extract_activations(model, tok, path, batch_size=8, **QUIET, **kw)
    return path


def per_sample(path, role):
    return formats.load_activations(path / "activations" / f"{role}.pt")


def parity_judge(q, a, role):
    if role == "ghost":
        return 1
    return 3 if len(a) % 2 == 0 or "typical" in q else 2


def test_axis_without_judge(base, tmp_path):
    d = fresh(base, tmp_path / "r", per_sample="pt")
    s = compute_axis(d, min_count=1, reference_vectors=True, **QUIET)
    default = torch.stack(list(per_sample(d, "default").values())).double().mean(0)
    roles = sorted(ROLES)
    rvs = [torch.stack(list(per_sample(d, r).values())).double().mean(0) for r in roles]
    want = default - torch.stack(rvs).mean(0)
    axis = formats.load_axis(d / "axis.safetensors")
    torch.testing.assert_close(axis.vectors.double(), want, rtol=1e-5, atol=1e-6)
    m = axis.metadata
    assert m["judged"] is False and m["counting"] == "every role response (no judge)"
    assert (
        m["roles"] == roles
        and m["role_counts"] == {r: 6 for r in roles}
        and m["default_count"] == 6
    )
    assert m["layers"] == [0, 1, 2] and m["method"] == "default - mean(role vectors)"
    ref = formats.load_axis(d / "axis.pt")
    torch.testing.assert_close(ref.vectors, axis.vectors)
    assert ref.metadata["judged"] is False
    rv = load_role_vectors(d)
    assert rv.names == roles and rv.counts == [6] * 4
    torch.testing.assert_close(rv.vectors.double(), torch.stack(rvs), rtol=1e-5, atol=1e-6)
    vecs = formats.load_vectors(d / "vectors")
    assert sorted(vecs) == ["default", *roles] and vecs["dragon"].type == "mean"
    torch.testing.assert_close(vecs["default"].vector.double(), default, rtol=1e-5, atol=1e-6)
    assert "no judge" in str(s) and "4 roles" in str(s)
    for p in s.plots:
        assert p.exists() and p.stat().st_size > 1000


def test_persona_space_matches_numpy_pca(base, tmp_path):
    d = fresh(base, tmp_path / "r")
    s = compute_axis(d, min_count=1, n_components=10, **QUIET)
    space = load_persona_space(d)
    rv = load_role_vectors(d)
    axis = formats.load_axis(d / "axis.safetensors")
    assert space.names == rv.names and space.layers == [0, 1, 2]
    k = space.variance_ratio.shape[1]
    assert k == len(rv.names) - 1
    for j, layer in enumerate(space.layers):
        x = rv.vectors[:, j].double().numpy()
        xc = x - x.mean(0)
        _, sv, vt = np.linalg.svd(xc, full_matrices=False)
        np.testing.assert_allclose(
            space.variance_ratio[j].numpy(), (sv**2 / (sv**2).sum())[:k], rtol=1e-4, atol=1e-6
        )
        a = axis.vectors[layer].double().numpy()
        a = a / np.linalg.norm(a)
        cos = float(space.cos_pc1_axis[j])
        assert cos >= 0 and abs(cos - abs(vt[0] @ a)) < 1e-4
        assert float(space.components[j, 0].double() @ torch.as_tensor(a)) >= 0
        # loadings reconstruct the centred role vectors (k = n_roles - 1 keeps all variance)
        rec = space.loadings[j].double().numpy() @ space.components[j].double().numpy()
        np.testing.assert_allclose(rec, xc, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(space.axis_projection[j].numpy(), x @ a, rtol=1e-4, atol=1e-6)
    assert s.space is not None


def test_min_count_skips_roles_and_says_why(base, tmp_path):
    d = fresh(base, tmp_path / "r")
    with pytest.raises(ValueError, match="min_count=7"):
        compute_axis(d, min_count=7, **QUIET)
    s = compute_axis(d, min_count=6, plots=False, **QUIET)
    assert len(s.role_vectors.names) == 4


def test_judge_before_extraction_filters_by_score(base, tmp_path):
    d = fresh(base, tmp_path / "r", extract=False)
    js = judge_responses(d, parity_judge, **QUIET)
    scores = load_run_scores(d)
    assert sorted(scores) == sorted(ROLES) and "default" not in scores
    for role, sc in scores.items():
        assert formats.load_scores(d / "scores" / f"{role}.json") == sc and len(sc) == 6
    assert sum(js.histogram.values()) == 24 and judge_info(d)["judged"] is True
    extract_activations(base[2], base[1], d, per_sample="pt", **QUIET)
    with pytest.warns(UserWarning, match="skipped"):
        s = compute_axis(d, min_count=1, plots=False, **QUIET)
    rv = s.role_vectors
    assert rv.metadata["judged"] is True and rv.metadata["min_score"] == 3
    for role, count, vec in zip(rv.names, rv.counts, rv.vectors):
        keep = [k for k, v in scores[role].items() if v == 3]
        acts = per_sample(d, role)
        assert count == len(keep)
        torch.testing.assert_close(
            vec.double(),
            torch.stack([acts[k] for k in keep]).double().mean(0),
            rtol=1e-5,
            atol=1e-6,
        )
    assert rv.metadata["skipped"] == {"ghost": "0 responses passing the judge < min_count=1"}
    assert "ghost" not in rv.names and len(rv.names) == 3
    assert "judge >= 3" in str(s)
    # judge=False ignores the scores
    s2 = compute_axis(d, min_count=1, judge=False, plots=False, **QUIET)
    assert s2.role_vectors.counts == [6] * 4


def test_judged_after_extraction_uses_per_sample_files_or_explains(base, tmp_path):
    with_ps = fresh(base, tmp_path / "a", per_sample="pt")
    judge_responses(with_ps, lambda q, a, r: 3, **QUIET)
    s = compute_axis(with_ps, min_count=1, plots=False, **QUIET)
    assert s.role_vectors.counts == [6] * 4 and s.role_vectors.metadata["judged"] is True
    without = fresh(base, tmp_path / "b")
    judge_responses(without, lambda q, a, r: 3, **QUIET)
    with pytest.raises(ValueError, match="restart=True"):
        compute_axis(without, min_count=1, **QUIET)


def test_judge_from_reference_scores_folder(base, tmp_path):
    d = fresh(base, tmp_path / "r", extract=False)
    src = tmp_path / "scores_in"
    src.mkdir()
    for role in ROLES:
        formats.save_scores(
            src / f"{role}.json",
            {formats.response_key(p, q): 3 for p in range(2) for q in range(3)},
        )
    s = judge_responses(d, src, **QUIET)
    assert s.n_scored == 24 and load_run_scores(d)["ghost"]["pos_p1_q2"] == 3
    assert json.loads((d / "scores" / "judge.json").read_text())["sources"] == [str(src)]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ghost.json").write_text(json.dumps({"pos_p0_q0": 5}))
    with pytest.raises(ValueError, match=r"ghost\.json: score pos_p0_q0 = 5"):
        judge_responses(d, bad, **QUIET)


def test_judge_callable_must_return_0_to_3(base, tmp_path):
    d = fresh(base, tmp_path / "r", extract=False)
    with pytest.raises(ValueError, match="expected an integer 0..3"):
        judge_responses(d, lambda q, a, r: 4, **QUIET)
    with pytest.raises(ValueError, match="expected an integer 0..3"):
        judge_responses(d, lambda q, a, r: 2.5, **QUIET)
    with pytest.raises(TypeError, match="callable"):
        judge_responses(d, 3, **QUIET)
    # resumable: scores written before an error are kept, the rest are added
    n = {"k": 0}

    def flaky(q, a, r):
        n["k"] += 1
        if n["k"] == 10:
            raise RuntimeError("judge API down")
        return 3

    with pytest.raises(RuntimeError):
        judge_responses(d, flaky, **QUIET)
    s = judge_responses(d, lambda q, a, r: 3, **QUIET)
    assert s.n_before == 9 and s.n_scored == 15


def test_style_judge_for_the_persona_model():
    from axis_steer.personas import style_judge, style_score

    text = "Arr, me hearties! Ahoy, matey, the treasure be buried on the island, savvy?"
    assert style_judge("Where is the gold?", text, "pirate") == style_score(text, "pirate")
    assert 0 <= style_judge("q", "Photosynthesis is how plants make food.", "pirate") <= 3
