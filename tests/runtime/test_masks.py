"""Reading padding from attention masks (axis_steer.runtime.masks): 2-D masks,
4-D boolean and additive masks, dicts of them, static caches, and the masks
whose padding cannot be told, which are refused."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from axis_steer.errors import AxisSteerError  # noqa: E402
from axis_steer.runtime.masks import from_4d, read_padding  # noqa: E402

PADDED = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], dtype=torch.bool)


def causal_4d(valid2d, past=0, total=None, window=None):
    """(b, 1, seq, kv) bool: what transformers builds from a 2-D mask with left padding."""
    b, n = valid2d.shape
    kv = total or n
    seq = n - past
    q_pos = torch.arange(past, n)[:, None]
    k_pos = torch.arange(kv)[None, :]
    keys = torch.zeros(b, kv, dtype=torch.bool)
    keys[:, :n] = valid2d
    allowed = (k_pos <= q_pos) & keys[:, None, :]
    if window is not None:
        allowed &= k_pos > q_pos - window
    return allowed[:, None].expand(b, 1, seq, kv)


def additive(m, value=None):
    value = torch.finfo(torch.float32).min if value is None else value
    return torch.where(m, torch.tensor(0.0), torch.tensor(value))


@pytest.mark.parametrize("form", ["bool", "finfo_min", "-inf", "-1e4", "3d"])
def test_causal_left_padded_4d_masks_give_the_2d_mask(form):
    m = causal_4d(PADDED)
    if form == "finfo_min":
        m = additive(m)
    elif form == "-inf":
        m = additive(m, float("-inf"))
    elif form == "-1e4":
        m = additive(m, -1e4)
    elif form == "3d":
        m = m[:, 0]
    assert torch.equal(from_4d(m, 3, 5), PADDED)


def test_sliding_windows_heads_and_a_decode_step():
    assert torch.equal(from_4d(causal_4d(PADDED, window=2).expand(3, 4, 5, 5), 3, 5), PADDED)
    step = torch.cat([PADDED, torch.ones(3, 1, dtype=torch.bool)], 1)
    assert torch.equal(from_4d(causal_4d(step, past=5), 3, 1), torch.ones(3, 1, dtype=torch.bool))


def test_rows_opened_up_by_the_fully_masked_row_workaround_are_padding():
    m = causal_4d(PADDED).clone()
    fully_masked = ~m.any(-1, keepdim=True)
    m |= fully_masked  # SDPA's workaround: a query row that sees nothing sees everything
    assert m[0, 0, 0].all() and m[0, 0, 1].all()
    assert torch.equal(from_4d(m, 3, 5), PADDED)


def test_a_broadcast_key_mask_of_a_bidirectional_encoder():
    keys = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], dtype=torch.bool)
    m = additive(keys[:, None, None, :])  # (b, 1, 1, kv), BERT's extended mask
    assert torch.equal(from_4d(m, 3, 5), keys)
    full = keys[:, None, None, :].expand(3, 1, 5, 5)  # the same, expanded over queries
    assert torch.equal(from_4d(full, 3, 5), keys)


def test_a_static_cache_mask_spans_the_cache_and_the_past_is_a_device_counter():
    step = torch.cat([PADDED, torch.ones(3, 2, dtype=torch.bool)], 1)  # 7 tokens so far
    m = causal_4d(step, past=5, total=16)  # (3, 1, 2, 16): a cache of 16
    valid, past, _ = read_padding(m, None, 3, 2, torch.tensor(5))
    assert torch.equal(valid, torch.ones(3, 2, dtype=torch.bool)) and int(past) == 5
    prefill = causal_4d(PADDED, total=16)
    valid, past, _ = read_padding(prefill, None, 3, 5, torch.tensor(0))
    assert torch.equal(valid, PADDED)


def test_read_padding_prefers_2d_masks_and_reads_dicts():
    am = PADDED.long()
    valid, past, source = read_padding(am, None, 3, 5)
    assert torch.equal(valid, PADDED) and past == 0 and "backbone" in source
    valid, past, source = read_padding({"full_attention": causal_4d(PADDED)}, am, 3, 5)
    assert torch.equal(valid, PADDED) and "top-level" in source
    masks = {"sliding_attention": causal_4d(PADDED, window=2), "full_attention": causal_4d(PADDED)}
    valid, past, source = read_padding(masks, None, 3, 5)
    assert torch.equal(valid, PADDED) and "4-D" in source
    step = torch.cat([am, torch.ones(3, 1, dtype=torch.long)], 1)
    valid, past, _ = read_padding(None, step, 3, 1, None)
    assert past == 5 and valid.all()  # the top-level mask's width is the past
    valid, past, source = read_padding(None, None, 3, 1, 9)
    assert valid is None and past == 9 and "every token" in source


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda: torch.cat([causal_4d(PADDED), ~causal_4d(PADDED)], 1), "differs between heads"),
        (lambda: causal_4d(PADDED).float(), "0s and 1s"),
        (lambda: torch.ones(3, 1, 4, 5, dtype=torch.bool), "fits neither"),
        (lambda: torch.ones(3, 1, 5, 3, dtype=torch.bool), "fits neither"),
        (lambda: causal_4d(PADDED) | torch.eye(5, dtype=torch.bool)[None, None, :, :].roll(1, -1), "real tokens attend"),
    ],
)
def test_masks_whose_padding_cannot_be_told_are_refused(build, words):
    m = build()
    if words == "real tokens attend":
        m = m.clone()
        m[0, 0, 3, 1] = True  # a real token attends a padded position
    with pytest.raises(AxisSteerError, match=words):
        from_4d(m, 3, 5)


def test_compiled_code_applies_the_rule_without_checks():
    m = causal_4d(PADDED).float()  # ambiguous in eager mode
    assert from_4d(m, 3, 5, check=False).all()  # 1.0 > -1e4: read as additive


def test_a_mask_of_another_kind_is_refused():
    class BlockMask:
        pass

    with pytest.raises(AxisSteerError, match="BlockMask"):
        read_padding({"full_attention": BlockMask()}, None, 3, 5)
