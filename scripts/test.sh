#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs every test: lint, the C core's own test
# program (plain and under AddressSanitizer + UBSan), a compile of every CUDA
# source with nvcc when it is installed (no GPU needed), and the Python suite
# (GPU tests skip themselves without a GPU). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck disable=SC1091
. "${AXIS_STEER_VENV:-.venv}/bin/activate"

echo "== lint"
ruff check axis_steer tests benchmarks training scripts
clang-format --dry-run --Werror csrc/axis_steer.h csrc/core/*.c csrc/core/*.h csrc/core/*.cu csrc/python/*.c csrc/tests/*.c csrc/torch/*.cpp csrc/torch/*.h

echo "== C core tests"
make --no-print-directory test-core
make --no-print-directory test-core-asan

if command -v nvcc >/dev/null 2>&1; then
  echo "== CUDA sources (compile and link only)"
  .ci/check_cuda.sh
else
  echo "== nvcc not found: CUDA sources not compiled"
fi

echo "== Python tests"
python -m pytest -q -p no:cacheprovider "$@"
