"""What the dataset importers share: the reader interface, errors, frame crop/resize, bounds.

A *reader* opens a dataset in a foreign format and yields wmplan :class:`~..data.Episode`
objects (frames uint8 [T+1, S, S, 3], actions float32 [T, A], proprio float32 [T+1, P],
states float64 [T+1, 0], rewards float32 [T], success bool [T]) plus the meta.json fields that
describe where they came from; :func:`import_episodes` writes them with ``data.py``'s
validating writers.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..data import DatasetError, Episode, write_episode, write_meta
from ..utils import ProgressBar


class FormatError(DatasetError):
    """A source dataset is unsupported, malformed or inconsistent (the message names the file)."""


class DatasetReader(Protocol):
    """A foreign dataset, read episode by episode."""

    def num_episodes(self) -> int:
        """How many episodes :meth:`episodes` yields."""
        ...

    def meta(self) -> dict[str, Any]:
        """meta.json fields (image_size, action_dim, proprio_dim, state_dim, action bounds, source_*)."""
        ...

    def episodes(self) -> Iterator[tuple[int, Episode]]:
        """Yield ``(source episode id, Episode)`` in the source's episode order."""
        ...


def square_crop_box(height: int, width: int) -> tuple[int, int, int]:
    """``(top, left, side)`` of the centred square crop of an ``height x width`` frame."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def frame_transform(height: int, width: int, image_size: int | None) -> dict[str, Any]:
    """How frames of ``height x width`` become square ``image_size`` frames (for meta.json).

    ``image_size=None`` keeps the size of the centred square crop (frames that are already square
    pass through untouched). The result has ``crop`` ([top, left, side] or None) and ``resize``
    ([from, to] or None) and the final ``image_size``.
    """
    top, left, side = square_crop_box(height, width)
    size = side if image_size is None else int(image_size)
    if size < 1:
        raise FormatError(f"image_size must be a whole number >= 1, got {image_size!r}")
    return {"source_frame_size": [height, width],
            "crop": None if side == height == width else [top, left, side],
            "resize": None if size == side else [side, size], "image_size": size}


def crop_resize(frames: np.ndarray, image_size: int | None) -> np.ndarray:
    """Centre-crop uint8 [N, H, W, 3] frames to a square and resize them to ``image_size``.

    Returns uint8 [N, S, S, 3]. Frames already of that square size are returned unchanged; a
    resize is bilinear with antialiasing (torch), rounded back to uint8.
    """
    n, height, width = frames.shape[:3]
    top, left, side = square_crop_box(height, width)
    out = frames[:, top:top + side, left:left + side]
    size = side if image_size is None else int(image_size)
    if size == side:
        return np.ascontiguousarray(out)
    x = torch.from_numpy(np.ascontiguousarray(out)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def to_rgb(frames: np.ndarray, where: str) -> np.ndarray:
    """uint8 [N, H, W] or [N, H, W, 1|3|4] -> uint8 [N, H, W, 3] (grey repeated, alpha dropped)."""
    if frames.dtype != np.uint8:
        raise FormatError(f"{where}: frames must be uint8, got dtype {frames.dtype}")
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise FormatError(f"{where}: frames must be [N, H, W] or [N, H, W, 1|3|4], got shape {list(frames.shape)}")
    if frames.shape[-1] == 1:
        return np.repeat(frames, 3, axis=-1)
    return frames[..., :3]


def bounds_from(low: Any, high: Any, action_dim: int, where: str) -> tuple[list[float], list[float]] | None:
    """``(low, high)`` as lists of ``action_dim`` finite floats, or None when unusable (absent, infinite)."""
    if low is None or high is None:
        return None
    lo = np.asarray(low, dtype=np.float64).reshape(-1)
    hi = np.asarray(high, dtype=np.float64).reshape(-1)
    if lo.shape != (action_dim,) or hi.shape != (action_dim,):
        raise FormatError(f"{where}: action bounds have {lo.size}/{hi.size} values, the actions have {action_dim}")
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        return None
    return lo.tolist(), hi.tolist()


def import_episodes(reader: DatasetReader, out_dir: str | Path, overwrite: bool = False,
                    max_episodes: int | None = None, extra_meta: dict[str, Any] | None = None) -> Path:
    """Write every episode of ``reader`` as a wmplan dataset in ``out_dir``; returns its path.

    meta.json (with ``num_episodes`` and the reader's fields) is written first, then the episodes
    as ``ep_000000.npz`` .. in the source's order, each validated by ``write_episode``. An
    ``out_dir`` that already holds a dataset is refused unless ``overwrite``.
    """
    out = Path(out_dir)
    if (out / "meta.json").exists() or any((out / "episodes").glob("ep_*.npz")):
        if not overwrite:
            raise FormatError(f"out_dir {out} already holds a dataset; choose another folder or pass overwrite=true")
        shutil.rmtree(out / "episodes", ignore_errors=True)
    n = reader.num_episodes()
    if max_episodes is not None:
        n = min(n, int(max_episodes))
    if n < 1:
        raise FormatError("the source dataset has no episodes")
    meta = {**reader.meta(), **(extra_meta or {}), "num_episodes": n}
    out.mkdir(parents=True, exist_ok=True)
    write_meta(out, meta)
    bar = ProgressBar(total=n, desc="import")
    source_ids = []
    for i, (source_id, episode) in enumerate(reader.episodes()):
        if i >= n:
            break
        write_episode(out, i, episode, meta)
        source_ids.append(source_id)
        bar.update(1, steps=episode.length)
    bar.close()
    if len(source_ids) != n:
        raise FormatError(f"the source promised {n} episodes but yielded {len(source_ids)}")
    write_meta(out, {**meta, "source_episode_ids": source_ids})
    return out
