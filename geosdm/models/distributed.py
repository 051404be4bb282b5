"""Data-parallel training with ``torch.distributed`` (DDP): launch helpers and rank queries.

Launch a training script on several GPUs (or CPU processes) with torchrun::

    torchrun --nproc_per_node=4 train.py       # train.py calls MultiSpeciesSDM(..., distributed="auto").fit(...)

Under torchrun (``WORLD_SIZE`` > 1) the estimator joins the process group (NCCL on CUDA, gloo on CPU), wraps
network + loss in ``DistributedDataParallel``, deals each epoch's rows (or Zarr chunks) to ranks, and every
rank ends with identical weights; rank 0 is the one that should save. :func:`spawn` runs a function in
``nprocs`` local processes with the gloo backend (tests, CPU-only machines).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from geosdm.errors import InputError

__all__ = ["is_launched", "process_group", "spawn", "world", "wrap_ddp", "free_port"]


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_launched() -> bool:
    """True under a multi-process launcher (torchrun sets ``WORLD_SIZE`` > 1) or an initialised group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def process_group(backend: str | None = None) -> Iterator[tuple[int, int]]:
    """Join the process group described by the torchrun environment for the duration of the block.

    An already initialised group is reused (and left open). Yields ``(rank, world_size)``.

    Raises
    ------
    InputError
        When no group exists and the environment has no ``MASTER_ADDR``/``RANK``/``WORLD_SIZE``.
    """
    if not dist.is_available():
        raise InputError("this torch build has no torch.distributed; train with distributed=False")
    if dist.is_initialized():
        yield dist.get_rank(), dist.get_world_size()
        return
    need = [k for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE") if k not in os.environ]
    if need:
        raise InputError(
            f"distributed training needs the environment variables {need}; launch with "
            "`torchrun --nproc_per_node=N script.py` or use geosdm.models.distributed.spawn(...)"
        )
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend)
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        dist.destroy_process_group()


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """Wrap ``module`` in DistributedDataParallel on ``device`` (parameters broadcast from rank 0)."""
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        return DistributedDataParallel(module, device_ids=[device.index])
    return DistributedDataParallel(module)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, fn: Callable[..., Any], world_size: int, port: int, backend: str, args: tuple[Any, ...]) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size)})
    torch.set_num_threads(1)
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable[..., Any], nprocs: int = 2, *, args: tuple[Any, ...] = (), backend: str = "gloo",
          start_method: str = "spawn") -> None:
    """Run ``fn(rank, world_size, *args)`` in ``nprocs`` local processes joined in one process group.

    ``fn`` must be importable (a module-level function). Raises when any process fails. ``start_method="fork"``
    starts faster (modules already imported are inherited) but is only safe before the parent has run
    multi-threaded work.

    Example
    -------
    >>> spawn(train_one_rank, 2, args=("out",))  # doctest: +SKIP
    """
    import torch.multiprocessing as mp

    if int(nprocs) < 1:
        raise InputError(f"nprocs={nprocs} must be >= 1")
    mp.start_processes(_entry, args=(fn, int(nprocs), free_port(), backend, tuple(args)), nprocs=int(nprocs),
                       join=True, start_method=start_method)
