"""Distributed data parallel set-up for :func:`~shortcutify.distill` (a no-op in one process)."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["init_from_env", "rank_and_world", "wrap", "gather", "broadcast_state", "from_rank_0"]


def init_from_env() -> None:
    """Initialise the process group when ``torchrun`` started several processes and the caller has not."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device(device: torch.device) -> torch.device:
    """This process's CUDA device under ``torchrun`` (``LOCAL_RANK``), else ``device``."""
    if device.type == "cuda" and rank_and_world()[1] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in ``DistributedDataParallel`` when several processes train, else itself."""
    if rank_and_world()[1] == 1:
        return module
    return nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def gather(obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (``[obj]`` in one process)."""
    world = rank_and_world()[1]
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def broadcast_state(module: nn.Module) -> None:
    """Give every process rank 0's parameters and buffers of ``module``, in place (nothing in one process)."""
    if rank_and_world()[1] == 1:
        return
    with torch.no_grad():
        for t in module.state_dict().values():
            dist.broadcast(t, src=0)


def from_rank_0(obj: Any) -> Any:
    """Rank 0's ``obj`` in every process (``obj`` itself in one process)."""
    if rank_and_world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
