"""Streaming result sinks: each finished episode is written out at once, so memory does
not grow with the number of episodes and a killed run keeps what it finished."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np

from ..io import atomic_write_bytes
from .mpc import EpisodeResult


class EpisodeSink:
    """Receives each finished episode: ``result`` (with frames when recorded) and its row."""

    def begin(self, kept_rows: Sequence[dict[str, Any]]) -> None:
        """Called once before any episode runs, with the rows a resumed run keeps."""

    def write(self, result: EpisodeResult, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JsonlSink(EpisodeSink):
    """One JSON line per episode, appended and fsynced as each episode ends. On resume the
    file is first rewritten (atomically) with the rows that are kept, so rows of waves that
    did not finish are dropped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._f = None

    def begin(self, kept_rows: Sequence[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r) + "\n" for r in kept_rows).encode()
        atomic_write_bytes(self.path, lambda f: f.write(data))
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, result: EpisodeResult, row: dict[str, Any]) -> None:
        if self._f is None:
            self.begin([])
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


class VideoSink(EpisodeSink):
    """One GIF per episode, ``<dir>/ep_<seed>.gif``: current view | goal image, upscaled
    ``scale`` times (nearest neighbour), the last frame held so the outcome is visible."""

    def __init__(self, directory: str | Path, scale: int = 3, fps: int = 10, hold: int = 5):
        if scale < 1:
            raise ValueError(f"video_scale={scale}: must be >= 1")
        self.dir, self.scale, self.fps, self.hold = Path(directory), int(scale), int(fps), int(hold)

    def write(self, result: EpisodeResult, row: dict[str, Any]) -> None:
        if not result.frames:
            return
        s = self.scale
        big = [np.ascontiguousarray(f.repeat(s, 0).repeat(s, 1)) for f in result.frames]
        big += [big[-1]] * self.hold
        path = self.dir / f"ep_{result.seed:04d}.gif"
        atomic_write_bytes(path, lambda f: imageio.mimsave(f, big, format="GIF", duration=1000 / self.fps, loop=0))
