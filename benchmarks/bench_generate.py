"""Generation throughput of a chat model through axis_steer's reply path
(:func:`axis_steer.pipeline.replies.generate_replies`: batched by length, left
padded, greedy or seeded sampling), at several batch sizes: the figure that
sizes the main job, whose time is mostly generation.

    python benchmarks/bench_generate.py [--model smollm2] [--batch 1,8,16,32,64]
        [--tokens 48] [--threads N] [--sampled] [--capped] [--json out.json]

Per batch size: new tokens per second over ``--rounds`` batches of the
built-in questions (every reply forced to ``--tokens`` new tokens, so all
batch sizes generate the same amount per row), with the 1-minute load average
and this process's CPU share (CPU seconds / wall seconds; 2.0 = both cores of
a 2-core machine) printed beside each figure, since a busy machine changes
them several-fold. ``--capped`` attaches caps on the default window at the
median projection of a random axis (the hooks' cost is in the figure).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from axis_steer.pipeline.loading import load_model
from axis_steer.pipeline.replies import Sampling, generate_replies
from axis_steer.pipeline.roles import builtin_roles


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--batch", default="1,8,16,32,64")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--sampled", action="store_true", help="seeded sampling at 0.7 / 0.9 instead of greedy"
    )
    ap.add_argument("--capped", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model(args.model, device="cpu")
    model.generation_config.min_new_tokens = args.tokens  # every row generates --tokens tokens
    questions = list(builtin_roles().questions)
    att = None
    if args.capped:
        from axis_steer.pipeline.calibrate import default_window
        from axis_steer.runtime.hooks import Attachment

        n = model.config.num_hidden_layers
        axis = torch.randn(n, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
        att = Attachment(model, axis)
        a, b = default_window(n)
        att.cap(range(a, b), 0.0)
    rows = []
    for bs in [int(x) for x in args.batch.split(",")]:
        prompts = [
            [{"role": "user", "content": questions[i % len(questions)]}]
            for i in range(bs * args.rounds)
        ]
        generate_replies(model, tok, prompts[:bs], att, max_new_tokens=4, batch_size=bs)  # warm up
        w, c = time.perf_counter(), time.process_time()
        r = generate_replies(
            model,
            tok,
            prompts,
            att,
            max_new_tokens=args.tokens,
            batch_size=bs,
            sampling=Sampling() if args.sampled else None,
        )
        wall, cpu = time.perf_counter() - w, time.process_time() - c
        n_tok = sum(len(x) + (1 if e else 0) for x, e in zip(r.ids, r.ended))
        row = {
            "batch_size": bs,
            "tokens": n_tok,
            "seconds": round(wall, 2),
            "tokens_per_s": round(n_tok / wall, 1),
            "threads": torch.get_num_threads(),
            "cpu_share": round(cpu / wall, 2),
            "load_1min": round(os.getloadavg()[0], 2),
            "sampled": bool(args.sampled),
            "capped": bool(args.capped),
        }
        rows.append(row)
        print(
            f"batch {bs:>3}: {row['tokens_per_s']:>7.1f} tokens/s ({n_tok} tokens in {wall:.1f} s; "
            f"{row['threads']} threads, CPU share {row['cpu_share']:.2f}, load {row['load_1min']:.2f})",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"model": args.model, "max_new_tokens": args.tokens, "rows": rows}, f, indent=1
            )


if __name__ == "__main__":
    main()
