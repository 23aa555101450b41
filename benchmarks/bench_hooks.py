"""Time per generated token with capping hooks, eager ``generate`` on the CPU.

A random-weight Llama big enough to mean something on a CPU (hidden 1024, 8
layers by default), batch 1, greedy. Configurations, interleaved round by round
so that drift in the machine's speed hits them all alike:

* ``none``       no hooks;
* ``axis_steer`` capping 4 layers with :class:`axis_steer.runtime.hooks.Attachment`;
* ``+monitor``   the same plus monitoring those layers;
* ``+latch``     the same caps under a drift policy (``att.latch`` at the first
  capped layer, window 8, k 3, with a threshold every sequence crosses at once,
  so the caps run on every token after the third, as plain capping does): the
  latch's scan runs in the first layer's fused call;
* ``reference``  reference-style hooks on the same 4 layers (einsum projection,
  clamp, einsum outer product, subtract: the released code's formula).

Printed: median time per token of each, the time each adds over ``none``, and
the ratios of added time (targets: axis_steer's added time <= 1/3 of the
reference's; with monitoring <= 1/2; with a drift policy within 10% of plain
capping's added time).

Both the end-to-end figures and an isolated measurement are printed: the
isolated one calls the hooks directly on decode-shaped tensors many times (the
added time of hooks is additive, and this measures it without the step's own
noise); on one thread the two agree.

Usage: python benchmarks/bench_hooks.py [--hidden 1024] [--layers 8] [--tokens 64] [--rounds 9] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import transformers

from axis_steer.runtime.hooks import Attachment
from axis_steer.runtime.models import find_layers
from axis_steer.runtime.reference import reference_style_cap_hook


def build(hidden: int, layers: int, vocab: int) -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=max(1, hidden // 256),
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    model.generation_config.pad_token_id = 0
    return model


def isolated_costs(model, atts: dict, ref_hooks, capped, ids, calls: int = 4000) -> dict:
    """Microseconds per decode step that each configuration's hooks add: the
    backbone pre-hook (once per step) and the layer hooks (once per capped
    layer), called directly on decode-shaped tensors, many times."""
    found = find_layers(model)
    d = found.hidden_size
    out = {}
    x = torch.randn(1, 1, d)
    past = ids.shape[1]
    cache = transformers.DynamicCache()
    with torch.no_grad():  # a cache holding the prompt: the calls are decode steps
        model(input_ids=ids, past_key_values=cache, use_cache=True)
    kwargs = {
        "input_ids": ids[:, :1],
        "attention_mask": torch.ones(1, past + 1, dtype=torch.long),
        "past_key_values": cache,
    }

    def timed(fn) -> float:
        for _ in range(200):
            fn()
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, (time.perf_counter() - t0) / calls)
        return 1e6 * best

    def ours(hooks, pairs):
        def step():
            hooks.pre_hook(found.backbone, (), kwargs)
            for blk, h in pairs:
                h(blk, (x,), x)

        return step

    for name, a in atts.items():
        with a, torch.no_grad():
            pairs = [(found.blocks[i], h) for i in capped for h in found.blocks[i]._forward_hooks.values()]
            out[name] = timed(ours(a._hooks, pairs))
    ref_fns = [(found.blocks[i], h) for i, h in ref_hooks]

    def ref_step():
        for blk, h in ref_fns:
            h(blk, (x,), x)

    with torch.no_grad():
        out["reference"] = timed(ref_step)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=9)
    # one thread: with two, the machine's timing noise exceeds what is measured
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build(args.hidden, args.layers, args.vocab)
    capped = list(range(args.layers // 2 - 2, args.layers // 2 + 2))
    g = torch.Generator().manual_seed(1)
    axis = torch.randn(args.layers, args.hidden, generator=g)
    ids = torch.randint(3, args.vocab, (1, args.prompt), generator=g)
    am = torch.ones_like(ids)

    # thresholds where the caps fire on a good share of tokens
    with torch.no_grad():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    taus = {i: float(torch.quantile(hs[i + 1][0].float() @ (axis[i] / axis[i].norm()), 0.5)) for i in capped}

    att = Attachment(model, axis)
    att.cap(capped, taus)
    att_mon = Attachment(model, axis)
    att_mon.cap(capped, taus)
    att_mon.monitor(capped)
    att_latch = Attachment(model, axis)
    pol = att_latch.latch(capped[0], 1e6, k=3, window=8)  # every token is below: latched from the fourth
    att_latch.cap(capped, taus, policy=pol)
    blocks = find_layers(model).blocks
    ref_hooks = [(i, reference_style_cap_hook([(-axis[i], -taus[i])])) for i in capped]

    def generate():
        with torch.no_grad():
            t0 = time.perf_counter()
            model.generate(
                input_ids=ids,
                attention_mask=am,
                max_new_tokens=args.tokens,
                min_new_tokens=args.tokens,
                do_sample=False,
            )
            return (time.perf_counter() - t0) / args.tokens

    def run(name):
        if name == "none":
            return generate()
        if name == "axis_steer":
            with att:
                return generate()
        if name == "+monitor":
            with att_mon:
                return generate()
        if name == "+latch":
            with att_latch:
                return generate()
        handles = [blocks[i].register_forward_hook(h) for i, h in ref_hooks]
        try:
            return generate()
        finally:
            for h in handles:
                h.remove()

    isolated = isolated_costs(model, {"axis_steer": att, "+monitor": att_mon, "+latch": att_latch}, ref_hooks, capped, ids)
    names = ["none", "axis_steer", "+monitor", "+latch", "reference"]
    for name in names:  # warm-up
        run(name)
    times = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            times[name].append(run(name))
    med = {n: statistics.median(v) for n, v in times.items()}
    # added time: median over rounds of the paired difference with "none"
    added = {n: statistics.median(a - b for a, b in zip(times[n], times["none"])) for n in names}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; model hidden {args.hidden}, "
        f"{args.layers} layers; capping layers {capped}; {args.tokens} tokens x {args.rounds} rounds"
    )
    print(f"{'config':>11} | {'ms/token':>9} | {'added us/token':>14} | {'added %':>7}")
    for n in names:
        print(f"{n:>11} | {1e3 * med[n]:>9.3f} | {1e6 * added[n]:>14.1f} | {100 * added[n] / med['none']:>6.2f}%")
    ref = added["reference"]
    r1 = added["axis_steer"] / ref if ref > 0 else float("nan")
    r2 = added["+monitor"] / ref if ref > 0 else float("nan")
    r3 = added["+latch"] / added["axis_steer"] if added["axis_steer"] > 0 else float("nan")
    print(f"end to end: axis_steer added / reference added = {r1:.2f}; with monitoring {r2:.2f}; "
          f"latched / plain capping added {r3:.2f} "
          f"(paired medians over {args.rounds} rounds; the step time's noise is of the order of the added time)")
    print()
    print("isolated, per decode step (the hooks called on a (1, 1, d) output, as generate calls them):")
    for n in ("axis_steer", "+monitor", "+latch", "reference"):
        print(f"{n:>11} | {isolated[n]:>8.1f} us/token added ({isolated[n] / (1e6 * med['none']) * 100:.3f}% of a step)")
    i1 = isolated["axis_steer"] / isolated["reference"]
    i2 = isolated["+monitor"] / isolated["reference"]
    i3 = isolated["+latch"] / isolated["axis_steer"]
    print(f"axis_steer added / reference added = {i1:.2f} (target <= 0.33); with monitoring {i2:.2f} (target <= 0.50)")
    print(f"with a drift policy / plain capping added = {i3:.2f} (target <= 1.10)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "ms_per_token": {k: 1e3 * v for k, v in med.items()},
                    "added_us_end_to_end": {k: 1e6 * v for k, v in added.items()},
                    "added_us_isolated": isolated,
                    "ratio": i1,
                    "ratio_monitor": i2,
                    "ratio_latch_to_capping": i3,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    transformers.logging.set_verbosity_error()
    main()
