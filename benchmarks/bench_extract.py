"""Extraction: axis_steer's span means against the reference approach, on a
random-weight Llama (default hidden size 1024, 16 layers, 512-token
conversations, Llama-3's 128,256-token vocabulary).

* **axis_steer**: forward hooks on the needed blocks reduce each block's output
  to per-response means over the response span (float32) and the last needed
  block ends the pass: no final norm, no logits, nothing kept beyond one layer.
* **reference approach**: a full forward with ``output_hidden_states=True``
  (logits for every position), every layer's hidden states stacked, then the
  means over the span.

Both see the same batches (right padded, the last 3/4 of each conversation is
the response). Printed, from one run: response tokens per second (from the
median time per batch) and the peak
memory above the loaded model during one batch after a warm-up (CUDA:
``max_memory_allocated``; CPU: the highest resident set size sampled every
0.2 ms, minus the RSS before it; each method in its own process), and the
ratios.
Targets: >= 2x the throughput, <= 1/5 of the peak memory.

Usage: python benchmarks/bench_extract.py [--layers-needed N] [--device cpu|cuda]
       [--hidden 1024] [--n-layers 16] [--seq 512] [--batch 2] [--batches 3] [--vocab 128256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the resident set size in a thread; ``peak`` is the highest seen."""

    def __enter__(self):
        self.peak = self.base = rss_bytes()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.0002)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_bytes())


def build(args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=int(args.hidden * 11 / 4),
        num_hidden_layers=args.n_layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=max(1, args.hidden // 128),
        max_position_embeddings=max(2048, args.seq),
    )
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    with torch.device(args.device):
        model = LlamaForCausalLM(cfg).to(dtype).eval()
    g = torch.Generator().manual_seed(1)
    batches = [
        torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
        for _ in range(args.batches + 1)
    ]
    return model, batches


def run_axis_steer(model, batches, layers, span):
    import torch

    from axis_steer.pipeline.extract import _blocks, _forward_reduce, _Segment

    blocks = _blocks(model)
    out = []
    for ids in batches:
        rows = ids.tolist()
        segs = [_Segment(i, [span]) for i in range(len(rows))]
        out.append(_forward_reduce(model, blocks, layers, rows, segs, pad_id=0))
        if ids.is_cuda:
            torch.cuda.synchronize()
    return out


def run_reference(model, batches, layers, span):
    import torch

    a, b = span
    out = []
    dev = model.get_input_embeddings().weight.device
    for ids in batches:
        with torch.inference_mode():
            res = model(
                input_ids=ids.to(dev),
                attention_mask=torch.ones_like(ids, device=dev),
                output_hidden_states=True,
            )
            hs = torch.stack(res.hidden_states[1:])  # (n_layers + ..., B, T, d), all layers kept
            means = hs[layers, :, a:b].float().mean(2).permute(1, 0, 2).cpu()
        out.append(means)
        del res, hs
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return out


def one(args) -> dict:
    """Runs one method in this process and reports its numbers."""
    import torch

    torch.set_num_threads(args.threads)
    model, batches = build(args)
    n_layers = args.n_layers
    layers = list(range(args.layers_needed or n_layers))
    span = (args.seq // 4, args.seq)
    fn = run_axis_steer if args.method == "axis_steer" else run_reference
    fn(model, batches[:1], layers, span)  # warm-up (lazy initialisation, caches)
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(model, batches[:1], layers, span)
        peak = torch.cuda.max_memory_allocated() - base
    else:
        with PeakRSS() as mem:
            fn(model, batches[:1], layers, span)
        peak = mem.peak - mem.base
    out, times = [], []
    for ids in batches[1:]:  # median time per batch: robust on a shared machine
        t0 = time.perf_counter()
        out += fn(model, [ids], layers, span)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times) * len(times)
    tokens = args.batches * args.batch * (span[1] - span[0])
    # transformers applies the final norm to its last hidden state: compare the others
    k = min(len(layers), n_layers - 1)
    check = float(torch.stack([o[:, :k].double().sum() for o in out]).sum())
    return {
        "method": args.method,
        "seconds": sec,
        "tokens_per_s": tokens / sec,
        "peak_bytes": peak,
        "check": check,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default=None, choices=["cpu", "cuda"])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--n-layers", type=int, default=16)
    ap.add_argument(
        "--layers-needed", type=int, default=0, help="extract layers 0..N-1 (default all)"
    )
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.method:
        print(json.dumps(one(args)))
        return
    res = {}
    for method in ("reference", "axis_steer"):
        cmd = [sys.executable, __file__, "--method", method] + sys.argv[1:]
        if "--device" not in sys.argv:
            cmd += ["--device", args.device]
        line = (
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            .stdout.strip()
            .splitlines()[-1]
        )
        res[method] = json.loads(line)
    r, a = res["reference"], res["axis_steer"]
    need = args.layers_needed or args.n_layers
    print(
        f"extraction, random Llama d={args.hidden}, {args.n_layers} layers (means of layers 0..{need - 1}), "
        f"vocab {args.vocab}, {args.batches} batches of {args.batch} x {args.seq} tokens, {args.device}"
    )
    for m in (r, a):
        print(
            f"  {m['method']:<11} {m['tokens_per_s']:>10.0f} response tokens/s   peak +{m['peak_bytes'] / 2**20:>8.1f} MiB"
        )
    print(
        f"  ratio: throughput {a['tokens_per_s'] / r['tokens_per_s']:.2f}x (target >= 2x), peak memory "
        f"{a['peak_bytes'] / max(r['peak_bytes'], 1):.3f} of the reference's (target <= 0.2)"
    )
    if abs(a["check"] - r["check"]) > 1e-3 * max(1.0, abs(r["check"])):
        print(
            f"  WARNING: the two methods' means differ (checksums {a['check']:.6g} vs {r['check']:.6g})"
        )


if __name__ == "__main__":
    main()
