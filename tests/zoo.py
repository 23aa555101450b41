"""Tiny random-weight models of every architecture axis_steer supports, built
from configs (no downloads), and the inputs and thresholds the hook tests
(CPU and CUDA) use with them."""

from __future__ import annotations

import dataclasses
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


# ---- every causal-LM family of the installed transformers, built tiny ---------------------------
#
# The zoo test (tests/test_model_zoo.py) builds each family of transformers'
# causal-LM auto mapping from its config class with random weights. Sizes come
# from one generic table (ZOO_SIZES: every field a config has is shrunk) and a
# generic rule for per-layer lists (a list as long as the default layer count is
# cut to ZOO_LAYERS entries, keeping every distinct value); what a family needs
# beyond that is data in ZOO_OVERRIDES (fields, sub-config fields). Families that
# cannot be built tiny here are in ZOO_UNBUILDABLE with the reason.

ZOO_LAYERS = 4
ZOO_VOCAB = 128
ZOO_SIZES = {
    "vocab_size": ZOO_VOCAB,
    "hidden_size": HIDDEN, "d_model": HIDDEN, "n_embd": HIDDEN, "dim": HIDDEN, "emb_dim": HIDDEN,
    "embedding_dim": HIDDEN,
    "num_hidden_layers": ZOO_LAYERS, "n_layer": ZOO_LAYERS, "num_layers": ZOO_LAYERS, "n_layers": ZOO_LAYERS,
    "decoder_layers": ZOO_LAYERS, "encoder_layers": ZOO_LAYERS, "num_blocks": ZOO_LAYERS,
    "num_attention_heads": 4, "n_head": 4, "n_heads": 4, "num_heads": 4,
    "encoder_attention_heads": 4, "decoder_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 8, "intermediate_size": 64, "ffn_dim": 64, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
    "n_inner": 64, "d_ff": 64, "feed_forward_size": 64, "ffn_hidden_size": 64,
    "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32, "expert_ffn_hidden_size": 32,
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "moe_num_experts": 4,
    "num_experts_per_tok": 2, "n_shared_experts": 1, "max_position_embeddings": 512,
    "q_lora_rank": 16, "kv_lora_rank": 16, "qk_rope_head_dim": 4, "qk_nope_head_dim": 4, "v_head_dim": 8,
    "rotary_dim": 4, "vocab_size_per_layer_input": ZOO_VOCAB, "hidden_size_per_layer_input": 8,
    "linear_key_head_dim": 8, "linear_value_head_dim": 8, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
}
_MLA = {"num_key_value_heads": 4, "head_dim": 4}  # multi-head latent attention: rope dims = head_dim
_MOE_GROUPS = {"n_group": 1, "topk_group": 1}  # expert groups: one group of the zoo's 4 experts
_SSM = {"mamba_n_heads": 4, "mamba_d_head": 16, "mamba_d_state": 16, "mamba_chunk_size": 16}
_QSA = {"indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": 8, "indexer_budget": 4,
        "indexer_compress_ratio": 2, "hc_lowrank": 8, "ngram_vocab_size_base": 1024, "split_ngram_parts": 2}
_HYBRID = ["linear_attention", "full_attention", "linear_attention", "full_attention"]
#: what a family needs beyond ZOO_SIZES: config fields, or {sub_config: {fields}}
ZOO_OVERRIDES: dict[str, dict] = {
    **{f: {**_MLA, **_MOE_GROUPS} for f in ("axk1", "axk2", "deepseek_v2", "deepseek_v3", "deepseek_v32",
                                            "glm4_moe_lite", "glm_moe_dsa", "minicpm3", "youtu")},
    "longcat_flash": {**_MLA, "num_layers": 2, "num_hidden_layers": 4, "moe_topk": 2, "zero_expert_num": 2},
    "bamba": {**_SSM, "attn_layer_indices": [1, 3]},
    "granitemoehybrid": {**_SSM, "layer_types": _HYBRID},
    "falcon_h1": {**_SSM, "mamba_d_ssm": 64},
    "nemotron_h": {"mamba_num_heads": 4, "mamba_head_dim": 16, "ssm_state_size": 16, "n_groups": 1,
                   "chunk_size": 16, "moe_shared_expert_intermediate_size": 32,
                   "layers_block_type": ["linear_attention", "moe", "full_attention", "mlp"]},
    "mamba2": {"num_heads": 4, "head_dim": 16, "n_groups": 1, "state_size": 16, "chunk_size": 16},
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1},
    "zamba": {"layers_block_type": ["linear_attention", "hybrid", "linear_attention", "hybrid"],
              "attention_head_dim": 16, "attention_hidden_size": 64, "mamba_dt_rank": 4},
    "zamba2": {"layers_block_type": ["mamba", "hybrid", "mamba", "hybrid"], "mamba_d_state": 16,
               "n_mamba_heads": 4, "mamba_headdim": 16, "chunk_size": 16},
    "ernie4_5_moe": {"moe_k": 2, "moe_num_experts": 4, "moe_layer_end_index": 3},
    "kimi_linear": {"num_experts_per_token": 2, "num_key_value_heads": 4, "layer_types": _HYBRID, "linear_head_dim": 8, "linear_num_heads": 4},
    "gpt_neo": {"attention_types": [[["global", "local"], 2]]},
    "lfm2_moe": {"num_dense_layers": 1, "layer_types": ["conv", "full_attention", "conv", "full_attention"]},
    "zaya": {"num_experts_per_tok": 1},
    "gemma3n_text": {"num_kv_shared_layers": 2, "laurel_rank": 4, "activation_sparsity_pattern": [0.0] * 4,
                     "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]},
    "dbrx": {"attn_config": {"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0},
             "ffn_config": {"ffn_hidden_size": 64, "moe_num_experts": 4, "moe_top_k": 2}},
    "reformer": {"is_decoder": True, "axial_pos_shape": [4, 8], "axial_pos_embds_dim": [16, 16],
                 "attn_layers": ["local", "lsh", "local", "lsh"], "local_attn_chunk_length": 4,
                 "lsh_attn_chunk_length": 4, "num_buckets": 2, "attention_head_size": 8, "max_position_embeddings": 32},
    "qwen4_exp_text": _QSA,
    "qwen4_exp": {"text_config": _QSA},
    "xlstm": {"chunk_size": 4, "hidden_size": 128, "embedding_dim": 128},  # head dims round up to 64
    "cohere_compass_text": {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 10000.0,
                                                                   "mrope_section": [1, 1, 2]}}},
    "blt": {"use_cache": False, "patch_in_forward": False, "encoder_hash_byte_group_vocab": 64,
            "encoder_hash_byte_group_size": [3, 4], "global_config": {"hidden_size": 2 * HIDDEN},
            "encoder_config": {"hidden_size_global": 2 * HIDDEN}, "decoder_config": {"hidden_size_global": 2 * HIDDEN}},
    "musicgen": {"num_codebooks": 1},
    "musicgen_melody": {"num_codebooks": 1},
}
#: families whose causal-LM class takes its own config class (the decoder's), not the family's
ZOO_OWN_CONFIG = {"musicgen", "musicgen_melody"}
#: a method to call on a family's model once built, with its arguments
ZOO_SETUP: dict[str, tuple[str, tuple]] = {"xmod": ("set_default_language", ("en_XX",))}
#: families whose own batched generate is wrong (a bug in transformers): generate is checked one row at a time
ZOO_GENERATE_ROW_BY_ROW = {
    "rwkv": "transformers' RWKV decode step with a cache broadcasts a batch of B to B x B rows (RwkvFeedForward's "
    "cached shift is (batch, d)): its batched generate differs from row-by-row and no-cache generate",
}
#: families whose generate is not checked, with the reason
ZOO_NO_GENERATE_CHECK = {
    "xlm": "XLM's generate drops the attention mask and appends a mask token at every step: it has no padding",
}
#: families that cannot be built tiny in this environment, with the reason
ZOO_UNBUILDABLE: dict[str, str] = {
    "gemma3n": "its vision tower needs the timm package, which the CI environment does not install",
    "gemma4_assistant": "a drafter for speculative decoding: its forward needs a Gemma 4 target model's "
    "hidden states and shared KV states, it has no standalone forward",
    "gemma4_unified_assistant": "a drafter for speculative decoding: its forward needs a Gemma 4 target "
    "model's hidden states and shared KV states, it has no standalone forward",
}
#: model classes outside the causal-LM mapping that the zoo also covers:
#: name -> (config model_type, model class, extra config fields, Attachment keyword arguments)
_T5 = {"num_layers": 4, "num_decoder_layers": 2, "d_kv": 8}  # more encoder than decoder blocks
ZOO_EXTRA: dict[str, tuple[str, str, dict, dict]] = {
    "bert_model": ("bert", "BertModel", {}, {}),
    "t5_decoder": ("t5", "T5ForConditionalGeneration", _T5, {}),
    "t5_encoder": ("t5", "T5ForConditionalGeneration", _T5, {"stack": "encoder"}),
    "bart_seq2seq": ("bart", "BartForConditionalGeneration", {"decoder_layers": 2}, {}),
}


def zoo_families() -> list[str]:
    """The causal-LM families of the installed transformers, then ZOO_EXTRA."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return list(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) + list(ZOO_EXTRA)


def _per_layer(values: list, n: int) -> list:
    """``values`` (one per layer) cut to ``n`` entries, keeping every distinct
    value where there are at most ``n`` of them (the last ones replaced)."""
    out = list(values[:n])
    kinds = list(dict.fromkeys(map(repr, values)))
    if len(kinds) <= n:
        by_repr = {repr(v): v for v in values}
        missing = [r for r in kinds if r not in map(repr, out)]
        for j, r in enumerate(missing):
            out[n - 1 - j] = by_repr[r]
    return out


def _declared(config_cls) -> dict:
    """The fields a config class declares, with their defaults (derived fields,
    declared with the default None, stay None: the config derives them)."""
    if dataclasses.is_dataclass(config_cls):
        out = {}
        for f in dataclasses.fields(config_cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
        return out
    return config_cls().to_dict()


def _tiny_fields(config_cls, overrides: dict) -> dict:
    """The constructor fields of a tiny ``config_cls`` (recursing into sub-configs)."""
    fields = _declared(config_cls)
    subs = getattr(config_cls, "sub_configs", {})
    layers = next((fields[k] for k in ("num_hidden_layers", "n_layer", "num_layers", "n_layers") if isinstance(fields.get(k), int)), None)
    out: dict = {}
    for k, v in ZOO_SIZES.items():
        if k in fields and k not in subs and (fields[k] is None or type(fields[k]) is int):
            out[k] = v
    for k, v in fields.items():
        if isinstance(v, list) and layers and len(v) == layers != ZOO_LAYERS:
            out[k] = _per_layer(v, ZOO_LAYERS)
    base = None
    for name, sub_cls in subs.items():
        if name in overrides and overrides[name] is None:
            continue
        if base is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    base = config_cls()
                except Exception:  # a composite config with required parts
                    base = False
        sub = getattr(base, name, None) if base is not False else None
        cls = type(sub) if sub is not None and not isinstance(sub, dict) else sub_cls
        if sub is None and name not in overrides or not isinstance(cls, type) or not hasattr(cls, "to_dict"):
            continue
        out[name] = {**_tiny_fields(cls, overrides.get(name) or {}), "model_type": getattr(cls, "model_type", "")}
    for k, v in overrides.items():
        if k not in subs:
            out[k] = v
    return out


def zoo_model_class(name: str):
    """The model class of family ``name`` (its causal-LM class, or ZOO_EXTRA's)."""
    import transformers as T
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return getattr(T, ZOO_EXTRA[name][1] if name in ZOO_EXTRA else MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[name])


def zoo_config(name: str):
    """The tiny config of family ``name``: of the family's config class, as a
    checkpoint of it would load (ZOO_OWN_CONFIG: of the model class's own)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    extra = ZOO_EXTRA[name][2] if name in ZOO_EXTRA else {}
    if name in ZOO_OWN_CONFIG:
        cls = zoo_model_class(name).config_class
    else:
        cls = CONFIG_MAPPING[ZOO_EXTRA[name][0] if name in ZOO_EXTRA else name]
    overrides = {**ZOO_OVERRIDES.get(name, {}), **extra}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(**_tiny_fields(cls, overrides))


def zoo_model(name: str, seed: int = 0):
    """Family ``name`` built tiny with random weights, float32, eval mode."""
    cfg = zoo_config(name)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name in ZOO_EXTRA or name in ZOO_OWN_CONFIG:
            model = zoo_model_class(name)(cfg)
        else:
            import transformers as T

            model = T.AutoModelForCausalLM.from_config(cfg)
    model = model.float().eval()
    if name in ZOO_SETUP:
        method, args = ZOO_SETUP[name]
        getattr(model, method)(*args)
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.pad_token_id, gen.eos_token_id = 0, None
    return model
