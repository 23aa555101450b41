"""Tiny random-weight models of every architecture axis_steer supports, built
from configs (no downloads), and the inputs and thresholds the hook tests
(CPU and CUDA) use with them."""

from __future__ import annotations

import warnings

import torch

VOCAB = 96
HIDDEN = 32
LAYERS = 4


def _configs():
    import transformers as T

    common = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    gqa = dict(common, num_key_value_heads=2)
    return {
        "llama": lambda: T.LlamaConfig(**gqa),
        "mistral": lambda: T.MistralConfig(**gqa),
        "mixtral": lambda: T.MixtralConfig(**gqa, num_local_experts=4, num_experts_per_tok=2),
        "qwen2": lambda: T.Qwen2Config(**gqa),
        "qwen2_moe": lambda: T.Qwen2MoeConfig(
            **gqa, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32
        ),
        "qwen3": lambda: T.Qwen3Config(**gqa, head_dim=8),
        "qwen3_moe": lambda: T.Qwen3MoeConfig(**gqa, head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32),
        "gemma": lambda: T.GemmaConfig(**gqa, head_dim=8),
        "gemma2": lambda: T.Gemma2Config(**gqa, head_dim=8),
        "gemma3_text": lambda: T.Gemma3TextConfig(**gqa, head_dim=8),
        "phi3": lambda: T.Phi3Config(**gqa, pad_token_id=0),
        "gpt2": lambda: T.GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_positions=256),
        "gpt_neox": lambda: T.GPTNeoXConfig(**common),
        "gptj": lambda: T.GPTJConfig(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_positions=256, rotary_dim=4),
        "opt": lambda: T.OPTConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=4,
            ffn_dim=64,
            max_position_embeddings=256,
            word_embed_proj_dim=HIDDEN,
        ),
        "falcon": lambda: T.FalconConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=4),
        "olmo2": lambda: T.Olmo2Config(**gqa),
        "stablelm": lambda: T.StableLmConfig(**gqa),
        "cohere": lambda: T.CohereConfig(**gqa),
    }


ARCHS = tuple(_configs())


def tiny_model(arch: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32):
    """A random-weight causal LM of ``arch`` in eval mode, pad/eos ids in range."""
    import transformers as T

    cfg = _configs()[arch]()
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if hasattr(cfg, name):
            setattr(cfg, name, {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}[name])
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = T.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None
    return model.eval()


def random_axis(n_layers: int = LAYERS, d: int = HIDDEN, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_layers, d, generator=g)


def batch(seed: int = 0, b: int = 2, s: int = 7, pad=(2, 0), device=None):
    """Random token ids ``(b, s)`` and an attention mask with ``pad[r]`` left-padding
    positions in row ``r`` (ids 0 there), on ``device``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (b, s), generator=g)
    am = torch.ones(b, s, dtype=torch.long)
    for r, p in enumerate(pad):
        am[r, :p] = 0
        ids[r, :p] = 0
    return ids.to(device), am.to(device)


def left_padded(seqs, device=None):
    """Sequences of different lengths as one left-padded batch: ``(ids, mask)``."""
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    am = torch.zeros(len(seqs), width, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s) :] = s
        am[r, width - len(s) :] = 1
    return ids.to(device), am.to(device)


class Capture:
    """Records block outputs (after axis_steer's hooks, which run first)."""

    def __init__(self, model, layers):
        from axis_steer.runtime.models import find_layers

        self.blocks = find_layers(model).blocks
        self.outs: dict[int, list] = {i: [] for i in layers}
        self.handles = [self.blocks[i].register_forward_hook(self._make(i)) for i in layers]

    def _make(self, i):
        def hook(mod, args, out):
            h = out if isinstance(out, torch.Tensor) else out[0]
            self.outs[i].append(h.detach().clone())

        return hook

    def cat(self, i):
        return torch.cat(self.outs[i], dim=1)

    def close(self):
        for h in self.handles:
            h.remove()


def thresholds_from(model, axis, layers, q=0.6):
    """Per-layer floors that many tokens are below (from an uncapped pass on the
    model's device)."""
    device = next(model.parameters()).device
    ids, am = batch(5, b=2, s=12, pad=(0, 0), device=device)
    cap = Capture(model, layers)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=am)
    cap.close()
    return {
        i: float(torch.quantile((cap.cat(i) @ (axis[i] / axis[i].norm()).to(device)).float(), q))
        for i in layers
    }
