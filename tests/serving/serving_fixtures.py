"""What the serving tests share: the model (the project's small Llama, saved
in float32), a caps file for it, chat prompts, and the Hugging Face reference
(greedy decoding with the same caps attached, and the projections of the
stream at the capped layers for every token)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from axis_steer.runtime.formats import CapConfig, CapEntry

MODEL = str(Path(__file__).resolve().parents[2] / "axis_steer" / "personas" / "data" / "persona-llama")
N_LAYERS, HIDDEN = 8, 128
#: half of the 8 layers; the floor is far above the stream's projections on
#: these random directions (about +-3), so caps fire on every token
CAPPED = (2, 3, 4, 5)
TAU = 8.0
PROMPTS = [
    [{"role": "user", "content": "Tell me about the pyramids."}],
    [{"role": "user", "content": "Who are you?"}],
]

#: the engine every serving test starts: float32 for parity with HF, prefix
#: caching off (cached prompt tokens would have no readings)
ENGINE_KW = dict(dtype="float32", max_model_len=512, enable_prefix_caching=False, seed=0)


def make_caps(path, seed: int = 0, tau: float = TAU) -> str:
    g = torch.Generator().manual_seed(seed)
    entries = []
    for layer in CAPPED:
        u = torch.randn(HIDDEN, generator=g, dtype=torch.float64)
        entries.append(CapEntry(layer, (u / u.norm()).float(), tau, math.inf))
    CapConfig(entries, {"side": "floor", "n_layers": N_LAYERS}).save(path)
    return str(path)


_HF = {}


def _hf():
    if not _HF:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _HF["tok"] = AutoTokenizer.from_pretrained(MODEL)
        _HF["model"] = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    return _HF["tok"], _HF["model"]


def hf_greedy(messages, config: CapConfig | None, max_tokens: int, dirs: dict) -> tuple[list[int], list[int], list[torch.Tensor]]:
    """HF's greedy continuation of ``max_tokens`` tokens (EOS not special) with
    ``config`` attached (None: plain), by full forward passes; returns the
    prompt ids, the new ids, and per layer of ``dirs`` the projection on its
    direction of the stream after that layer for every token."""
    from axis_steer.runtime.hooks import Attachment

    tok, model = _hf()
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    prompt = ids[0].tolist()
    att = Attachment(model)
    if config is not None:
        att.cap_config(config)
    with att, torch.no_grad():
        for _ in range(max_tokens):
            nxt = model(ids).logits[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
        full = model(ids, output_hidden_states=True)
    proj = [(full.hidden_states[layer + 1][0].double() @ u.double()).float() for layer, u in sorted(dirs.items())]
    return prompt, ids[0, len(prompt):].tolist(), proj


def check_readings(rd: dict, *, cap: bool, lows: list[float], want_proj: list[torch.Tensor], n: int, tol: float) -> None:
    """One request's readings against HF: per capped layer ``k`` (floor
    ``lows[k]``, offset included), ``n`` projections after the caps equal to
    HF's ``want_proj[k]`` within ``tol``; capped, every one at or above the
    floor and ``fired`` exactly where the projection before was below it;
    uncapped, nothing fired and nothing moved."""
    for k, lo in enumerate(lows):
        p_after = torch.tensor(rd["p_after"][k])
        assert p_after.shape[0] == n
        assert torch.allclose(p_after, want_proj[k][:n], atol=tol, rtol=0), (rd["layers"][k], cap)
        fired = torch.tensor(rd["fired"][k], dtype=torch.bool)
        if cap:
            assert torch.all(p_after >= lo - tol)
            assert torch.equal(fired, torch.tensor(rd["p_before"][k]) < lo)
        else:
            assert not fired.any()
            assert rd["p_before"][k] == rd["p_after"][k]
    assert 0.0 <= min(rd["firing_rate"]) and max(rd["firing_rate"]) <= 1.0
