"""Test-wide settings. torch runs single-threaded: the test models are tiny,
and a second intra-op thread only adds scheduling noise on a shared 2-core
machine (tests that exercise the C core's threading pass thread counts
explicitly)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import torch
except ImportError:  # the NumPy-only tests still run
    torch = None

if torch is not None:
    torch.set_num_threads(1)

from helpers import have_gpu  # noqa: E402


def require_cuda_kernels() -> None:
    """A GPU is present: axis_steer must have been built with its CUDA kernels."""
    from axis_steer.runtime import _torch_ops

    if _torch_ops.WITH_CUDA:
        return
    if os.environ.get("AXIS_STEER_NO_CUDA", "") not in ("", "0"):
        pytest.skip("built with AXIS_STEER_NO_CUDA")
    pytest.fail(
        "a CUDA device is present but axis_steer was built without its CUDA kernels "
        "(axis_steer._ops.WITH_CUDA == 0): rebuild where nvcc and a CUDA build of torch are found",
        pytrace=False,
    )


@pytest.fixture(
    params=["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not have_gpu(), reason="no CUDA device")])]
)
def device(request):
    """Each device present, for tests that run alike on every one: the CPU
    always, CUDA when a GPU is there (its kernels required then; its cases are
    marked ``cuda``)."""
    if request.param == "cuda":
        require_cuda_kernels()
    return torch.device(request.param)


@pytest.fixture
def cuda_kernels() -> None:
    """For CUDA-only tests (helpers.cuda_only)."""
    require_cuda_kernels()
