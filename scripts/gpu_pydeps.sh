#!/usr/bin/env bash
# gpu_pydeps.sh - fills build/gpu_pydeps with pure-Python wheels of pytest and
# hypothesis and what they need (for Python 3.10 and later), for a GPU machine
# whose Python lacks them and cannot download: carry the folder over, and
# scripts/gpu_check.sh puts it on PYTHONPATH when pytest or hypothesis is
# missing there. Run it where pip can reach the package index.
#
# Usage: scripts/gpu_pydeps.sh [FOLDER]     (default build/gpu_pydeps)
#   PYTHON   the interpreter whose pip runs (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-build/gpu_pydeps}
PYTHON=${PYTHON:-python3}
rm -rf "$DEST"
"$PYTHON" -m pip install --quiet --no-compile --target "$DEST" --only-binary=:all: \
  --python-version 3.10 --implementation py "pytest>=8" "hypothesis>=6.80" \
  "exceptiongroup>=1" "tomli>=1" # the backports pytest and hypothesis import on Python 3.10
rm -rf "$DEST/bin"
echo "gpu_pydeps: $(du -sh "$DEST" | cut -f1) in $DEST:" $(ls "$DEST" | grep -v dist-info | tr '\n' ' ')
