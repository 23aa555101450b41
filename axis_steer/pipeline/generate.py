"""Step 1 of computing an axis: the model's responses for every role x system
prompt x question, written in the reference ``responses.jsonl`` format.

Run folder layout written here::

    {out_dir}/responses/{role}.jsonl      # one line per response (reference format)
    {out_dir}/responses/generation.json   # model and sampling settings of the run

Each line holds ``system_prompt, prompt_index, question_index, question,
conversation, label`` (``label`` = role name; ``conversation`` = the messages
the model saw, ending with its response). The default role's prompts include
``""`` (no system message). Templates without a system role get the prompt
folded into the user turn; reasoning models get thinking disabled (see
:mod:`axis_steer.pipeline.spans`).

Sampling is seeded *per item*: every (role, prompt, question) has its own seed
derived from ``seed``, and a token is drawn by inverse-CDF sampling from that
item's own random stream, so a response does not depend on the batch it ran
in, on the batch size, on resuming or on the number of ranks (up to
floating-point differences in the logits between batch shapes). Sampling is
temperature then nucleus (top-p), as in transformers.

Two backends run the same plan, prompts, resume and files:
:func:`generate_responses` (transformers, the sampler above) and
:func:`~axis_steer.pipeline.generate_vllm.generate_responses_vllm` (vLLM: the
same prompt token ids, vLLM's own sampler seeded per item with
:func:`item_seed`). ``generation.json`` records the backend (``"hf"`` when
absent, as in older runs), and a run is resumed only with the one that began it.

Resumable: items already in the output are skipped; results are appended and
flushed after every batch, and the files are put in (prompt, question) order at
the end of each call. Under ``torchrun`` every rank generates the items whose
global index ``% world_size`` equals its rank into its own part files, merged by
rank 0 at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from axis_steer.pipeline import _dist
from axis_steer.pipeline.batching import input_device, pad_batch, pad_id
from axis_steer.pipeline.roles import RoleSet, as_role_set
from axis_steer.pipeline.runs import RunFolder, iter_run_responses, read_response_rows
from axis_steer.pipeline.sampling import decoding_config, eos_ids, item_uniforms, seeded_sampler
from axis_steer.pipeline.spans import prepare_messages, prompt_ids
from axis_steer.runtime.checks import as_flag, as_float, as_folder, as_int, as_positive_int
from axis_steer.runtime.formats import response_key

__all__ = [
    "BACKENDS",
    "GenerateSummary",
    "Item",
    "Sampling",
    "item_seed",
    "iter_run_responses",
    "name_from_path",
    "plan_items",
    "generate_responses",
]

#: the generation backends: transformers (this module) and vLLM
#: (:mod:`axis_steer.pipeline.generate_vllm`)
BACKENDS = ("hf", "vllm")

_RESULT_SETTINGS = (
    "model",
    "temperature",
    "top_p",
    "max_new_tokens",
    "greedy",
    "seed",
    "model_name",
)


@dataclass(frozen=True)
class Item:
    """One response to generate: role, prompt and question indices, and the
    texts. ``index`` is the item's position in the run's global order."""

    index: int
    role: str
    prompt_index: int
    question_index: int
    system_prompt: str
    question: str

    @property
    def key(self) -> str:
        return response_key(self.prompt_index, self.question_index)


def plan_items(role_set: RoleSet, model_name: str) -> list[Item]:
    """Every (role, prompt, question) of ``role_set`` in the run's global
    order: the default role first, then the roles by name; prompts, then
    questions. ``{model_name}`` is substituted in the prompts."""
    items = []
    for role in role_set.names:
        for p, system in enumerate(role_set.instructions(role, model_name)):
            for q, question in enumerate(role_set.questions):
                items.append(Item(len(items), role, p, q, system, question))
    return items


def item_seed(seed: int, role: str, prompt_index: int, question_index: int) -> int:
    """The seed of one item's random stream (63 bits, from SHA-256)."""
    h = hashlib.sha256(
        f"{int(seed)}/{role}/{int(prompt_index)}/{int(question_index)}".encode()
    ).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def default_model_name(model: Any) -> str:
    """A display name for ``{model_name}``: the name the loader recorded
    (:func:`axis_steer.pipeline.loading.model_name_of`, e.g. "SmolLM"), else the
    last part of the model's ``name_or_path`` ("Qwen3-32B"; a GGUF file's name
    without ``.gguf`` and its quantization tag), or "an AI assistant" when it has none."""
    config = getattr(model, "config", None)
    recorded = getattr(config, "axis_steer_model_name", None)
    if isinstance(recorded, str) and recorded:
        return recorded
    return name_from_path(str(getattr(config, "_name_or_path", "") or ""))


def name_from_path(path: str) -> str:
    """The last part of a model's folder, hub id or GGUF file ("Qwen3-32B"; a
    GGUF file's name without ``.gguf`` and its quantization tag), or "an AI
    assistant" for an empty path."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"(\.(Q\d\w*|IQ\d\w*|F16|F32|BF16))?\.gguf$", "", name, flags=re.IGNORECASE)
    return name or "an AI assistant"


def _done_keys(run: RunFolder) -> set[tuple[str, int, int]]:
    done: set[tuple[str, int, int]] = set()
    if not run.responses.is_dir():
        return done
    for path in list(run.responses.glob("*.jsonl")) + run.part_files():
        for row in read_response_rows(path, tolerant=True):
            done.add((path.stem, int(row["prompt_index"]), int(row["question_index"])))
    return done


def _repair_tail(path: Path) -> None:
    """Drops a truncated last line so appending starts on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = path.read_bytes()
        f.truncate(data.rfind(b"\n") + 1)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _finalize(run: RunFolder, roles: Iterable[str]) -> None:
    """Merges part files into ``{role}.jsonl`` and sorts each touched file by
    (prompt, question), dropping repeats."""
    parts = run.part_files()
    touched = set(roles) | {p.stem for p in parts}
    for role in sorted(touched):
        main = run.responses_file(role)
        rows: dict[tuple[int, int], dict] = {}
        for path in [main] + [p for p in parts if p.stem == role]:
            for row in read_response_rows(path, tolerant=True):
                rows.setdefault((int(row["prompt_index"]), int(row["question_index"])), row)
        if rows:
            text = "".join(json.dumps(rows[k], ensure_ascii=False) + "\n" for k in sorted(rows))
            _atomic_write_text(main, text)
    for p in parts:
        p.unlink()
    for d in run.responses.glob(".rank*"):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def _check_settings(run: RunFolder, settings: dict) -> None:
    path = run.generation_settings
    if path.exists():
        old = json.loads(path.read_text())
        was, now = old.get("backend", "hf"), settings["backend"]
        if was != now:
            raise ValueError(
                f"{path}: this run was generated with --backend {was}, this call uses --backend {now}; "
                f"resuming would mix their responses. Use --backend {was} to resume, or a new out_dir."
            )
        diff = {
            k: (old.get(k), settings[k])
            for k in _RESULT_SETTINGS
            if k in old and old.get(k) != settings[k]
        }
        if diff:
            shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"{path}: this run was generated with other settings ({shown}); resuming would mix "
                "them. Use the same settings, or a new out_dir."
            )


# ---- the step ---------------------------------------------------------------------------------


@dataclass
class GenerateSummary:
    """What :func:`generate_responses` did (all ranks together under torchrun)."""

    out_dir: Path
    n_items: int  #: items in the plan (all roles, prompts and questions asked for)
    n_done_before: int  #: items found finished and skipped
    n_new: int  #: items generated by this call
    n_tokens: int  #: new tokens generated, up to and excluding the end of turn
    n_roles: int
    seconds: float
    world_size: int = 1

    def __str__(self) -> str:
        rate = self.n_tokens / self.seconds if self.seconds > 0 else 0.0
        ranks = f" on {self.world_size} ranks" if self.world_size > 1 else ""
        return (
            f"generate: {self.n_new} new responses{ranks} ({self.n_done_before} already done, "
            f"{self.n_items} planned for {self.n_roles} roles + default), {self.n_tokens} tokens in "
            f"{self.seconds:.1f} s ({rate:.0f} tokens/s) -> {RunFolder(self.out_dir).responses}"
        )


@dataclass(frozen=True)
class Sampling:
    """A run's checked decoding settings (``greedy`` also when ``temperature``
    is 0): what a backend's decoder is given with each batch."""

    max_new_tokens: int
    temperature: float
    top_p: float
    greedy: bool
    seed: int

    def item_seed(self, it: Item) -> int:
        return item_seed(self.seed, it.role, it.prompt_index, it.question_index)


#: a backend: ``decode(items, prompt_ids, sampling)`` -> the new token ids of
#: each item (anything after its first end-of-turn id is ignored)
Decoder = Callable[[list[Item], list[list[int]], Sampling], list[list[int]]]


def _write_rows(
    write_dir: Path,
    batch: Sequence[Item],
    convs: Sequence[list[dict]],
    new: Sequence[Sequence[int]],
    tokenizer: Any,
    eos: Sequence[int],
) -> int:
    """Cuts each item's new tokens at its first end-of-turn id, decodes them
    and appends the rows to ``write_dir/{role}.jsonl`` (flushed); returns the
    number of tokens kept."""
    n_tokens = 0
    by_role: dict[str, list[str]] = {}
    for it, conv, toks in zip(batch, convs, new):
        toks = list(toks)
        cut = next((i for i, t in enumerate(toks) if t in eos), len(toks))
        n_tokens += cut
        text = tokenizer.decode(toks[:cut], skip_special_tokens=True).strip()
        row = {
            "system_prompt": it.system_prompt,
            "prompt_index": it.prompt_index,
            "question_index": it.question_index,
            "question": it.question,
            "conversation": [*conv, {"role": "assistant", "content": text}],
            "label": it.role,
        }
        by_role.setdefault(it.role, []).append(json.dumps(row, ensure_ascii=False) + "\n")
    for role, lines in by_role.items():
        path = write_dir / f"{role}.jsonl"
        _repair_tail(path)
        with path.open("a", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
    return n_tokens


def _run_generation(
    decode: Decoder,
    tokenizer: Any,
    role_set: RoleSet | str | Path | None,
    out_dir: str | Path,
    *,
    backend: str,
    model_path: str,
    model_name: str,
    eos: Sequence[int],
    roles: Iterable[str] | None,
    n_questions: int | None,
    n_prompts: int | None,
    batch_size: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    greedy: bool,
    seed: int,
    max_items: int | None,
    progress: bool,
) -> GenerateSummary:
    """What every backend shares: checks the arguments, plans the items, skips
    those already written, prepares each prompt's token ids, calls ``decode``
    on batches of ``batch_size`` items (shortest prompts first), appends each
    batch's rows, and merges and sorts the files at the end."""
    batch_size = as_positive_int(batch_size, "batch_size")
    max_new_tokens = as_positive_int(max_new_tokens, "max_new_tokens")
    temperature = as_float(temperature, "temperature", min=0.0, expected="a finite temperature >= 0 (0 = greedy)")
    top_p = as_float(top_p, "top_p", min=0.0, max=1.0, min_open=True)
    greedy = as_flag(greedy, "greedy") or temperature == 0
    seed = as_int(seed, "seed")
    if max_items is not None:
        max_items = as_int(max_items, "max_items", min=0)
    out_dir = as_folder(out_dir, "out_dir", must_exist=False)
    sampling = Sampling(max_new_tokens, temperature, top_p, greedy, seed)
    rank, world = _dist.setup()
    t0 = time.perf_counter()
    rs = as_role_set(role_set).select(roles, n_questions=n_questions, n_prompts=n_prompts)
    out_dir = Path(out_dir)
    run = RunFolder(out_dir)
    rdir = run.responses
    settings = {
        "backend": backend,
        "model": model_path,
        "model_name": model_name,
        "temperature": None if greedy else float(temperature),
        "top_p": None if greedy else float(top_p),
        "max_new_tokens": int(max_new_tokens),
        "greedy": bool(greedy),
        "seed": int(seed),
        "role_set": rs.source,
    }
    _check_settings(run, settings)
    _dist.barrier()
    items = plan_items(rs, model_name)
    done = _done_keys(run)
    todo = [it for it in items if (it.role, it.prompt_index, it.question_index) not in done]
    n_done_before = len(items) - len(todo)
    mine = [it for it in todo if it.index % world == rank]
    if max_items is not None:
        mine = mine[: max(0, int(max_items))]
    if rank == 0:
        rdir.mkdir(parents=True, exist_ok=True)
        if not run.generation_settings.exists():
            _atomic_write_text(run.generation_settings, json.dumps(settings, indent=1) + "\n")
    _dist.barrier()
    write_dir = rdir if world == 1 else run.rank_dir(rank)
    write_dir.mkdir(parents=True, exist_ok=True)

    n_tokens = 0
    bar = tqdm(total=len(mine), desc="generate", unit="resp", disable=not progress or rank != 0)
    prepared = {}
    for it in mine:
        msgs = [{"role": "system", "content": it.system_prompt}] if it.system_prompt else []
        msgs.append({"role": "user", "content": it.question})
        conv = prepare_messages(tokenizer, msgs)
        prepared[it.index] = (conv, prompt_ids(tokenizer, conv))
    # batch by prompt length: less padding (a response does not depend on its batch)
    mine = sorted(mine, key=lambda it: len(prepared[it.index][1]))
    try:
        for b0 in range(0, len(mine), batch_size):
            batch = mine[b0 : b0 + batch_size]
            new = decode(batch, [list(prepared[it.index][1]) for it in batch], sampling)
            convs = [prepared[it.index][0] for it in batch]
            n_tokens += _write_rows(write_dir, batch, convs, new, tokenizer, eos)
            bar.update(len(batch))
    finally:
        bar.close()
    _dist.barrier()
    if rank == 0:
        _finalize(run, {it.role for it in items})
    _dist.barrier()
    per_rank = _dist.all_gather_object((len(mine), n_tokens))
    summary = GenerateSummary(
        out_dir,
        len(items),
        n_done_before,
        sum(n for n, _ in per_rank),
        sum(t for _, t in per_rank),
        len(rs.roles),
        time.perf_counter() - t0,
        world,
    )
    if progress and rank == 0:
        print(summary)
    return summary


def generate_responses(
    model: Any,
    tokenizer: Any,
    role_set: RoleSet | str | Path | None,
    out_dir: str | Path,
    *,
    roles: Iterable[str] | None = None,
    n_questions: int | None = None,
    n_prompts: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 512,
    temperature: float = 0.7,
    top_p: float = 0.9,
    greedy: bool = False,
    seed: int = 0,
    model_name: str | None = None,
    max_items: int | None = None,
    progress: bool = True,
) -> GenerateSummary:
    """Generates the responses of a run with transformers (see the module
    docs; :func:`axis_steer.pipeline.generate_vllm.generate_responses_vllm`
    does the same with vLLM).

    Args:
        model: a transformers causal LM (any device, ``device_map`` allowed).
        tokenizer: its tokenizer, with a chat template.
        role_set: a :class:`~axis_steer.pipeline.roles.RoleSet`, a role-set folder, or
            ``None`` for the built-in set.
        out_dir: the run folder; responses go to ``out_dir/responses/``.
        roles, n_questions, n_prompts: a subset (see :meth:`RoleSet.select`);
            the default role is always included.
        batch_size: prompts per ``generate`` call (left padded).
        max_new_tokens, temperature, top_p: sampling as in the reference
            (512, 0.7, 0.9); ``greedy=True`` (or ``temperature=0``) decodes greedily.
        seed: the run's seed; each item's stream derives from it.
        model_name: replaces ``{model_name}`` in prompts (default: the last part
            of the model's name or path).
        max_items: stop after this many new items (per rank); a later call
            resumes.
        progress: show a tqdm bar (rank 0 only).

    Returns:
        A :class:`GenerateSummary` (its ``str`` is the step's summary line).
    """
    from transformers import LogitsProcessorList

    max_new_tokens = as_positive_int(max_new_tokens, "max_new_tokens")
    device = input_device(model)
    pad = pad_id(tokenizer)
    gc = decoding_config(model, tokenizer, max_new_tokens)

    def decode(batch: list[Item], ids: list[list[int]], sp: Sampling) -> list[list[int]]:
        input_ids, attn = pad_batch(ids, pad, side="left")
        width = input_ids.shape[1]
        procs = LogitsProcessorList()
        if not sp.greedy:
            u = item_uniforms([sp.item_seed(it) for it in batch], sp.max_new_tokens, device)
            procs.append(seeded_sampler(u, width, sp.temperature, sp.top_p))
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attn.to(device),
                generation_config=gc,
                logits_processor=procs,
            )
        return out[:, width:].cpu().tolist()

    was_training = model.training
    model.eval()
    try:
        return _run_generation(
            decode,
            tokenizer,
            role_set,
            out_dir,
            backend="hf",
            model_path=str(getattr(getattr(model, "config", None), "_name_or_path", "") or ""),
            model_name=model_name or default_model_name(model),
            eos=eos_ids(model, tokenizer),
            roles=roles,
            n_questions=n_questions,
            n_prompts=n_prompts,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            greedy=greedy,
            seed=seed,
            max_items=max_items,
            progress=progress,
        )
    finally:
        model.train(was_training)
