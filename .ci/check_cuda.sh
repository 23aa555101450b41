#!/usr/bin/env bash
# check_cuda.sh - compiles every CUDA source under csrc/ with nvcc, warnings as
# errors, for the architectures the build targets, then links the objects
# with the C core they share code with (csrc/core/*.c: validate.c,
# programs.c and what they call) into a shared object with --no-undefined, to
# prove that every axs_ symbol resolves and that the six CUDA entry points of
# csrc/axis_steer.h are exported. Needs nvcc, not a GPU: nothing built here is run.
#
#   AXIS_STEER_CUDA_ARCHS  CUDA architectures, "80;90" by default (as setup.py)
#   NVCC                   the compiler, nvcc on PATH by default
#   CC                     the C compiler for validate.c, gcc by default
#   CXX, PYTHON            the C++ compiler and the Python with torch for the
#                          check of csrc/torch/ops_cuda.cpp (g++, python)
set -euo pipefail

cd "$(dirname "$0")/.."

NVCC=${NVCC:-nvcc}
CC=${CC:-gcc}
ARCHS=${AXIS_STEER_CUDA_ARCHS:-80;90}

if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "check_cuda: $NVCC not found (install the CUDA toolkit or set NVCC)" >&2
  exit 1
fi

gencode=()
arch_list=()
for arch in $(echo "$ARCHS" | tr ',;' '  '); do
  gencode+=(-gencode "arch=compute_${arch},code=sm_${arch}")
  arch_list+=("sm_${arch}")
done
if [ ${#gencode[@]} -eq 0 ]; then
  echo "check_cuda: AXIS_STEER_CUDA_ARCHS='$ARCHS' names no architecture" >&2
  exit 1
fi

mapfile -t sources < <(find csrc -name '*.cu' | sort)
if [ ${#sources[@]} -eq 0 ]; then
  echo "check_cuda: no .cu files under csrc/" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The flags of setup.py (-O3, no FMA contraction, C++17), plus warnings as
# errors for both nvcc and the host compiler.
nvcc_flags=(-std=c++17 -O3 --fmad=false -Icsrc "${gencode[@]}"
  -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror,-fPIC)

echo "check_cuda: $("$NVCC" --version | tail -n 1)"
echo "check_cuda: architectures ${arch_list[*]}"
objects=()
for src in "${sources[@]}"; do
  obj="$tmp/$(echo "$src" | tr '/' '_').o"
  echo "check_cuda: compiling $src"
  echo "  $NVCC ${nvcc_flags[*]} -c $src -o $obj"
  "$NVCC" "${nvcc_flags[@]}" -c "$src" -o "$obj"
  objects+=("$obj")
done

# The C core as setup.py builds it, less OpenMP (not needed to resolve symbols).
c_flags=(-std=c11 -O2 -fPIC -Wall -Wextra -Werror -ffp-contract=off -fno-fast-math)
c_objects=()
for src in csrc/core/*.c; do
  obj="$tmp/$(echo "$src" | tr '/' '_').o"
  echo "check_cuda: compiling $src"
  echo "  $CC ${c_flags[*]} -c $src -o $obj"
  "$CC" "${c_flags[@]}" -c "$src" -o "$obj"
  c_objects+=("$obj")
done

so="$tmp/libaxs_cuda_check.so"
echo "check_cuda: linking ${#objects[@]} CUDA and ${#c_objects[@]} C object(s)"
echo "  $NVCC -shared ${gencode[*]} -Xcompiler -fPIC -Xlinker --no-undefined <objects> -lm -o $so"
"$NVCC" -shared "${gencode[@]}" -Xcompiler -fPIC -Xlinker --no-undefined \
  "${objects[@]}" "${c_objects[@]}" -lm -o "$so"

# --no-undefined already fails on a missing symbol; say so in words too, and
# check that the CUDA entry points are exported.
undefined=$(nm -D --undefined-only "$so" | awk '{print $NF}' | grep '^axs_' || true)
if [ -n "$undefined" ]; then
  echo "check_cuda: undefined axs_ symbols in the shared object:" >&2
  echo "$undefined" >&2
  exit 1
fi
cuda_entries=(axs_project_cuda axs_clamp_cuda_ axs_set_projection_cuda_ axs_steer_cuda_ axs_apply_cuda_ axs_latch_apply_cuda_)
for sym in "${cuda_entries[@]}"; do
  if ! nm -D --defined-only "$so" | awk '{print $NF}' | grep -qx "$sym"; then
    echo "check_cuda: $sym is not exported by the shared object" >&2
    exit 1
  fi
done

# The torch registration of the CUDA kernels (csrc/torch/ops_cuda.cpp) is
# built only against a CUDA build of torch; check at least that it compiles
# (syntax and types) against the installed torch's headers and the toolkit's.
# A CPU build of torch ships the c10/cuda headers but not one header its CMake
# generates, c10/cuda/impl/cuda_cmake_macros.h (build-time macros, none of
# which the check needs): an empty one stands in for it.
PYTHON=${PYTHON:-python}
registration="skipped (torch not importable)"
if torch_includes=$("$PYTHON" -c "import torch.utils.cpp_extension as c; print('\n'.join(c.include_paths()))" 2>/dev/null); then
  # the toolkit's own include directory, as nvcc reports it (nvcc may be a wrapper)
  cuda_include=$("$NVCC" --dryrun -x cu -c /dev/null -o /dev/null 2>&1 |
    sed -n 's/^#\$ INCLUDES="-I\([^"]*\)".*/\1/p' | head -n 1 | sed 's/ *$//')
  mkdir -p "$tmp/stub/c10/cuda/impl"
  echo "#pragma once" >"$tmp/stub/c10/cuda/impl/cuda_cmake_macros.h"
  cxx_flags=(-std=c++17 -fsyntax-only -Wall -Wextra -Werror -DAXS_WITH_CUDA=1 -Icsrc)
  while IFS= read -r inc; do cxx_flags+=(-isystem "$inc"); done <<<"$torch_includes"
  cxx_flags+=(-isystem "$tmp/stub" -isystem "${cuda_include:-${CUDA_HOME:-/usr/local/cuda}/include}")
  echo "check_cuda: compiling csrc/torch/ops_cuda.cpp (syntax and types, torch $("$PYTHON" -c 'import torch; print(torch.__version__)'))"
  "${CXX:-g++}" "${cxx_flags[@]}" csrc/torch/ops_cuda.cpp
  registration="compiles"
fi

echo "check_cuda: OK (${sources[*]} for ${arch_list[*]}; ${cuda_entries[*]} link; ops_cuda.cpp $registration)"
