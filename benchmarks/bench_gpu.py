"""The GPU benchmark: the capping op and capping in a whole model, on one card, in one run.

Every ratio it prints compares figures taken in this run on this card, and every
figure goes to a JSON file (``--json``). Three parts:

1. The op, bfloat16, at decode shapes (1x4096, 64x4096, 1x8192) and prefill
   shapes (8192x4096, 16384x8192): GPU time (CUDA events over many calls; every
   call writes every row - a floor above all rows, then a ceiling below them -
   and, separately, half the rows capped), for decode shapes also the GPU time
   per call inside a captured CUDA graph of many calls, the host time per call
   from Python (``time.perf_counter`` around many calls with no synchronisation:
   the launch overhead), the reference code's formula in eager torch
   (:func:`axis_steer.runtime.reference.reference_style_cap_hook`: einsum projection,
   clamp, outer-product subtract, in the model's dtype), the same formula under
   ``torch.compile``, and ``h.clone()``. Targets: prefill <= 1.1x clone; decode
   host time <= 10 us per call.
2. A whole model: a random-weight Llama-3-8B-shaped model in bfloat16 (32
   layers, hidden 4096), batch 1 and 32, ``max_new_tokens = min_new_tokens``.
   Eager ``generate``: no hooks, axis_steer capping layers 16..31 (floors at the
   median projection, so caps fire), reference-style hooks on the same layers,
   and axis_steer capping plus monitoring of those layers - time per decode step
   (CUDA events recorded by a logits processor at every step, so the prompt is
   not counted) and % added. Compiled ``generate(cache_implementation="static")``
   (inductor, CUDA graphs) with the hooks attached before the first call:
   capping vs none, % added, graph breaks, recompilations when thresholds are
   changed and capping is switched off and on between calls (with their
   reasons), CUDA-graph skips, tokens equal to eager capping. Targets: eager and
   compiled capping <= 1% per token; monitoring on top <= 0.5% more.
3. A prefill of 4096 tokens with and without capping 16 layers: % added
   (target <= 0.5%).

Time guards: each part is skipped, with the reason printed and recorded, when
the time left in ``--budget`` seconds (default 180; 110 with ``--quick``)
is less than it needs; the JSON file is rewritten after every part, so a run
stopped from outside keeps what it measured.

``--smoke`` runs every code path at toy sizes on whatever device there is (the
CPU included): a check of the script itself, not a benchmark.

Usage: python benchmarks/bench_gpu.py [--quick] [--budget S] [--json OUT] [--smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import torch

import axis_steer.runtime._torch_ops as _torch_ops
from axis_steer.runtime.hooks import Attachment
from axis_steer.runtime.models import find_layers
from axis_steer.runtime.reference import reference_style_cap_hook

OPS = torch.ops.axis_steer

LLAMA_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
TOY = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    tie_word_embeddings=False,
)

TARGETS = {
    "prefill_op_over_clone": 1.1,
    "decode_host_us": 10.0,
    "eager_cap_added_pct": 1.0,
    "compiled_cap_added_pct": 1.0,
    "monitor_more_pct": 0.5,
    "prefill_cap_added_pct": 0.5,
}


# ---- timing ---------------------------------------------------------------------------------------


class Clock:
    """GPU time by CUDA events, host time by perf_counter; on the CPU (smoke
    runs) both are wall time."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def _iters(self, fn: Callable, target_s: float, max_iters: int) -> int:
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        one = max(time.perf_counter() - t0, 1e-6)
        return int(max(5, min(max_iters, target_s / one)))

    def gpu(self, fn: Callable, *, target_s: float = 0.03, max_iters: int = 2000, repeats: int = 3) -> float:
        """Median seconds of device time per call."""
        for _ in range(3):
            fn()
        n = self._iters(fn, target_s, max_iters)
        times = []
        for _ in range(repeats):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(n):
                    fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3 / n)
            else:
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                times.append((time.perf_counter() - t0) / n)
        return statistics.median(times)

    def host(self, fn: Callable, *, n: int = 1000, repeats: int = 3) -> float:
        """Median seconds of host time per call, with no synchronisation
        inside the loop (the launch overhead, while the GPU keeps up)."""
        for _ in range(3):
            fn()
        times = []
        for _ in range(repeats):
            self.sync()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times.append((time.perf_counter() - t0) / n)
        self.sync()
        return statistics.median(times)

    def graph(self, fn: Callable, *, calls: int = 100, replays: int = 20) -> float | None:
        """Device seconds per call of fn inside a captured CUDA graph of
        `calls` calls (None off CUDA)."""
        if not self.cuda:
            return None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
        graph.replay()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        del graph
        return start.elapsed_time(end) / 1e3 / (replays * calls)


class StepClock:
    """A logits processor that marks every generation step (a CUDA event, or
    the wall time on the CPU): the mean time per decode step, without the
    prompt."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.marks: list[Any] = []

    def __call__(self, input_ids, scores):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.marks.append(e)
        else:
            self.marks.append(time.perf_counter())
        return scores

    def per_step(self) -> float:
        if len(self.marks) < 2:
            return float("nan")
        if self.cuda:
            self.marks[-1].synchronize()
            total = self.marks[0].elapsed_time(self.marks[-1]) / 1e3
        else:
            total = self.marks[-1] - self.marks[0]
        return total / (len(self.marks) - 1)


# ---- bookkeeping ------------------------------------------------------------------------------------


class Run:
    def __init__(self, args):
        self.args = args
        self.start = time.monotonic()
        self.deadline = self.start + args.budget
        self.out: dict[str, Any] = {"meta": {}, "ops": [], "model": {}, "prefill": {}, "skipped": [], "targets": TARGETS}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def can(self, part: str, need_s: float) -> bool:
        left = self.left()
        if left >= need_s:
            return True
        why = f"{left:.0f} s of the {self.args.budget:.0f} s budget left, it needs about {need_s:.0f} s"
        print(f"\n-- skipped: {part} ({why})")
        self.out["skipped"].append({"part": part, "why": why})
        return False

    def skip(self, part: str, why: str) -> None:
        print(f"\n-- skipped: {part} ({why})")
        self.out["skipped"].append({"part": part, "why": why})

    def save(self) -> None:
        self.out["meta"]["elapsed_s"] = round(time.monotonic() - self.start, 1)
        if self.args.json:
            tmp = self.args.json + ".tmp"
            with open(tmp, "w") as f:
                json.dump(_finite(self.out), f, indent=1, default=_jsonable)
            os.replace(tmp, self.args.json)


def _finite(x):
    """NaN and infinities as null: the file stays strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return str(x)


def us(s: float | None) -> str:
    return f"{'-':>8}" if s is None or not math.isfinite(s) else f"{s * 1e6:8.1f}"


def meta(device: torch.device) -> dict:
    import transformers

    m = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "axis_steer_with_cuda": bool(_torch_ops.WITH_CUDA),
        "device": str(device),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        m.update(card=p.name, capability=f"{p.major}.{p.minor}", memory_gb=round(p.total_memory / 2**30, 1),
                 sms=p.multi_processor_count)
        with contextlib.suppress(Exception):
            import subprocess

            m["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                         capture_output=True, text=True, timeout=20).stdout.strip()
    return m


# ---- 1. the op -----------------------------------------------------------------------------------------


def bench_op(run: Run, clock: Clock, device: torch.device, n: int, d: int, decode: bool, compiled_ref: bool) -> dict:
    g = torch.Generator(device=device).manual_seed(n * 7 + d)
    h0 = torch.randn(n, d, device=device, generator=g).to(torch.bfloat16)
    u = torch.randn(d, device=device, generator=g)
    u /= u.norm()
    p = OPS.project(h0, u)
    inf = torch.tensor(math.inf, device=device)
    ninf = torch.tensor(-math.inf, device=device)
    above = p.max() + 1.0  # a floor above every row ...
    below = p.min() - 1.0  # ... then a ceiling below every row: each call writes every row
    median = p.median() if n >= 4 else above
    h = h0.clone()

    def op_all():
        OPS.clamp_(h, u, above, inf)
        OPS.clamp_(h, u, ninf, below)

    def restore():
        h.copy_(h0)

    def restore_op():
        h.copy_(h0)
        OPS.clamp_(h, u, median, inf)

    r: dict[str, Any] = {"shape": [n, d], "kind": "decode" if decode else "prefill", "dtype": "bfloat16"}
    r["op_all_rows_s"] = clock.gpu(op_all) / 2
    r["op_half_rows_s"] = max(clock.gpu(restore_op) - clock.gpu(restore), 0.0) if n >= 4 else None
    r["clone_s"] = clock.gpu(lambda: h0.clone())
    r["host_op_s"] = clock.host(lambda: OPS.clamp_(h, u, above, inf), n=2000 if decode else 50)
    # the entry point the model hooks call in eager mode, when the build has it
    direct = getattr(_torch_ops, "apply_direct_", None)
    r["host_direct_s"] = None
    if direct is not None:
        dirs, params = u[None].contiguous(), torch.stack([above, inf]).reshape(1, 2)
        r["host_direct_s"] = clock.host(lambda: direct(h, dirs, (1,), params, None, None, None, None, None),
                                        n=2000 if decode else 50)
    # the reference code's formula: a ceiling at -tau on v = -u is a floor at tau on u
    ref_hook = reference_style_cap_hook([(-u, -float(median))])
    h3 = h0.view(1, n, d)

    def reference():
        return ref_hook(None, (), h3)

    r["ref_eager_s"] = clock.gpu(reference)
    r["host_ref_s"] = clock.host(reference, n=500 if decode else 20)
    r["ref_compiled_s"] = None
    if compiled_ref:
        ref_c = torch.compile(lambda x: ref_hook(None, (), x), dynamic=False)
        ref_c(h3)
        r["ref_compiled_s"] = clock.gpu(lambda: ref_c(h3))
    if decode:
        r["graph_op_s"] = (clock.graph(op_all) or 0.0) / 2 or None
        r["graph_ref_s"] = clock.graph(reference)
    r["op_over_clone"] = r["op_all_rows_s"] / r["clone_s"]
    r["ref_over_op"] = r["ref_eager_s"] / r["op_all_rows_s"]
    if decode:
        host = min(x for x in (r["host_op_s"], r["host_direct_s"]) if x is not None)
        r["target_ok"] = host * 1e6 <= TARGETS["decode_host_us"]
    else:
        r["target_ok"] = r["op_over_clone"] <= TARGETS["prefill_op_over_clone"]
    return r


def part_ops(run: Run, clock: Clock, device: torch.device) -> None:
    smoke = run.args.smoke
    shapes = [(1, 4096, True), (64, 4096, True), (1, 8192, True), (8192, 4096, False), (16384, 8192, False)]
    if smoke:
        shapes = [(1, 64, True), (8, 64, True), (1, 128, True), (256, 64, False), (512, 128, False)]
    print("\n== 1. the op, bfloat16 (floor then ceiling: every call writes every row)")
    head = (f"{'shape':>12} {'op GPU':>8} {'half cap':>8} {'graph':>8} {'clone':>8} {'op/clone':>8} | "
            f"{'ref eager':>9} {'ref comp':>8} {'ref graph':>9} | {'host op':>8} {'direct':>8} {'host ref':>8} | target")
    print(head + "\n" + "-" * len(head) + "   (times in us)")
    for n, d, decode in shapes:
        compiled_ref = not run.args.quick or not decode or (n, d) == (1, 4096) or smoke
        if not run.can(f"op {n}x{d}", 8 + (10 if compiled_ref else 0)):
            continue
        r = bench_op(run, clock, device, n, d, decode, compiled_ref)
        run.out["ops"].append(r)
        target = (f"host <= {TARGETS['decode_host_us']:.0f} us" if decode
                  else f"<= {TARGETS['prefill_op_over_clone']}x clone")
        print(f"{n:>6}x{d:<5} {us(r['op_all_rows_s'])} {us(r['op_half_rows_s'])} {us(r.get('graph_op_s'))} "
              f"{us(r['clone_s'])} {r['op_over_clone']:>7.2f}x | {us(r['ref_eager_s']):>9} {us(r['ref_compiled_s'])} "
              f"{us(r.get('graph_ref_s')):>9} | {us(r['host_op_s'])} {us(r['host_direct_s'])} {us(r['host_ref_s'])} | "
              f"{'ok' if r['target_ok'] else 'MISSED'} ({target})")
        run.save()


# ---- 2. and 3. a whole model ------------------------------------------------------------------------------


def no_init():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            return contextlib.nullcontext()
    return no_init_weights()


def build_model(config: dict, device: torch.device, dtype: torch.dtype):
    """A random-weight LlamaForCausalLM built on the device directly, without
    the slow default initialisation: N(0, 0.02) matrices, unit norms."""
    import warnings

    import transformers as T

    cfg = T.LlamaConfig(**config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device(device), no_init():
            model = T.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    model.eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None
    model.generation_config.bos_token_id = None
    return model


def thresholds(model, axis: torch.Tensor, layers: list[int], ids: torch.Tensor, q: float) -> dict[int, float]:
    """Per-layer floors at the q-quantile of the projections of a prompt."""
    blocks = find_layers(model).blocks
    seen: dict[int, torch.Tensor] = {}
    handles = [blocks[i].register_forward_hook(
        lambda m, a, o, i=i: seen.__setitem__(i, (o if isinstance(o, torch.Tensor) else o[0]).detach()))
        for i in layers]
    try:
        with torch.no_grad():
            model(input_ids=ids, logits_to_keep=1)
    finally:
        for hd in handles:
            hd.remove()
    out = {}
    for i in layers:
        u = (axis[i] / axis[i].norm()).to(seen[i].device)
        out[i] = float(torch.quantile((seen[i].float() @ u).flatten(), q))
    return out


@contextlib.contextmanager
def attached(att: Attachment):
    """Attaches for the block. allow_compiled: after the compiled runs,
    generate() keeps its compiled forward, which the compiled parts below
    retrace themselves (dynamo is reset, or the detach flag fails a guard);
    eager generate calls never use it."""
    att.attach(allow_compiled=True)
    try:
        yield att
    finally:
        att.detach()


class Variants:
    """Switches the model between no hooks, axis_steer capping, capping plus
    monitoring, and the reference-style hooks."""

    def __init__(self, model, axis, layers, taus, batch: int, capacity: int, device):
        self.model = model
        self.cap_att = Attachment(model, axis)
        self.cap = self.cap_att.cap(layers, taus)
        self.mon_att = Attachment(model, axis)
        self.mon_att.cap(layers, taus)
        self.mon = self.mon_att.monitor(layers, capacity=capacity).prepare(batch, capacity, device)
        blocks = find_layers(model).blocks
        self._ref_hooks = [(blocks[i], reference_style_cap_hook([(-axis[i].to(device), -taus[i])])) for i in layers]
        self._ref_handles: list = []

    @contextlib.contextmanager
    def use(self, name: str):
        if name in ("axis_steer", "axis_steer+monitor"):
            with attached(self.cap_att if name == "axis_steer" else self.mon_att):
                yield
        elif name == "reference":
            self._ref_handles = [blk.register_forward_hook(hook) for blk, hook in self._ref_hooks]
            try:
                yield
            finally:
                for hd in self._ref_handles:
                    hd.remove()
        else:
            yield


def generate(model, ids, n_new: int, cuda: bool, **kw) -> tuple[torch.Tensor, float]:
    from transformers import LogitsProcessorList

    clock = StepClock(cuda)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new,
                         min_new_tokens=n_new, do_sample=False, logits_processor=LogitsProcessorList([clock]), **kw)
    return out, clock.per_step()


def pct(a: float, b: float) -> float:
    return (a / b - 1.0) * 100.0


def part_eager(run: Run, model, variants: Variants, prompts: dict, n_new: int, repeats: int, cuda: bool) -> None:
    names = ["none", "axis_steer", "reference", "axis_steer+monitor"]
    print(f"\n== 2a. eager generate, {n_new} new tokens, time per decode step (ms)")
    res = run.out["model"].setdefault("eager", {})
    for batch, ids in prompts.items():
        if not run.can(f"eager generate, batch {batch}", (4 * repeats + 4) * n_new * (0.06 if batch > 1 else 0.035)):
            continue
        times: dict[str, list[float]] = {k: [] for k in names}
        tokens: dict[str, torch.Tensor] = {}
        for name in names:  # warm up each variant
            with variants.use(name), torch.no_grad():
                generate(model, ids, 4, cuda)
        for _ in range(repeats):
            for name in names:
                with variants.use(name), torch.no_grad():
                    out, t = generate(model, ids, n_new, cuda)
                times[name].append(t)
                tokens[name] = out[:, ids.shape[1]:]
        step = {k: statistics.median(v) for k, v in times.items()}
        row = {
            "step_s": step,
            "runs_s": times,
            "added_pct": {k: pct(step[k], step["none"]) for k in names[1:]},
            "monitor_more_pct": pct(step["axis_steer+monitor"], step["axis_steer"]),
            "reference_tokens_equal": float((tokens["reference"] == tokens["axis_steer"]).float().mean()),
        }
        row["target_ok"] = row["added_pct"]["axis_steer"] <= TARGETS["eager_cap_added_pct"]
        res[f"batch_{batch}"] = row
        print(f"  batch {batch:>2}: none {step['none'] * 1e3:7.2f} | axis_steer {step['axis_steer'] * 1e3:7.2f} "
              f"({row['added_pct']['axis_steer']:+.2f}%, target <= {TARGETS['eager_cap_added_pct']}%: "
              f"{'ok' if row['target_ok'] else 'MISSED'}) | reference {step['reference'] * 1e3:7.2f} "
              f"({row['added_pct']['reference']:+.2f}%) | + monitoring {row['monitor_more_pct']:+.2f}% "
              f"(target <= {TARGETS['monitor_more_pct']}%)")
        print(f"            tokens equal, reference-style vs axis_steer capping: {row['reference_tokens_equal']:.0%} "
              "(the reference rounds the projection to bfloat16)")
        run.save()


def part_prefill(run: Run, model, variants: Variants, ids: torch.Tensor, clock: Clock) -> None:
    if not run.can(f"prefill of {ids.shape[1]} tokens", 10):
        return
    print(f"\n== 3. prefill of {ids.shape[1]} tokens (batch 1), with and without capping")

    def forward():
        with torch.no_grad():
            model(input_ids=ids, use_cache=False, logits_to_keep=1)

    times: dict[str, list[float]] = {"none": [], "axis_steer": []}
    for _ in range(3):
        for name in times:
            with variants.use(name):
                times[name].append(clock.gpu(forward, target_s=0.0, max_iters=1, repeats=1))
    t = {k: statistics.median(v) for k, v in times.items()}
    added = pct(t["axis_steer"], t["none"])
    run.out["prefill"] = {"tokens": ids.shape[1], "time_s": t, "runs_s": times, "added_pct": added,
                          "target_ok": added <= TARGETS["prefill_cap_added_pct"]}
    print(f"  none {t['none'] * 1e3:.2f} ms, capping {len(variants.cap.layers)} layers {t['axis_steer'] * 1e3:.2f} ms: {added:+.2f}% "
          f"(target <= {TARGETS['prefill_cap_added_pct']}%: {'ok' if added <= TARGETS['prefill_cap_added_pct'] else 'MISSED'})")
    run.save()


class CompileWatch:
    """Counts dynamo graphs, graph breaks and CUDA-graph skips, and collects
    the reasons of recompilations, between two points."""

    def __init__(self):
        from torch._dynamo.utils import counters

        self.counters = counters
        self.reasons: list[str] = []
        self._handler = None

    def snapshot(self) -> dict:
        c = self.counters
        return {
            "graphs": int(c["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(c["graph_break"].values())),
            "cudagraph_skips": int(c["inductor"]["cudagraph_skips"]),
        }

    @contextlib.contextmanager
    def recompiles(self):
        logger = logging.getLogger("torch._dynamo.guards.__recompiles")
        reasons = self.reasons

        class Collect(logging.Handler):
            def emit(self, record):
                reasons.append(record.getMessage()[:2000])

        handler = Collect()
        with contextlib.suppress(Exception):
            torch._logging.set_logs(recompiles=True)
        logger.addHandler(handler)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            with contextlib.suppress(Exception):
                torch._logging.set_logs()


def part_compiled(run: Run, model, variants: Variants, ids: torch.Tensor, n_new: int, repeats: int,
                  eager_tokens: torch.Tensor | None, taus2: dict, taus: dict, cuda: bool, no_monitor: str = "") -> None:
    """Compiled generate with capping (hooks attached before the first call),
    retuned between calls, then with monitoring too (unless no_monitor gives
    the reason not to), then without hooks."""
    from transformers import CompileConfig

    batch = ids.shape[0]
    key = f"batch_{batch}"
    if not run.can(f"compiled generate, batch {batch} (two compilations)", 100 if not run.args.smoke else 5):
        return
    print(f"\n== 2b. compiled generate(cache_implementation='static'), batch {batch}, {n_new} new tokens")
    if cuda:
        cfg = CompileConfig()  # inductor, mode="reduce-overhead" (CUDA graphs)
    else:
        cfg = CompileConfig(backend="eager", mode=None)
        cfg._compile_all_devices = True
    watch = CompileWatch()
    torch._dynamo.reset()
    watch.counters.clear()
    res: dict[str, Any] = {}
    run.out["model"].setdefault("compiled", {})[key] = res

    def timed(label: str) -> tuple[torch.Tensor, float]:
        times, out = [], None
        for _ in range(repeats):
            with torch.no_grad():
                out, t = generate(model, ids, n_new, cuda, cache_implementation="static", compile_config=cfg)
            times.append(t)
        res.setdefault("runs_s", {})[label] = times
        return out[:, ids.shape[1]:], statistics.median(times)

    cap = variants.cap
    with attached(variants.cap_att):  # attached before the first compiled call (dynamo was reset)
        t0 = time.monotonic()
        with torch.no_grad():
            first, _ = generate(model, ids, n_new, cuda, cache_implementation="static", compile_config=cfg)
        res["first_call_s"] = time.monotonic() - t0
        after_first = watch.snapshot()
        res["after_first_call"] = after_first
        tokens_cap, step_cap = timed("axis_steer")
        with watch.recompiles():
            cap.set_thresholds(taus2)
            timed("axis_steer, other thresholds")
            cap.disable()
            tokens_off, _ = timed("axis_steer, disabled")
            cap.enable()
            cap.set_thresholds(taus)
            tokens_again, _ = timed("axis_steer, enabled again")
        after_retune = watch.snapshot()
        res["after_retuning"] = after_retune
        res["recompilations_when_retuned"] = after_retune["graphs"] - after_first["graphs"]
        res["recompile_reasons"] = watch.reasons[:20]
    res["graph_breaks"] = after_retune["graph_breaks"]
    res["cudagraph_skips"] = after_retune["cudagraph_skips"]
    res["same_tokens_after_retuning"] = bool(torch.equal(tokens_cap, tokens_again))
    if eager_tokens is not None:
        same = (tokens_cap == eager_tokens).float()
        res["tokens_equal_to_eager_capping"] = float(same.mean())
        res["identical_to_eager_capping"] = bool(same.all())
    run.save()

    step_mon = None
    if not no_monitor and run.can(f"compiled generate with monitoring, batch {batch}", 90):
        with attached(variants.mon_att):  # a new hook set: guards fail and it retraces
            with torch.no_grad():
                generate(model, ids, n_new, cuda, cache_implementation="static", compile_config=cfg)
            _, step_mon = timed("axis_steer+monitor")
        res["cudagraph_skips_with_monitor"] = watch.snapshot()["cudagraph_skips"]
    elif no_monitor:
        run.skip(f"compiled generate with monitoring, batch {batch}", no_monitor)

    if not run.can(f"compiled generate without hooks, batch {batch}", 40 if not run.args.smoke else 2):
        return
    with torch.no_grad():  # detached: the compiled code is guarded on it and recompiles
        generate(model, ids, n_new, cuda, cache_implementation="static", compile_config=cfg)
    tokens_none, step_none = timed("none")
    res["at_end"] = watch.snapshot()
    res["step_s"] = {"none": step_none, "axis_steer": step_cap, "axis_steer+monitor": step_mon}
    res["added_pct"] = pct(step_cap, step_none)
    res["monitor_more_pct"] = pct(step_mon, step_cap) if step_mon else None
    res["disabled_tokens_equal_to_none"] = float((tokens_off == tokens_none).float().mean())
    res["target_ok"] = (res["added_pct"] <= TARGETS["compiled_cap_added_pct"] and res["graph_breaks"] == 0
                        and res["recompilations_when_retuned"] == 0)
    print(f"  first call (compiles) {res['first_call_s']:.1f} s; per decode step: none {step_none * 1e3:.3f} ms, "
          f"capping {len(cap.layers)} layers {step_cap * 1e3:.3f} ms ({res['added_pct']:+.2f}%, target <= "
          f"{TARGETS['compiled_cap_added_pct']}%)" + (f"; + monitoring {res['monitor_more_pct']:+.2f}%" if step_mon else ""))
    print(f"  graph breaks {res['graph_breaks']}, recompilations when retuned or switched off and on "
          f"{res['recompilations_when_retuned']}, CUDA-graph skips {res['cudagraph_skips']}; tokens equal to eager "
          f"capping {res.get('tokens_equal_to_eager_capping', float('nan')):.0%}; disabled == no hooks "
          f"{res['disabled_tokens_equal_to_none']:.0%} -> {'ok' if res['target_ok'] else 'MISSED'}")
    for reason in res["recompile_reasons"][:3]:
        print("    recompiled: " + reason.splitlines()[0][:200])
    run.save()


def part_model(run: Run, device: torch.device, clock: Clock) -> None:
    args = run.args
    cuda = device.type == "cuda"
    config = TOY if args.smoke else LLAMA_8B
    n_layers = config["num_hidden_layers"]
    layers = list(range(n_layers // 2, n_layers))
    quick = args.quick
    n_new = 6 if args.smoke else (32 if quick else 128)
    repeats = 1 if args.smoke else (2 if quick else 3)
    prompt = 16 if args.smoke else 64
    prefill = 64 if args.smoke else 4096
    if not run.can("the model (build, eager, prefill, compiled)", 30):
        return
    t0 = time.monotonic()
    model = build_model(config, device, torch.bfloat16)
    run.out["model"]["config"] = {"shape": "toy" if args.smoke else "Llama-3-8B", **config,
                                  "capped_layers": [layers[0], layers[-1]], "new_tokens": n_new, "prompt_tokens": prompt,
                                  "repeats": repeats, "build_s": round(time.monotonic() - t0, 1)}
    print(f"\n== 2. model: {'toy' if args.smoke else 'Llama-3-8B-shaped'} random weights, bfloat16, "
          f"built in {time.monotonic() - t0:.1f} s; capping layers {layers[0]}..{layers[-1]}")
    g = torch.Generator().manual_seed(1)
    axis = torch.randn(n_layers, config["hidden_size"], generator=g)
    vocab = config["vocab_size"]
    prompts = {b: torch.randint(3, vocab, (b, prompt), generator=g).to(device) for b in (1, 32)}
    taus = thresholds(model, axis, layers, prompts[1], 0.5)
    taus2 = thresholds(model, axis, layers, prompts[1], 0.75)
    capacity = prompt + n_new
    variants = {b: Variants(model, axis, layers, taus, b, capacity, device) for b in prompts}
    long_ids = torch.randint(3, vocab, (1, prefill), generator=g).to(device)
    # in order of importance, so that the time guards drop the least useful parts
    part_eager(run, model, variants[1], {1: prompts[1]}, n_new, repeats, cuda)
    part_prefill(run, model, variants[1], long_ids, clock)
    with variants[1].use("axis_steer"), torch.no_grad():
        eager_tokens = generate(model, prompts[1], n_new, cuda)[0][:, prompt:]
    part_compiled(run, model, variants[1], prompts[1], n_new, repeats, eager_tokens, taus2, taus, cuda,
                  no_monitor="--quick: monitoring is measured in eager generate" if quick else "")
    part_eager(run, model, variants[32], {32: prompts[32]}, n_new, repeats, cuda)
    if quick:
        run.skip("compiled generate, batch 32", "--quick")
    elif run.can("compiled generate, batch 32", 100):
        with variants[32].use("axis_steer"), torch.no_grad():
            eager32 = generate(model, prompts[32], n_new, cuda)[0][:, prompt:]
        part_compiled(run, model, variants[32], prompts[32], n_new, repeats, eager32, taus2, taus, cuda,
                      no_monitor="measured at batch 1")
    del model
    if cuda:
        torch.cuda.empty_cache()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer tokens and repeats; compiled monitoring and batch 32 skipped")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 180, 110 with --quick)")
    ap.add_argument("--json", help="write every figure here (rewritten after each part)")
    ap.add_argument("--smoke", action="store_true", help="toy sizes on any device: checks the script, measures nothing")
    ap.add_argument("--parts", default="ops,model", help="comma-separated: ops, model")
    args = ap.parse_args()
    if args.budget is None:
        args.budget = 110.0 if args.quick else 180.0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        print("bench_gpu: no CUDA device; nothing to measure (--smoke checks the script on the CPU)")
        return 2
    if device.type == "cuda" and not _torch_ops.WITH_CUDA:
        print("bench_gpu: axis_steer was built without its CUDA kernels (axis_steer._ops.WITH_CUDA == 0)")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    run = Run(args)
    run.out["meta"] = meta(device)
    run.out["meta"].update(quick=args.quick, smoke=args.smoke, budget_s=args.budget)
    m = run.out["meta"]
    print(f"bench_gpu: {m.get('card', device)}; torch {m['torch']} (CUDA {m['torch_cuda']}), transformers "
          f"{m['transformers']}; budget {args.budget:.0f} s{' (quick)' if args.quick else ''}")
    clock = Clock(device)
    parts = set(args.parts.split(","))
    try:
        if "ops" in parts:
            part_ops(run, clock, device)
        if "model" in parts:
            part_model(run, device, clock)
    finally:
        run.save()
    print(f"\nbench_gpu: done in {time.monotonic() - run.start:.0f} s; skipped: "
          + (", ".join(s["part"] for s in run.out["skipped"]) or "nothing"))
    if args.json:
        print(f"bench_gpu: figures in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
