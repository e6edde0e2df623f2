"""Training-loop helpers shared by the training scripts (issue 11 item 3): bf16 autocast, TF32,
``torch.compile`` of the loss function, and finiteness checks without per-step host syncs.

Precision: ``amp=true`` runs the forward pass and the loss under ``torch.autocast(device_type,
dtype=torch.bfloat16)`` (CPU and CUDA); the weights, their gradients, the optimizer state and the
loss reduction stay fp32 (``ac_training.distance`` casts to fp32), so checkpoints are the same
format either way. TF32 matmuls/convolutions are enabled only on CUDA devices (:func:`tf32`).

Finiteness (issue 9's guarantee: a NaN/inf loss or gradient norm stops training naming the step and
the batch's episodes, and nothing non-finite is ever saved): :class:`FiniteGuard` with
``mode="step"`` checks every step before the update (one host sync a step, free on CPU);
``mode="deferred"`` keeps each step's values and episode ids on the device and checks them in one
sync at the caller's boundaries (logging, evaluation, checkpoints, the end; at the latest every
``max_pending`` steps), raising for the FIRST non-finite step. ``"auto"`` = step on CPU, deferred
on CUDA. The caller must :meth:`FiniteGuard.flush` before every save.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .utils import check_step_finite

FINITE_CHECKS = ("step", "deferred", "auto")


@contextlib.contextmanager
def tf32(device: torch.device) -> Iterator[bool]:
    """Within the block, allow TF32 matmuls and cuDNN convolutions when ``device`` is CUDA (fp32
    weights, ~10-bit mantissa products with fp32 accumulation); a no-op elsewhere. The previous
    flags are restored on exit. Yields whether TF32 is on."""
    if device.type != "cuda":
        yield False
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield True
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``device`` when ``amp``; otherwise a no-op context (exact fp32)."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def maybe_compile(fn: Callable, enabled: bool) -> Callable:
    """``torch.compile(fn)`` when ``enabled`` (the first calls compile; later ones run the graph)."""
    return torch.compile(fn) if enabled else fn


def resolve_finite_check(mode: str, device: torch.device) -> str:
    """``auto`` -> ``step`` on CPU (syncs are free there), ``deferred`` on accelerators."""
    if mode == "auto":
        return "step" if device.type == "cpu" else "deferred"
    return mode


class FiniteGuard:
    """Stop training at a non-finite loss or gradient norm, naming the first bad step and its episodes.

    ``record(values, step, episode_ids)`` once per step (before ``opt.step()``); in ``step`` mode it
    raises at once (before the update), in ``deferred`` mode it only queues device tensors and
    :meth:`flush` raises for the first non-finite queued step (the updates after it already ran,
    so the model in memory is then unusable: never save before a flush).
    """

    def __init__(self, mode: str, where: str, hint: str = "", max_pending: int = 256):
        if mode not in ("step", "deferred"):
            raise ValueError(f"FiniteGuard mode must be 'step' or 'deferred', got {mode!r}")
        self.mode, self.where, self.hint, self.max_pending = mode, where, hint, max_pending
        self.pending: list[tuple[int, dict[str, torch.Tensor], Any]] = []

    def record(self, values: dict[str, torch.Tensor], step: int, episode_ids: Any) -> None:
        """Check (``step``) or queue (``deferred``) this step's scalar values."""
        if self.mode == "step":
            check_step_finite(values, step, episode_ids, self.where, self.hint)
            return
        vals = {k: v.detach().float().reshape(()) for k, v in values.items()}
        self.pending.append((step, vals, episode_ids))
        if len(self.pending) >= self.max_pending:
            self.flush()

    def flush(self) -> None:
        """One host sync for every queued step; raise NonFiniteError for the first non-finite one."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        flags = torch.stack([torch.isfinite(torch.stack(list(v.values()))).all() for _, v, _ in pending])
        bad = (~flags).nonzero()
        if bad.numel() == 0:  # the one sync
            return
        step, vals, ids = pending[int(bad[0])]
        check_step_finite(vals, step, ids, self.where, self.hint, found_after=pending[-1][0])
