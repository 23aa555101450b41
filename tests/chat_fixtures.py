"""Hand-built chat templates, small word-level tokenizers and a tiny random
Llama for the span and pipeline tests. Nothing here is downloaded."""

from __future__ import annotations

import re
from typing import Iterable

# Llama-3 style: headers, content trimmed, <|eot_id|> after each turn.
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}"
    "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

# ChatML (Qwen 2.5 style): content written as is, not trimmed.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# ChatML with reasoning blocks (Qwen3 style): reasoning is split out of the content;
# assistant turns after the last user turn get a <think> block (an empty one when the
# turn is the last); earlier turns lose theirs; the generation prompt gets an empty
# block when thinking is disabled.
QWEN3 = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}"
    "{%- set content = m['content'] -%}{%- set reasoning = '' -%}"
    "{%- if '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\n') -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\n') -%}"
    "{%- endif -%}"
    "{%- if loop.index0 > ns.last_user and (loop.last or reasoning) -%}"
    "{{ '<|im_start|>assistant\n<think>\n' + reasoning + '\n</think>\n\n' + content.lstrip('\n') }}"
    "{%- else -%}{{ '<|im_start|>assistant\n' + content }}{%- endif -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- else -%}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{ '<think>\n\n</think>\n\n' }}{%- endif -%}{%- endif -%}"
)

# Gemma-2 style: no system role (raises), model turns, content trimmed.
NO_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{{ bos_token }}{% for m in messages %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

# A template that silently ignores system messages.
DROPS_SYSTEM = (
    "{% for m in messages %}{% if m['role'] != 'system' %}"
    "[{{ m['role'] }}]: {{ m['content'] }} [end]\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}[assistant]: {% endif %}"
)

SPECIALS = {
    LLAMA3: ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    CHATML: ["<|im_start|>", "<|im_end|>"],
    QWEN3: ["<|im_start|>", "<|im_end|>"],
    NO_SYSTEM: ["<bos>", "<start_of_turn>", "<end_of_turn>"],
    DROPS_SYSTEM: ["[end]"],
}
ADDED = {QWEN3: ["<think>", "</think>"]}
BOS = {LLAMA3: "<|begin_of_text|>", NO_SYSTEM: "<bos>"}
EOS = {
    LLAMA3: "<|eot_id|>",
    CHATML: "<|im_end|>",
    QWEN3: "<|im_end|>",
    NO_SYSTEM: "<end_of_turn>",
    DROPS_SYSTEM: "[end]",
}

#: word-level: words and punctuation are tokens, whitespace is not
WORD_SPLIT = r"\w+|[^\w\s]+"
#: GPT-2 like: a leading space belongs to the word, other whitespace is its own token
SPACE_SPLIT = r" ?\w+| ?[^\w\s]+|\s+"

_WORDS = re.compile(r"\w+|[^\w\s]+")


def words_of(texts: Iterable[str]) -> list[str]:
    out: dict[str, None] = {}
    for t in texts:
        for w in _WORDS.findall(t):
            out[w] = None
    return list(out)


def make_tokenizer(template: str, words: Iterable[str], split: str = WORD_SPLIT):
    """A fast tokenizer over ``words`` (plus the template's special tokens) with
    ``template`` as its chat template."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1}
    for w in words:
        vocab.setdefault(w, len(vocab))
        if split == SPACE_SPLIT:
            vocab.setdefault(" " + w, len(vocab))
    for ws in ("\n", "\n\n", " ", "  ", " \n", "\n ", "\n\n\n", "  \n"):
        vocab.setdefault(ws, len(vocab))
    for w in ("system", "user", "assistant", "model"):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    if split == WORD_SPLIT:
        tok.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+|[^\w\s]+, whitespace dropped
    else:
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(split), behavior="isolated")
    tok.decoder = decoders.Fuse() if split == SPACE_SPLIT else None
    specials = SPECIALS.get(template, [])
    tok.add_special_tokens(
        [AddedToken(s, special=True, normalized=False) for s in specials + ["[PAD]"]]
    )
    tok.add_tokens(
        [AddedToken(s, special=False, normalized=False) for s in ADDED.get(template, [])]
    )
    kw = {}
    if template in BOS:
        kw["bos_token"] = BOS[template]
    t = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        eos_token=EOS.get(template),
        **kw,
    )
    t.chat_template = template
    return t


def tokens_of(tokenizer, ids) -> list[str]:
    return tokenizer.convert_ids_to_tokens(list(ids))


def tiny_llama(tokenizer, n_layers: int = 3, hidden: int = 32, seed: int = 0):
    """A random-weight Llama over ``tokenizer``'s vocabulary, small enough for
    CPU tests (float32, eval mode)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # larger logits than the default init, so sampling and greedy are not near-uniform
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model


FILLER = (
    "the a of and to is it you I we they yes no good day night sea gold fire book learn".split()
)


def small_run_setup(
    template: str = LLAMA3,
    roles=("dragon", "tutor", "ghost"),
    n_questions=3,
    n_prompts=2,
    n_layers=3,
):
    """(role set, tokenizer, model): a few built-in roles, a word-level tokenizer
    over their words and a tiny random Llama."""
    from axis_steer.pipeline.roles import builtin_roles

    rs = builtin_roles().select(list(roles), n_questions=n_questions, n_prompts=n_prompts)
    texts = list(rs.questions) + [p for r in rs.names for p in rs.instructions(r, "TinyModel")]
    tok = make_tokenizer(template, words_of(texts) + FILLER)
    return rs, tok, tiny_llama(tok, n_layers=n_layers)


def block_outputs(model, input_ids):
    """Reference: a full forward (with logits) recording every decoder block's
    output, ``[(seq, d)]`` per layer (``hidden_states[i + 1]`` before the final
    norm; transformers' last hidden state has the norm applied)."""
    import torch

    outs = []
    hooks = [
        blk.register_forward_hook(
            lambda m, a, o: outs.append((o[0] if isinstance(o, tuple) else o)[0].detach())
        )
        for blk in model.model.layers
    ]
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([list(input_ids)]))
    finally:
        for h in hooks:
            h.remove()
    return outs


def direct_means(model, tokenizer, conversation, layers, turn: int = -1):
    """Reference computation: mean of each layer's block output over the turn's
    span tokens, float64, ``(len(layers), d)``."""
    import torch

    from axis_steer.pipeline.spans import render_with_spans

    r = render_with_spans(tokenizer, conversation)
    a, b = r.spans[turn]
    outs = block_outputs(model, r.input_ids)
    return torch.stack([outs[i][a:b].double().mean(0) for i in layers])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PIPELINE_STEPS = dict(batch_size=3, max_new_tokens=10)


def run_pipeline(out, calibrate_windows=((1, 3),)):
    """generate -> extract -> axis -> calibrate on the small setup (used by the
    single-process and the data-parallel runs of the distributed test)."""
    import torch

    from axis_steer.pipeline.axis import compute_axis
    from axis_steer.pipeline.calibrate import calibrate
    from axis_steer.pipeline.extract import extract_activations
    from axis_steer.pipeline.generate import generate_responses

    torch.set_num_threads(1)
    rs, tok, model = small_run_setup()
    generate_responses(model, tok, rs, out, progress=False, **PIPELINE_STEPS)
    extract_activations(model, tok, out, batch_size=3, per_sample="pt", progress=False)
    compute_axis(out, min_count=1, plots=False, progress=False)
    calibrate(model, tok, out, (0.25, 0.5), list(calibrate_windows), batch_size=3, progress=False)


def dist_worker(rank: int, world: int, port: int, out: str) -> None:
    """One rank of a torchrun-like launch on the CPU: the launcher's environment
    variables only; the pipeline sets up the gloo process group itself."""
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    import torch.distributed as td

    try:
        run_pipeline(out)
    finally:
        if td.is_initialized():
            td.destroy_process_group()
