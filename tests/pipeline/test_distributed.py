"""Data-parallel run on the CPU: two gloo ranks started like torchrun (only the
launcher's environment variables) give the same responses, sums, per-response
activations, axis, thresholds and firing report as one process."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import torch.distributed as td  # noqa: E402

from axis_steer.pipeline.extract import load_sums  # noqa: E402
from axis_steer.runtime import formats  # noqa: E402

from chat_fixtures import dist_worker, free_port, run_pipeline  # noqa: E402

pytestmark = pytest.mark.skipif(
    not td.is_available() or not td.is_gloo_available(), reason="needs torch.distributed with gloo"
)


def test_two_ranks_match_one_process(tmp_path):
    import torch.multiprocessing as mp

    single, multi = tmp_path / "single", tmp_path / "multi"
    run_pipeline(single)
    mp.spawn(dist_worker, args=(2, free_port(), str(multi)), nprocs=2, join=True)

    for p in sorted((single / "responses").glob("*.jsonl")):
        assert (multi / "responses" / p.name).read_text() == p.read_text()
    assert not list((multi / "responses").glob(".rank*"))
    a, b = load_sums(single), load_sums(multi)
    assert a.keys == b.keys and a.counts == b.counts and a.tokens == b.tokens
    for g in a.sums:
        torch.testing.assert_close(b.sums[g], a.sums[g], rtol=1e-5, atol=1e-6)
    for p in sorted((single / "activations").glob("*.pt")):
        pa, pb = (
            formats.load_activations(p),
            formats.load_activations(multi / "activations" / p.name),
        )
        assert list(pa) == list(pb)
        for k in pa:
            torch.testing.assert_close(pb[k], pa[k], rtol=1e-5, atol=1e-6)
    ax_a, ax_b = (
        formats.load_axis(single / "axis.safetensors"),
        formats.load_axis(multi / "axis.safetensors"),
    )
    torch.testing.assert_close(ax_b.vectors, ax_a.vectors, rtol=1e-4, atol=1e-6)
    ta, _ = formats.load_tensors(single / "calibration" / "thresholds.safetensors")
    tb, _ = formats.load_tensors(multi / "calibration" / "thresholds.safetensors")
    torch.testing.assert_close(tb["thresholds"], ta["thresholds"], rtol=1e-4, atol=1e-6)
    ra = formats.load_capping_config(single / "calibration" / "capping_config.pt")
    rb = formats.load_capping_config(multi / "calibration" / "capping_config.pt")
    assert ra.experiment_ids() == rb.experiment_ids()
    # the held-out firing report comes from a forward pass sharded over the ranks
    rep_a = json.loads((single / "calibration" / "report.json").read_text())
    rep_b = json.loads((multi / "calibration" / "report.json").read_text())
    for k in ("responses", "tokens", "in_sample"):
        assert rep_a["heldout"][k] == rep_b["heldout"][k]
    for q, per_layer in rep_a["fire_per_layer"].items():
        for layer, v in per_layer.items():
            assert math.isclose(rep_b["fire_per_layer"][q][layer], v, abs_tol=1e-7)
