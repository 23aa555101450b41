"""Test-wide settings. torch runs single-threaded: the test models are tiny,
and a second intra-op thread only adds scheduling noise on a shared 2-core
machine (tests that exercise the C core's threading pass thread counts
explicitly)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import torch
except ImportError:  # the NumPy-only tests still run
    torch = None

if torch is not None:
    torch.set_num_threads(1)
