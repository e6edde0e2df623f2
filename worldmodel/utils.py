"""Small shared helpers: devices, seeding, atomic checkpoint I/O, a progress bar, TensorBoard."""
from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..io import atomic_write_bytes  # noqa: F401 (re-exported: the one atomic writer of every layer)


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not of the expected kind."""


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """'auto' -> the CUDA device if one is visible, else CPU; anything else is passed to torch."""
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that is atomic (temp file + rename). Save only tensors/plain containers
    so the file loads with ``weights_only=True``."""
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def cpu_fp32(t: torch.Tensor | None) -> torch.Tensor | None:
    """Detached CPU copy for a checkpoint: floating tensors as fp32, others unchanged, None kept."""
    if t is None:
        return None
    t = t.detach().cpu()
    return t.float() if t.is_floating_point() else t


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)`` on CPU.

    Raises CheckpointError naming the file when it is missing, unreadable, or when
    ``kind`` is given and the file's ``"kind"`` field differs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for torn/foreign files
        raise CheckpointError(f"could not read checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict, got {type(ckpt).__name__}")
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(
            f"checkpoint {path}: field 'kind' is {ckpt.get('kind')!r}, expected {kind!r}"
        )
    return ckpt


class _LineStream:
    """File adaptor for tqdm when stderr is not a terminal: each refresh becomes one log line
    (tqdm's carriage-return redraws would pile up into one endless line in a CI log)."""

    def __init__(self, stream) -> None:
        self.stream, self.last = stream, ""

    def write(self, s: str) -> None:
        s = s.replace("\r", "").rstrip()
        if s and s != self.last:  # close() redraws the final state once more
            self.stream.write(s + "\n")
            self.last = s

    def flush(self) -> None:
        self.stream.flush()


class ProgressBar:
    """A thin wrapper over ``tqdm`` on stderr: ``for x in ProgressBar(it, total, "desc")``, or
    manually ``bar.update(n, **postfix)`` / ``bar.close()``.

    On a terminal it redraws at most 5 times a second; otherwise (logs, CI) it writes one
    line at most every ``log_interval`` seconds, plus the final line.
    """

    def __init__(self, iterable=None, total: int | None = None, desc: str = "", initial: int = 0,
                 log_interval: float = 10.0):
        tty = sys.stderr.isatty()
        self.bar = tqdm(iterable, total=total, desc=desc, initial=initial,
                        file=sys.stderr if tty else _LineStream(sys.stderr), dynamic_ncols=tty,
                        mininterval=0.2 if tty else log_interval, ascii=not tty)

    @property
    def n(self) -> int:
        return self.bar.n

    def __iter__(self):
        yield from self.bar

    def update(self, n: int = 1, **postfix: Any) -> None:
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


class TensorBoardLog:
    """Scalars to TensorBoard event files in ``log_dir`` beside a script's JSON logs.

    ``enabled=False`` or a missing ``tensorboard`` package (one line says how to install it)
    make every call a no-op, so training never depends on the optional extra.
    ``purge_step``: on a resumed run, the first step that is redone (resume step + 1); events at
    or after it, written by the interrupted run, are dropped when TensorBoard reads the curves.
    """

    def __init__(self, log_dir: str | Path, enabled: bool = True, purge_step: int | None = None):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("tensorboard: true, but the tensorboard package is not installed; "
                  "pip install 'wmplan[tensorboard]' for training curves (continuing with the JSON logs)")
            return
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def scalars(self, step: int, values: dict[str, Any], prefix: str = "") -> None:
        """Write every finite int/float of ``values`` as ``<prefix><key>`` at ``step``."""
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(f"{prefix}{k}", float(v), int(step))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_tensorboard_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve of a TensorBoard log directory: tag -> [(step, value)] (needs tensorboard)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
