"""Distributed data parallel set-up for runs launched with ``torchrun`` (NCCL on GPUs, gloo on CPUs).

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything runs in one process and these helpers are
no-ops, so the same trainer code serves a laptop CPU, one GPU and many nodes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: its rank, the world size and its local device index."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistributedContext:
    """Join the process group when launched by ``torchrun``; a single-process context otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank)


def local_batch(batch_size: int, oversample_foreground: float, context: DistributedContext) -> tuple[int, float]:
    """This process's share of the global batch and the foreground-oversampling fraction that keeps the global
    number of forced-foreground samples (the last ``round(batch × oversample)`` of the global batch), as nnU-Net does.

    Ranks get ``batch // world`` samples, the first ``batch % world`` ranks one more, and at least one each.
    """
    if not context.enabled:
        return batch_size, oversample_foreground
    size = max(1, batch_size // context.world_size + (context.rank < batch_size % context.world_size))
    total = max(batch_size, context.world_size)
    first_forced = int(round(total * (1 - oversample_foreground)))
    start = context.rank * (total // context.world_size) + min(context.rank, total % context.world_size)
    forced = sum(1 for index in range(start, start + size) if index >= first_forced)
    return size, forced / size


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Sum a tensor over all processes (in place; returned for convenience)."""
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(context: DistributedContext) -> None:
    """Wait for every process (e.g. until rank 0 has written a checkpoint)."""
    if context.enabled:
        dist.barrier()


def shutdown(context: DistributedContext) -> None:
    """Leave the process group at the end of a distributed run."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
