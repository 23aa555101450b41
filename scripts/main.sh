#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then runs the main job on the built-in persona
# model: the Assistant Axis from the model's own responses, calibrated caps,
# capped vs uncapped conversations with drift readings, and the capability
# report. Prints a short summary; results and plots in runs/demo (or the
# folder given as the first argument). A few minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck disable=SC1091
. "${AXIS_STEER_VENV:-.venv}/bin/activate"
axis-steer demo --out "${1:-runs/demo}"
