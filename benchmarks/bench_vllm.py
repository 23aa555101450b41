"""vLLM offline throughput with axis_steer (the serving environment,
scripts/setup_vllm.sh).

A random-weight Llama saved to a folder (hidden 1024, 8 layers by default,
float32, the project's small tokenizer), greedy, ``--tokens`` new tokens per
request with EOS ignored, at 1, 8 and 32 concurrent requests. Two engines, one
after the other in their own processes (a process serves one caps file):

* ``none``        vLLM without axis_steer;
* then one engine with caps on half the layers, whose requests choose:
  ``capped`` (every request capped), ``capped+readings`` (capped, with
  readings returned), ``mixed`` (every other request capped).

Each configuration runs ``--rounds`` times (interleaved within an engine),
and the two engines alternate ``--repeats`` times (none, capped, none, ...)
so that drift in the machine's speed shows; printed: the median tokens/s
and its ratio to ``none`` (targets on CPU: capping costs <= 2%, readings
<= 1% more), and the spread of ``none`` across its engine runs.

Usage: python benchmarks/bench_vllm.py [--hidden 1024] [--layers 8] [--tokens 64] [--rounds 3] [--repeats 2]
       [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (1, 8, 32)
TOKENIZER = Path(__file__).resolve().parents[1] / "axis_steer" / "personas" / "data" / "persona-llama"


def make_model(folder: Path, hidden: int, layers: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=int(hidden * 2.75), num_hidden_layers=layers,
                      num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 256),
                      vocab_size=3072, max_position_embeddings=1024, tie_word_embeddings=True,
                      bos_token_id=0, eos_token_id=1, pad_token_id=2)
    LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER / name, folder / name)


def make_caps(path: Path, hidden: int, layers: int) -> None:
    import torch

    from axis_steer.runtime.formats import CapConfig, CapEntry

    g = torch.Generator().manual_seed(1)
    entries = []
    for layer in range(layers // 4, layers // 4 + layers // 2):  # half the layers, mid-stack
        u = torch.randn(hidden, generator=g, dtype=torch.float64)
        entries.append(CapEntry(layer, (u / u.norm()).float(), 0.0, math.inf))  # fires on about half the tokens
    CapConfig(entries, {"side": "floor", "n_layers": layers}).save(path)


def engine_run(model: str, caps: str | None, tokens: int, rounds: int, configs: list[str]) -> dict:
    """Runs in the engine's own process; returns {config: {n: [tok/s per round]}}."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    kw = dict(dtype="float32", max_model_len=512, enable_prefix_caching=False, seed=0)
    if caps:
        from axis_steer.serving import capped_llm, request_options

        llm = capped_llm(model, caps, **kw)
    else:
        from vllm import LLM

        llm = LLM(model=model, **kw)

    def params(config: str, j: int) -> SamplingParams:
        xa = None
        if config == "capped":
            xa = request_options(True)
        elif config == "capped+readings":
            xa = request_options(True, readings=True)
        elif config == "mixed":
            xa = request_options(j % 2 == 0)
        return SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True, extra_args=xa)

    def prompts(n: int) -> list:
        return [TokensPrompt(prompt_token_ids=[(7 * j + 13 * k) % 3000 + 3 for k in range(16)]) for j in range(n)]

    llm.generate(prompts(4), [params(configs[0], j) for j in range(4)], use_tqdm=False)  # warm
    out: dict = {c: {n: [] for n in SIZES} for c in configs}
    for _ in range(rounds):
        for n in SIZES:
            for c in configs:
                t = time.perf_counter()
                res = llm.generate(prompts(n), [params(c, j) for j in range(n)], use_tqdm=False)
                dt = time.perf_counter() - t
                out[c][n].append(sum(len(r.outputs[0].token_ids) for r in res) / dt)
                if c == "capped+readings":
                    from axis_steer.serving import readings

                    readings(llm, res)  # what a caller does with them (and the store is emptied)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 rounds, one run of each engine, 32 tokens (a smoke-sized run)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--engine", default=None, help=argparse.SUPPRESS)  # internal: one engine's run
    args = ap.parse_args()
    if args.engine:
        spec = json.loads(args.engine)
        print("RESULT " + json.dumps(engine_run(**spec)), flush=True)
        return
    if args.quick:
        args.rounds, args.repeats, args.tokens = 2, 1, 32
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        model, caps = Path(tmp) / "model", Path(tmp) / "caps.safetensors"
        make_model(model, args.hidden, args.layers)
        make_caps(caps, args.hidden, args.layers)
        results: dict = {}
        engine_none: list = []  # median tok/s of `none` per engine run, at each size
        runs = [(None, ["none"]), (str(caps), ["capped", "capped+readings", "mixed"])] * args.repeats
        for caps_path, configs in runs:
            spec = dict(model=str(model), caps=caps_path, tokens=args.tokens, rounds=args.rounds, configs=configs)
            proc = subprocess.run([sys.executable, __file__, "--engine", json.dumps(spec)], capture_output=True,
                                  text=True, check=False)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                sys.exit(f"engine run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            for c, d in json.loads(line[0][7:]).items():
                for n, v in d.items():
                    results.setdefault(c, {}).setdefault(int(n), []).extend(v)
                if c == "none":
                    engine_none.append({int(n): statistics.median(v) for n, v in d.items()})
    med = {c: {n: statistics.median(v) for n, v in d.items()} for c, d in results.items()}
    print(f"model: hidden {args.hidden}, {args.layers} layers, float32; caps on {args.layers // 2} layers; "
          f"{args.tokens} new tokens per request; median of {args.rounds} rounds")
    print(f"{'config':<18}" + "".join(f"{f'{n} req tok/s':>16}{'ratio':>8}" for n in SIZES))
    for c, d in med.items():
        print(f"{c:<18}" + "".join(f"{d[n]:>16.1f}{d[n] / med['none'][n]:>8.3f}" for n in SIZES))
    spread = {n: max(e[n] for e in engine_none) / min(e[n] for e in engine_none) - 1 for n in SIZES}
    print("drift of `none` between its engine runs: " + ", ".join(f"{n} req {100 * spread[n]:.1f}%" for n in SIZES))
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": results, "median": med, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
