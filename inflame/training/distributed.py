"""Distributed data parallel (DDP) helpers: process group set-up and metric reduction.

torchrun (or a platform's launcher) sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT; the Context carries the ranks; these helpers do the rest.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from inflame.runtime import Context


def init_distributed(ctx: Context) -> bool:
    """Join the process group when the job has several processes; True if distributed."""
    if ctx.world_size <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(ctx.device)
        dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)
    return True


def close_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over all processes (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
