#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs every test: lint, the C core's own test
# program (plain and under AddressSanitizer + UBSan), the CUDA kernels' logic
# on a host emulator against the CPU core (ASan + UBSan, no GPU needed), a
# compile of every CUDA source with nvcc when it is installed (no GPU needed),
# the Python suite (GPU tests skip themselves without a GPU), and the vLLM
# serving tests in their own environment (scripts/setup_vllm.sh). Extra
# arguments go to pytest. On a GPU machine, scripts/gpu_check.sh is the one
# command: it builds there, runs these tests with the GPU ones and benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck disable=SC1091
. "${AXIS_STEER_VENV:-.venv}/bin/activate"

echo "== lint"
ruff check axis_steer tests benchmarks training scripts csrc/tests/cuda_emulation
clang-format --dry-run --Werror csrc/axis_steer.h csrc/core/*.c csrc/core/*.h csrc/core/*.cu csrc/python/*.c csrc/tests/*.c csrc/torch/*.cpp csrc/torch/*.h \
  csrc/tests/cuda_emulation/*.cpp csrc/tests/cuda_emulation/include/*.h

echo "== C core tests"
make --no-print-directory test-core
make --no-print-directory test-core-asan

echo "== CUDA kernels on the host emulator, against the CPU core (no GPU needed)"
make --no-print-directory test-cuda-emulated

if command -v nvcc >/dev/null 2>&1; then
  echo "== CUDA sources (compile and link only)"
  .ci/check_cuda.sh
else
  echo "== nvcc not found: CUDA sources not compiled"
fi

echo "== Python tests"
python -m pytest -q -p no:cacheprovider "$@"

# The vLLM tests run in the serving environment (its own virtual environment:
# vLLM pins many packages): the offline engine against HF, and a real server
# on 127.0.0.1. AXIS_STEER_NO_VLLM=1 leaves them out.
if [ "${AXIS_STEER_NO_VLLM:-0}" = "0" ]; then
  echo "== vLLM serving tests (scripts/setup_vllm.sh)"
  scripts/setup_vllm.sh
  VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" "${AXIS_STEER_VLLM_VENV:-.venv-vllm}/bin/python" \
    -m pytest -q -p no:cacheprovider tests/serving
fi
