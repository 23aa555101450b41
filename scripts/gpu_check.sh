#!/usr/bin/env bash
# gpu_check.sh - everything a GPU machine checks and measures, in one command,
# in under 5 minutes on an H100 (nothing downloaded: the machine's python3 with
# its torch, transformers and numpy is all it uses):
#
#   1. the card, the driver and the versions (nvidia-smi, torch, CUDA, ...)
#   2. builds axis_steer in place against that torch, CUDA kernels for the
#      card's own architecture (python setup.py build_ext --inplace: offline,
#      and nothing is installed into the machine's Python)
#   3. checks that the CUDA kernels were built and registered
#   4. the C core's own tests (make test-core)
#   5. the whole pytest suite: the CUDA cases (pytest -m cuda) alongside the
#      rest, in two processes at once; files that need hypothesis are left out
#      when it is not installed
#   6. benchmarks/bench_gpu.py --quick, with the time that is left but 35 s
#   7. benchmarks/bench_ops.py --quick (the CPU path of the op)
#   8. benchmarks/bench_vllm.py --quick (vLLM throughput with and without
#      capping, target <= 1% on a GPU), when this Python has vLLM; otherwise
#      the summary says it was not run and why
#
# Every log and figure goes under the results folder, with summary.md. A stage
# that fails or runs out of time is reported and the next one still runs; each
# has a time limit so that no stage can eat the budget of the others.
#
# Usage: scripts/gpu_check.sh [RESULTS]     (default: $OUT if set, else ./gpu_results)
#
#   PYTHON                      the interpreter (default python3)
#   AXIS_STEER_CUDA_ARCHS       CUDA architectures to build (default: this card's)
#   AXIS_STEER_GPU_CHECK_BUDGET seconds for the whole check (default 290)
#   build/gpu_pydeps            if pytest or hypothesis is missing, this folder
#                               goes on PYTHONPATH (fill it with
#                               scripts/gpu_pydeps.sh where pip can download,
#                               and carry it over)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RESULTS=${1:-${OUT:-gpu_results}}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
PYTHON=${PYTHON:-python3}
START=$(date +%s)
DEADLINE=$((START + ${AXIS_STEER_GPU_CHECK_BUDGET:-290}))
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

STAGES=()
note() { echo "gpu_check: $*"; }
left() { echo $((DEADLINE - $(date +%s))); }
# limit MAX RESERVE: at most MAX seconds, leaving RESERVE for what comes after
limit() {
  local l=$(($(left) - $2))
  [ "$l" -gt "$1" ] && l=$1
  [ "$l" -lt 10 ] && l=10
  echo "$l"
}
# stage NAME SECONDS CMD...: runs CMD with its output in NAME.log, records the outcome
stage() {
  local name=$1 secs=$2
  shift 2
  local log="$RESULTS/$name.log" t0 rc status
  t0=$(date +%s)
  note "[$name] (limit ${secs}s) $*"
  timeout -k 10 "$secs" "$@" >"$log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status="TIMEOUT after ${secs}s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  STAGES+=("$name|$status|$(($(date +%s) - t0))|$name.log")
  note "[$name] $status in $(($(date +%s) - t0))s; $(tail -n 1 "$log" | cut -c1-160)"
  return $rc
}

# ---- 1. the machine ----------------------------------------------------------------
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname) ($(nproc) CPU cores)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "python: $(command -v "$PYTHON") $("$PYTHON" --version 2>&1)"
  echo "nvcc: $(nvcc --version 2>/dev/null | tail -n 1 || echo 'not found')"
  echo "cc: $(cc --version 2>/dev/null | head -n 1 || echo 'not found')"
  echo "ninja: $(ninja --version 2>/dev/null || echo 'not found')"
  "$PYTHON" - <<'EOF'
import importlib
for name in ("torch", "transformers", "numpy", "pytest", "hypothesis", "setuptools", "safetensors"):
    try:
        print(f"{name}: {importlib.import_module(name).__version__}")
    except Exception as exc:
        print(f"{name}: MISSING ({type(exc).__name__})")
try:
    import torch

    print(f"torch CUDA: {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"card {i}: {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs")
except Exception as exc:
    print(f"torch CUDA: unavailable ({exc})")
EOF
} >"$RESULTS/versions.txt" 2>&1
nvidia-smi >"$RESULTS/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed" >>"$RESULTS/nvidia-smi.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv \
  >>"$RESULTS/nvidia-smi.txt" 2>&1 || true
cat "$RESULTS/versions.txt"

if ! "$PYTHON" -c "import pytest, hypothesis" >/dev/null 2>&1 && [ -d build/gpu_pydeps ]; then
  note "pytest or hypothesis is not installed: adding build/gpu_pydeps to PYTHONPATH (after the installed packages)"
  export PYTHONPATH="$PYTHONPATH:$ROOT/build/gpu_pydeps"
fi

# ---- 2. build --------------------------------------------------------------------
if [ -z "${AXIS_STEER_CUDA_ARCHS:-}" ]; then
  AXIS_STEER_CUDA_ARCHS=$("$PYTHON" -c "import torch; a, b = torch.cuda.get_device_capability(); print(f'{a}{b}')" 2>/dev/null || echo "80;90")
  export AXIS_STEER_CUDA_ARCHS
fi
note "building for sm_$AXIS_STEER_CUDA_ARCHS with $MAX_JOBS jobs"
rm -rf build/temp.* build/lib.*
stage build "$(limit 200 170)" "$PYTHON" setup.py build_ext --inplace

# ---- 3. are the CUDA kernels there? ----------------------------------------------
stage cuda_kernels 60 "$PYTHON" - <<'EOF'
import math

import torch

import axis_steer._ops as ext
import axis_steer.runtime._torch_ops  # noqa: F401

print(f"axis_steer._ops.WITH_CUDA = {ext.WITH_CUDA}")
assert ext.WITH_CUDA == 1, "the extension was built without its CUDA kernels"
for op in ("project", "clamp_", "set_projection_", "steer_", "apply_", "apply"):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"axis_steer::{op}", "CUDA"), op
h = torch.randn(8, 4096, device="cuda", dtype=torch.bfloat16)
u = torch.nn.functional.normalize(torch.randn(4096, device="cuda"), dim=0)
torch.ops.axis_steer.clamp_(h, u, torch.tensor(0.5, device="cuda"), torch.tensor(math.inf, device="cuda"))
p = torch.ops.axis_steer.project(h, u)
torch.cuda.synchronize()
assert bool((p >= 0.5 - 0.05).all()), p
print("CUDA kernels registered for every operator; a clamp on the card floors every row")
EOF

# ---- 4. the C core ---------------------------------------------------------------
stage core_tests "$(limit 60 160)" make --no-print-directory test-core

# ---- 5. the test suite -----------------------------------------------------------
if "$PYTHON" -c "import pytest" >/dev/null 2>&1; then
  ignore=()
  if ! "$PYTHON" -c "import hypothesis" >/dev/null 2>&1; then
    for f in $(grep -rl -E "^(from|import) hypothesis" --include="*.py" tests); do
      ignore+=("--ignore=$f")
      note "hypothesis is not installed: leaving out $f"
    done
  fi
  secs=$(limit 150 140)
  common=(-q -p no:cacheprovider -rfEs --durations=10 --continue-on-collection-errors)
  t0=$(date +%s)
  note "[pytest_cuda] (limit ${secs}s, in the background) the CUDA cases (pytest -m cuda)"
  (
    timeout -k 10 "$secs" "$PYTHON" -m pytest "${common[@]}" --junitxml="$RESULTS/pytest_cuda.xml" \
      -m cuda "${ignore[@]}" tests >"$RESULTS/pytest_cuda.log" 2>&1
    rc=$?
    echo "$rc $(date +%s)" >"$RESULTS/.pytest_cuda.done"
    exit $rc
  ) &
  cuda_pid=$!
  OMP_NUM_THREADS=$(($(nproc) / 2 > 1 ? $(nproc) / 2 : 1)) \
    stage pytest_rest "$secs" "$PYTHON" -m pytest "${common[@]}" --junitxml="$RESULTS/pytest_rest.xml" -m "not cuda" "${ignore[@]}" tests
  wait "$cuda_pid"
  read -r rc t1 <"$RESULTS/.pytest_cuda.done" || { rc=1 t1=$(date +%s); }
  rm -f "$RESULTS/.pytest_cuda.done"
  case $rc in
    0) status=ok ;;
    5) status="FAILED (no test ran: was the GPU seen?)" ;;
    124 | 137) status="TIMEOUT after ${secs}s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  STAGES+=("pytest_cuda|$status|$((t1 - t0))|pytest_cuda.log")
  note "[pytest_cuda] $status; $(tail -n 1 "$RESULTS/pytest_cuda.log" | cut -c1-160)"
else
  echo "pytest is not installed for $PYTHON ($("$PYTHON" --version 2>&1)): the test suite did not run." \
    "Install it, or fill build/gpu_pydeps with scripts/gpu_pydeps.sh and carry it here." | tee "$RESULTS/pytest.log"
  STAGES+=("pytest|FAILED (pytest missing)|0|pytest.log")
fi

# ---- 6. and 7. benchmarks --------------------------------------------------------
budget=$(($(left) - 35))
[ "$budget" -lt 40 ] && budget=40
stage bench_gpu $((budget + 15)) "$PYTHON" benchmarks/bench_gpu.py --quick --budget "$budget" --json "$RESULTS/bench_gpu.json"
stage bench_ops "$(limit 40 3)" "$PYTHON" benchmarks/bench_ops.py --quick --json "$RESULTS/bench_ops.json"
if "$PYTHON" -c "import vllm" >/dev/null 2>&1; then
  stage bench_vllm "$(limit 240 3)" "$PYTHON" benchmarks/bench_vllm.py --quick --json "$RESULTS/bench_vllm.json"
else
  echo "vLLM is not installed for $PYTHON: the serving benchmark did not run" >"$RESULTS/bench_vllm.log"
  STAGES+=("bench_vllm|not run (no vLLM in this Python)|0|bench_vllm.log")
  note "[bench_vllm] not run: no vLLM in this Python"
fi

# ---- summary ---------------------------------------------------------------------
"$PYTHON" - "$RESULTS" "$(($(date +%s) - START))" "${STAGES[@]}" <<'EOF' >"$RESULTS/summary.md"
import json
import os
import sys

results, elapsed, stages = sys.argv[1], sys.argv[2], sys.argv[3:]
print("# GPU check\n")
versions = open(os.path.join(results, "versions.txt")).read() if os.path.exists(os.path.join(results, "versions.txt")) else ""
print(f"Whole check: {elapsed} s.\n\n```\n{versions.strip()}\n```\n")
print("| stage | outcome | seconds | log |\n|---|---|---|---|")
for s in stages:
    name, status, secs, log = s.split("|")
    print(f"| {name} | {status} | {secs} | {log} |")
for name in ("pytest_cuda", "pytest_rest"):
    path = os.path.join(results, name + ".log")
    if os.path.exists(path):
        lines = [ln for ln in open(path, errors="replace").read().splitlines() if ln.strip()]
        bad = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
        print(f"\n**{name}**: {lines[-1] if lines else '(empty log)'}")
        for ln in bad[:30]:
            print(f"- {ln[:300]}")
path = os.path.join(results, "bench_gpu.json")
if os.path.exists(path):
    b = json.load(open(path))
    m = b.get("meta", {})
    print(f"\n## GPU benchmark ({m.get('card', '?')}, torch {m.get('torch')}, CUDA {m.get('torch_cuda')}, "
          f"transformers {m.get('transformers')})\n")
    print("| op, bf16 | op GPU us | in graph us | clone us | op / clone | ref eager us | ref compiled us | host us "
          "(dispatcher / direct) | target |")
    print("|---|---|---|---|---|---|---|---|---|")
    f = lambda x: "-" if x is None else f"{x * 1e6:.1f}"  # noqa: E731
    for r in b.get("ops", []):
        print(f"| {r['shape'][0]}x{r['shape'][1]} | {f(r['op_all_rows_s'])} | {f(r.get('graph_op_s'))} | "
              f"{f(r['clone_s'])} | {r['op_over_clone']:.2f} | {f(r['ref_eager_s'])} | {f(r.get('ref_compiled_s'))} | "
              f"{f(r['host_op_s'])} / {f(r.get('host_direct_s'))} | {'ok' if r['target_ok'] else 'missed'} |")
    for k, row in b.get("model", {}).get("eager", {}).items():
        a = row["added_pct"]
        print(f"\n- eager generate, {k}: per step {row['step_s']['none'] * 1e3:.2f} ms; axis_steer {a['axis_steer']:+.2f}%, "
              f"reference-style {a['reference']:+.2f}%, monitoring on top {row['monitor_more_pct']:+.2f}%")
    for k, row in b.get("model", {}).get("compiled", {}).items():
        if "added_pct" in row:
            print(f"- compiled generate, {k}: per step {row['step_s']['none'] * 1e3:.3f} ms; capping {row['added_pct']:+.2f}%, "
                  f"graph breaks {row['graph_breaks']}, recompilations when retuned {row['recompilations_when_retuned']}, "
                  f"CUDA-graph skips {row['cudagraph_skips']}, tokens equal to eager capping "
                  f"{row.get('tokens_equal_to_eager_capping', float('nan')):.0%}")
    pf = b.get("prefill") or {}
    if pf:
        print(f"- prefill of {pf['tokens']} tokens: capping {pf['added_pct']:+.2f}%")
    for s in b.get("skipped", []):
        print(f"- skipped: {s['part']} ({s['why']})")
path = os.path.join(results, "bench_ops.json")
if os.path.exists(path):
    print("\n## CPU op benchmark (bench_ops.py --quick, this machine's CPU)\n")
    print("| shape | dtype | capped | torch op us | reference us | ratio | of copy bandwidth |\n|---|---|---|---|---|---|---|")
    for r in json.load(open(path)):
        print(f"| {r['shape']} | {r['dtype']} | {r['capped']:.0%} | {r['torch_us']:.1f} | {r['reference_us']:.1f} | "
              f"{r['speedup']:.1f}x | {r['of_copy']:.0%} |")
path = os.path.join(results, "bench_vllm.json")
if os.path.exists(path):
    med = json.load(open(path))["median"]
    sizes = sorted(med["none"], key=int)
    print("\n## vLLM throughput (bench_vllm.py --quick), tokens/s and ratio to no axis_steer (target >= 0.99)\n")
    print("| config | " + " | ".join(f"{n} requests" for n in sizes) + " |\n|---|" + "---|" * len(sizes))
    for c, d in med.items():
        print(f"| {c} | " + " | ".join(f"{d[n]:.0f} ({d[n] / med['none'][n]:.3f})" for n in sizes) + " |")
print("\nEvery figure: bench_gpu.json, bench_ops.json, bench_vllm.json; every log: *.log in this folder.")
EOF
cat "$RESULTS/summary.md"
note "done in $(($(date +%s) - START))s; results in $RESULTS"
failed=0
for s in "${STAGES[@]}"; do
  case "$s" in *"|ok|"* | *"|not run ("*) ;; *) failed=1 ;; esac
done
exit $failed
