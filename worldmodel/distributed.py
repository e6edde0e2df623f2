"""torch.distributed helpers for the training scripts (torchrun; gloo on CPU, NCCL on CUDA).

A script calls :func:`init` once: under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment)
it joins the process group from the ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``
variables torchrun sets; otherwise it does nothing and every helper below is a no-op for one
process, so single-process numerics are untouched.

Sharding contract (``scripts/train_predictor.py``): every rank draws the same GLOBAL batch of
window indices from the same seeded generator and keeps its slice :func:`shard_slice`; the
union of the ranks' windows is the single-process batch, and averaging the ranks' gradients
(:func:`all_reduce_grads`) gives its gradient up to float reduction order.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ..checks import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: ``rank`` in ``[0, world_size)``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and metrics."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset: a plain ``python`` run)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(device: torch.device) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL for CUDA devices, gloo
    otherwise); a no-op returning rank 0 of 1 for a single process. Idempotent."""
    ws = env_world_size()
    if ws <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, rank=rank, world_size=ws)
    return DistInfo(rank, ws, local)


R = TypeVar("R")


def launch(train_fn: Callable[[Any, torch.device, DistInfo], R], cfg: Any, device: torch.device) -> R:
    """Join the process group (under torchrun), run ``train_fn(cfg, this rank's device, info)``
    and leave the group, also when it raises."""
    info = init(device)
    try:
        return train_fn(cfg, local_device(device, info), info)
    finally:
        teardown()


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """The CUDA device of this rank (``cuda:<local_rank>``) when training on CUDA; else ``device``."""
    if device.type == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return device


def teardown() -> None:
    """Leave the process group (if joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for one process)."""
    if info.enabled:
        dist.barrier()


def per_rank_batch(batch_size: int, info: DistInfo, where: str) -> int:
    """``batch_size`` (the GLOBAL batch) / world size; ConfigError naming both when not divisible."""
    if batch_size % info.world_size:
        raise ConfigError(f"{where}: 'batch_size' {batch_size} (the global batch) is not divisible by the "
                          f"world size {info.world_size}; use a multiple of {info.world_size}")
    return batch_size // info.world_size


def shard_slice(n: int, info: DistInfo) -> slice:
    """This rank's contiguous share of ``n`` items (``n`` divisible by the world size)."""
    b = n // info.world_size
    return slice(info.rank * b, (info.rank + 1) * b)


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``t`` over ranks (in place; returns ``t``); identity for one process."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(info.world_size)
    return t


def all_reduce_grads(model: torch.nn.Module, info: DistInfo) -> None:
    """Average the gradients of ``model`` over ranks with one flat all-reduce (ranks with equal
    per-rank batches and a per-rank mean loss then hold the global-batch gradient). Parameters
    without a gradient on this rank get a zero one so every rank reduces the same buffer."""
    if not info.enabled:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])  # [sum of numels]
    all_reduce_mean(flat, info)
    i = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[i:i + n].view_as(p.grad))
        i += n


def broadcast_object(obj: object, info: DistInfo, src: int = 0) -> object:
    """``obj`` of rank ``src`` on every rank (pickled; small objects only)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
