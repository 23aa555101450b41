"""Data-parallel helpers for the pipeline steps (generate, extract, calibrate).

The steps scale out on torch.distributed: under ``torchrun`` (or ``accelerate
launch``) every rank runs the same function; items are sharded by their global
index (``index % world_size == rank``), and running sums are reduced with
``all_reduce`` at the end. When the launcher's environment variables are set
(``WORLD_SIZE > 1``) and no process group exists yet, :func:`setup` creates one
(NCCL when CUDA is available, else gloo). Without a launcher everything runs
as one process and these helpers do nothing.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as td


def setup() -> tuple[int, int]:
    """``(rank, world_size)``, initialising the default process group from the
    launcher's environment when needed."""
    if not td.is_available():
        return 0, 1
    if not td.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        td.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if td.is_initialized():
        return td.get_rank(), td.get_world_size()
    return 0, 1


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group, ``(0, 1)`` without one."""
    if td.is_available() and td.is_initialized():
        return td.get_rank(), td.get_world_size()
    return 0, 1


def barrier() -> None:
    if world()[1] > 1:
        td.barrier()


def _reduce_device() -> Any:
    if td.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum_(t: Any) -> Any:
    """Sums ``t`` over the ranks, in place (moved to the backend's device and back)."""
    if world()[1] == 1:
        return t
    dev = _reduce_device()
    buf = t.to(dev)
    td.all_reduce(buf)
    t.copy_(buf.to(t.device))
    return t


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` without a process group)."""
    rank, size = world()
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    td.all_gather_object(out, obj)
    return out
