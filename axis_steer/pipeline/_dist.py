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


def _td():
    import torch.distributed as td

    return td


def setup() -> tuple[int, int]:
    """``(rank, world_size)``, initialising the default process group from the
    launcher's environment when needed."""
    td = _td()
    if not td.is_available():
        return 0, 1
    if not td.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        td.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if td.is_initialized():
        return td.get_rank(), td.get_world_size()
    return 0, 1


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group, ``(0, 1)`` without one."""
    td = _td()
    if td.is_available() and td.is_initialized():
        return td.get_rank(), td.get_world_size()
    return 0, 1


def barrier() -> None:
    if world()[1] > 1:
        _td().barrier()


def _reduce_device() -> Any:
    import torch

    td = _td()
    if td.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum_(t: Any) -> Any:
    """Sums ``t`` over the ranks, in place (moved to the backend's device and back)."""
    if world()[1] == 1:
        return t
    dev = _reduce_device()
    buf = t.to(dev)
    _td().all_reduce(buf)
    t.copy_(buf.to(t.device))
    return t


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` without a process group)."""
    rank, size = world()
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    _td().all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank."""
    if world()[1] == 1:
        return obj
    box = [obj]
    _td().broadcast_object_list(box, src=src)
    return box[0]
