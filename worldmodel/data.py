"""Episode datasets on disk: one compressed ``.npz`` per episode plus ``meta.json``.

Layout::

    <root>/meta.json                 env id/kwargs, image size, action bounds, seed, policy, ...
    <root>/episodes/ep_000000.npz    frames uint8 [T+1,H,W,3], actions float32 [T,A],
                                     proprio float32 [T+1,P], states float64 [T+1,S],
                                     rewards float32 [T], success bool [T]

Each episode file is written atomically (temp file + rename), so an interrupted
collection leaves only whole episodes and a rerun can resume where it stopped.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .utils import atomic_write_bytes

EPISODE_KEYS = ("frames", "actions", "proprio", "states", "rewards", "success")


class DatasetError(RuntimeError):
    """A dataset file is missing, truncated or inconsistent (the message names it)."""


@dataclass
class Episode:
    frames: np.ndarray  # uint8 [T+1, H, W, 3]
    actions: np.ndarray  # float32 [T, A]
    proprio: np.ndarray  # float32 [T+1, P]
    states: np.ndarray  # float64 [T+1, S]
    rewards: np.ndarray  # float32 [T]
    success: np.ndarray  # bool [T]

    @property
    def length(self) -> int:
        """Number of actions T (the episode has T+1 frames)."""
        return int(self.actions.shape[0])

    def validate(self, where: str) -> None:
        T = self.length
        want = {"frames": T + 1, "proprio": T + 1, "states": T + 1, "rewards": T, "success": T}
        for k, n in want.items():
            if getattr(self, k).shape[0] != n:
                raise DatasetError(f"{where}: field '{k}' has {getattr(self, k).shape[0]} rows, expected {n}")
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise DatasetError(f"{where}: field 'frames' must be uint8 [T+1,H,W,3], got {self.frames.dtype} {self.frames.shape}")


def episode_path(root: str | Path, episode_id: int) -> Path:
    return Path(root) / "episodes" / f"ep_{episode_id:06d}.npz"


def write_episode(root: str | Path, episode_id: int, ep: Episode) -> Path:
    """Validate and atomically write one episode; returns its path."""
    path = episode_path(root, episode_id)
    ep.validate(str(path))
    arrays = {f.name: getattr(ep, f.name) for f in fields(Episode)}
    atomic_write_bytes(path, lambda fh: np.savez_compressed(fh, **arrays))
    return path


def write_meta(root: str | Path, meta: dict[str, Any]) -> None:
    payload = json.dumps(meta, indent=2, sort_keys=True).encode()
    atomic_write_bytes(Path(root) / "meta.json", lambda fh: fh.write(payload))


def read_meta(root: str | Path) -> dict[str, Any]:
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise DatasetError(f"dataset {root}: missing {path} (is this a wmplan dataset? run scripts/collect.py)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON ({e})") from e


class EpisodeDataset:
    """Read access to an on-disk episode dataset.

    Args:
        root: dataset folder (contains ``meta.json`` and ``episodes/``).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.meta = read_meta(self.root)
        self.episode_ids = sorted(
            int(p.stem.split("_")[1]) for p in (self.root / "episodes").glob("ep_*.npz")
        )

    def __len__(self) -> int:
        return len(self.episode_ids)

    def load_episode(self, episode_id: int) -> Episode:
        """Load one episode; raises DatasetError naming the episode and file if it is bad."""
        path = episode_path(self.root, episode_id)
        where = f"episode {episode_id} ({path})"
        if not path.is_file():
            raise DatasetError(f"{where}: file is missing")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in EPISODE_KEYS if k not in z.files]
                if missing:
                    raise DatasetError(f"{where}: missing field(s) {missing}")
                ep = Episode(**{k: z[k] for k in EPISODE_KEYS})
        except DatasetError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DatasetError(f"{where}: unreadable or truncated file ({type(e).__name__}: {e})") from e
        ep.validate(where)
        return ep

    def iter_episodes(self, ids: list[int] | None = None):
        for i in self.episode_ids if ids is None else ids:
            yield i, self.load_episode(i)

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
        """Deterministic episode-level train/validation split (at least one of each when possible)."""
        ids = np.array(self.episode_ids)
        if len(ids) == 0:
            raise DatasetError(f"dataset {self.root}: no episodes")
        perm = np.random.default_rng(seed).permutation(len(ids))
        n_val = int(round(val_fraction * len(ids)))
        n_val = min(max(n_val, 1 if val_fraction > 0 and len(ids) > 1 else 0), len(ids) - 1)
        val = sorted(ids[perm[:n_val]].tolist())
        train = sorted(ids[perm[n_val:]].tolist())
        return train, val
