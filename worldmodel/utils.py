"""Small shared helpers: devices, seeding, atomic checkpoint I/O and a progress bar."""
from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


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


def atomic_write_bytes(path: str | Path, write_fn) -> None:
    """Call ``write_fn(file_obj)`` on a temp file beside ``path`` then rename it into place.

    A kill mid-write leaves the old file (or nothing) at ``path``, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give files the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that is atomic (temp file + rename). Save only tensors/plain containers
    so the file loads with ``weights_only=True``."""
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


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


class ProgressBar:
    """Minimal dependency-free progress bar on stderr: ``for x in ProgressBar(it, total, "desc")``.

    Also usable manually: ``bar.update(n, **postfix)`` / ``bar.close()``.
    Prints a line per ~2 s when stderr is not a terminal (logs stay readable).
    """

    def __init__(self, iterable=None, total: int | None = None, desc: str = "", initial: int = 0):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc = desc
        self.n = initial
        self.start = time.time()
        self.last = 0.0
        self.postfix: dict[str, Any] = {}
        self.tty = sys.stderr.isatty()

    def __iter__(self):
        for x in self.iterable:
            yield x
            self.update(1)
        self.close()

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.n += n
        self.postfix.update(postfix)
        now = time.time()
        if now - self.last > (0.2 if self.tty else 2.0) or (self.total is not None and self.n >= self.total):
            self.last = now
            self._print(end="\r" if self.tty else "\n")

    def _print(self, end: str) -> None:
        el = time.time() - self.start
        rate = (self.n) / el if el > 0 else 0.0
        tot = f"/{self.total}" if self.total else ""
        pct = f" {100 * self.n / self.total:5.1f}%" if self.total else ""
        eta = ""
        if self.total and rate > 0:
            eta = f" eta {max(self.total - self.n, 0) / rate:6.1f}s"
        post = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.postfix.items())
        sys.stderr.write(f"{self.desc} {self.n}{tot}{pct} [{el:6.1f}s{eta}, {rate:.2f}/s] {post}{end}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            self._print(end="\n")
