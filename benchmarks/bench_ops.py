"""The fused capping op against the reference formula in eager torch, on the CPU.

For decode-like shapes (1x4096, 64x4096; float32 and bfloat16) and
prefill-like shapes (2048x4096, 16384x4096; bfloat16) it prints, from one run:

* the time per call of axis_steer's clamp from Python, NumPy path and torch
  path: through the dispatcher (``torch.ops.axis_steer.clamp_`` with prebuilt
  tensor bounds) and through the direct entry the model hooks call in eager
  mode (``_torch_ops.apply_direct_``, the same kernel without the dispatcher's
  boxing);
* the reference code's formula in eager torch (matrix-vector product, clamp,
  outer-product subtract, out of place, as the released code does it);
* their ratio, and the bandwidth each achieves against a plain copy of ``h``
  into a preallocated buffer (``dst.copy_(h)``, 2 x size bytes moved).

The op's bytes are those it must move: all of ``h`` read, the capped rows
written. Thresholds sit at the median projection, so half the rows are capped
(the ``all`` rows cap every row). Targets (2-core machine): >= 5x the
reference at decode shapes, >= 2x and >= 70% of copy bandwidth at prefill.

Usage: python benchmarks/bench_ops.py [--quick] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch

from axis_steer import _C
from axis_steer.runtime import _torch_ops

OPS = torch.ops.axis_steer
DIRECT = _torch_ops.apply_direct_


def timeit(fn, *, min_time=0.3, max_calls=20000, repeats=5) -> float:
    """Median seconds per call over `repeats` batches of calls."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    n = int(max(1, min(max_calls, min_time / one / repeats)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)


def bench(n_rows: int, d: int, dtype: torch.dtype, all_rows: bool = False) -> dict:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n_rows, d, generator=g).to(dtype)
    u = torch.randn(d, generator=g)
    u = u / u.norm()
    p = (h.float() @ u)
    # a single row is always capped (a median threshold would sit on it)
    lo_val = float(p.max()) + 1.0 if all_rows or n_rows < 4 else float(p.median())
    lo = torch.tensor(lo_val)
    hi = torch.tensor(math.inf)
    capped_frac = float((p < lo_val).float().mean())
    work = h.clone()

    if dtype == torch.bfloat16:
        h_np = h.view(torch.int16).numpy().view(np.uint16).copy()
        np_dtype = "bfloat16"
    else:
        h_np = h.numpy().copy()
        np_dtype = None
    u_np = u.numpy()
    work_np = h_np.copy()

    u_d = u.to(dtype)
    neg = -u_d  # the reference stores v = -axis and applies a ceiling at -lo

    def reference():
        proj = h @ neg
        excess = (proj - (-lo_val)).clamp(min=0)
        return h - excess[:, None] * neg[None, :]

    dst = torch.empty_like(h)

    def copy():
        dst.copy_(h)

    # time our op on data that needs capping: restore the input between calls
    # is itself a copy, so time (restore + op) and subtract the restore
    def restore_and_op():
        work.copy_(h)
        OPS.clamp_(work, u, lo, hi)

    def restore_and_op_np():
        np.copyto(work_np, h_np)
        _C.clamp_(work_np, u_np, lo_val, math.inf, dtype=np_dtype)

    dirs = u[None].contiguous()
    params = torch.tensor([[lo_val, math.inf]])

    def restore_and_direct():
        work.copy_(h)
        DIRECT(work, dirs, (1,), params, None, None, None, None, None)

    t_copy = timeit(copy)
    t_torch = max(timeit(restore_and_op) - t_copy, 1e-9)
    t_direct = max(timeit(restore_and_direct) - t_copy, 1e-9)
    t_np_copy = timeit(lambda: np.copyto(work_np, h_np))
    t_numpy = max(timeit(restore_and_op_np) - t_np_copy, 1e-9)
    t_ref = timeit(reference)
    size = h.numel() * h.element_size()
    moved = size + capped_frac * size
    return {
        "shape": f"{n_rows}x{d}",
        "dtype": str(dtype).replace("torch.", ""),
        "capped": capped_frac,
        "torch_us": t_torch * 1e6,
        "direct_us": t_direct * 1e6,
        "numpy_us": t_numpy * 1e6,
        "reference_us": t_ref * 1e6,
        "copy_us": t_copy * 1e6,
        "speedup": t_ref / t_torch,
        "speedup_direct": t_ref / t_direct,
        "op_GBps": moved / t_torch / 1e9,
        "copy_GBps": 2 * size / t_copy / 1e9,
        "of_copy": (moved / t_torch) / (2 * size / t_copy),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the largest shape")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [
        (1, 4096, torch.float32, False),
        (1, 4096, torch.bfloat16, False),
        (64, 4096, torch.float32, False),
        (64, 4096, torch.bfloat16, False),
        (2048, 4096, torch.bfloat16, False),
        (2048, 4096, torch.bfloat16, True),
    ]
    if not args.quick:
        cases += [(16384, 4096, torch.bfloat16, False), (16384, 4096, torch.bfloat16, True)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, axis_steer threads {_C.default_threads()}")
    head = (
        f"{'shape':>11} {'dtype':>8} {'capped':>6} | {'torch op':>9} {'direct':>9} {'numpy op':>9} {'reference':>10} "
        f"{'ratio':>6} {'direct':>6} | {'op GB/s':>8} {'copy GB/s':>9} {'of copy':>7}"
    )
    print(head)
    print("-" * len(head))
    rows = []
    for n, d, dt, all_rows in cases:
        r = bench(n, d, dt, all_rows)
        rows.append(r)
        print(
            f"{r['shape']:>11} {r['dtype']:>8} {r['capped']:>6.0%} | {r['torch_us']:>7.1f}us {r['direct_us']:>7.1f}us "
            f"{r['numpy_us']:>7.1f}us {r['reference_us']:>8.1f}us {r['speedup']:>5.1f}x {r['speedup_direct']:>5.1f}x | "
            f"{r['op_GBps']:>8.1f} {r['copy_GBps']:>9.1f} {r['of_copy']:>6.0%}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
