"""Read Minari 0.5 datasets (HDF5 storage) with h5py and Pillow only.

Layout: ``<root>/<namespace>/<name>-v0/data/{metadata.json, main_data.hdf5}``; ``source=`` may be
the ``<name>-v0`` folder or its ``data/``. metadata.json holds the serialized observation and
action spaces (JSON strings), ``data_format`` ("hdf5"; "arrow" is not read here),
``jpeg_encoding`` and ``total_episodes``. main_data.hdf5 has one group ``episode_<id>`` per
episode (read in numeric id order) with ``observations`` (T+1 rows; a sub-group per key of a
dict observation, nested dicts as nested groups), ``actions`` (T), ``rewards``,
``terminations``, ``truncations`` (T) and optionally ``infos`` (T+1 rows: the reset's info,
then one per step).

Images (Box uint8 spaces of at least 32x32 with bounds 0..255) are stored JPEG-encoded when
``jpeg_encoding`` is true (minari's default): one byte string per frame, a vlen dataset when
the sizes differ; they are decoded with Pillow, as minari does.

Mapping to a wmplan episode: ``camera`` key -> frames uint8 [T+1, S, S, 3] (grey repeated,
centre-cropped, resized), ``state`` key -> proprio float32 [T+1, P] (P = 0 without one),
actions -> float32 [T, A] (a 1-D action array becomes A = 1), rewards -> float32 [T],
``infos/success`` of the T steps -> success (False when absent), states float64 [T+1, 0].
"""
from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image

from ..data import Episode
from .common import FormatError, bounds_from, crop_resize, frame_transform, to_rgb

_EPISODE = re.compile(r"episode_(\d+)")
MAIN_FILE, META_FILE = "main_data.hdf5", "metadata.json"


def _space(meta: dict[str, Any], key: str, path: Path) -> dict[str, Any] | None:
    """metadata.json's serialized space (a JSON string or an object), None when absent."""
    raw = meta.get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise FormatError(f"{path}: field '{key}' is not a serialized space ({e})") from e


def _subspace(space: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    """The space of ``key`` ('a/b' for nested dicts) inside a serialized Dict space."""
    for part in [p for p in key.split("/") if p]:
        if space is None or space.get("type") != "Dict":
            return None
        space = (space.get("subspaces") or {}).get(part)
    return space


def _leaves(group: h5py.Group, prefix: str = "") -> list[str]:
    """Dataset paths under ``group`` ('a/b' for nested groups)."""
    out = []
    for name, item in group.items():
        out += _leaves(item, f"{prefix}{name}/") if isinstance(item, h5py.Group) else [prefix + name]
    return out


def _jpeg_frames(data: h5py.Dataset, where: str, limit: int | None = None) -> np.ndarray:
    """Decode a dataset of JPEG byte strings (one per frame; the first ``limit``) -> uint8 frames."""
    frames = []
    for i, blob in enumerate(data[()] if limit is None else data[:limit]):
        try:
            with Image.open(io.BytesIO(np.asarray(blob, dtype=np.uint8).tobytes())) as img:
                frames.append(np.array(img, dtype=np.uint8))
        except (OSError, Image.UnidentifiedImageError) as e:
            raise FormatError(f"{where}: frame {i} is not a decodable JPEG ({e})") from e
    return np.stack(frames)


class MinariReader:
    """A Minari dataset (HDF5) as wmplan episodes (see the module docstring for the mapping).

    Args:
        root: the ``<name>-v0`` folder or its ``data/`` folder.
        camera: observation key of the frames ('a/b' inside nested dicts; ``observations`` when
            the observation is a single image array).
        state: observation key of the proprio; None / ``"none"`` / ``"auto"`` = none.
        action: key inside a dict action space (None: the actions are one array).
        image_size: side of the square output frames (None: the centred square crop as it is).
    """

    def __init__(self, root: str | Path, camera: str, state: str | None = None, action: str | None = None,
                 image_size: int | None = None) -> None:
        root = Path(root)
        self.data_dir = root / "data" if (root / "data" / META_FILE).is_file() else root
        self.meta_path, self.h5_path = self.data_dir / META_FILE, self.data_dir / MAIN_FILE
        if not self.meta_path.is_file():
            raise FormatError(f"{root} is not a Minari dataset: expected {root / 'data' / META_FILE} "
                              f"or {root / META_FILE}")
        try:
            self.metadata = json.loads(self.meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FormatError(f"{self.meta_path}: invalid JSON ({e})") from e
        fmt = self.metadata.get("data_format", "hdf5")
        if fmt != "hdf5":
            raise FormatError(f"{self.meta_path}: data_format {fmt!r} is not supported (wmplan reads Minari's hdf5)")
        if not self.h5_path.is_file():
            raise FormatError(f"{self.data_dir}: missing {self.h5_path}")
        self.obs_space = _space(self.metadata, "observation_space", self.meta_path)
        self.act_space = _space(self.metadata, "action_space", self.meta_path)
        self.jpeg = bool(self.metadata.get("jpeg_encoding", True))
        self.camera = camera.strip("/")
        self.state = None if state in (None, "", "none", "auto") else str(state).strip("/")
        self.action = None if action in (None, "", "none") else str(action).strip("/")
        try:
            with h5py.File(self.h5_path, "r") as f:
                ids = []
                for name in f.keys():
                    m = _EPISODE.fullmatch(name)
                    if m is None:
                        raise FormatError(f"{self.h5_path}: group {name!r} is not named episode_<id>")
                    ids.append(int(m.group(1)))
                self.ids = sorted(ids)
                if not self.ids:
                    raise FormatError(f"{self.h5_path}: no episodes")
                first = f[f"episode_{self.ids[0]}"]
                obs_keys = self._obs_keys(first)
                for option, key in (("camera", self.camera), ("state", self.state)):
                    if key is not None and key not in obs_keys:
                        raise FormatError(f"{self.h5_path}: no observation key {key!r} for {option}=; "
                                          f"observation keys: {obs_keys}")
                frame = self._frames(first, f"episode {self.ids[0]} ({self.h5_path})", limit=1)
                self.action_dim = self._actions(first, "").shape[1]
                self.proprio_dim = self._proprio(first, "").shape[1]
        except OSError as e:
            raise FormatError(f"{self.h5_path}: unreadable or truncated HDF5 file ({e})") from e
        self.transform = frame_transform(frame.shape[1], frame.shape[2], image_size)

    # -- fields of one episode group --------------------------------------------------------
    @staticmethod
    def _obs_keys(group: h5py.Group) -> list[str]:
        obs = group.get("observations")
        return ["observations"] if isinstance(obs, h5py.Dataset) else sorted(_leaves(obs)) if obs is not None else []

    def _dataset(self, group: h5py.Group, path: str, where: str) -> h5py.Dataset:
        item = group.get(path)
        if not isinstance(item, h5py.Dataset):
            raise FormatError(f"{where}: missing dataset '{path}' (has {sorted(_leaves(group))})")
        return item

    def _frames(self, group: h5py.Group, where: str, limit: int | None = None) -> np.ndarray:
        path = "observations" if self.camera == "observations" else f"observations/{self.camera}"
        data = self._dataset(group, path, where)
        space = self.obs_space if self.camera == "observations" else _subspace(self.obs_space, self.camera)
        image_ndim = len((space or {}).get("shape") or []) or None
        encoded = data.dtype.kind == "O" or (image_ndim is not None and data.ndim == 2 and image_ndim != 1)
        frames = _jpeg_frames(data, where, limit) if encoded else np.asarray(data[()] if limit is None else data[:limit])
        if frames.dtype != np.uint8 or frames.ndim not in (3, 4):
            raise FormatError(f"{where}: camera={self.camera!r} is not an image array (dtype {frames.dtype}, "
                              f"shape {list(frames.shape)}); observation keys: {self._obs_keys(group)}")
        return to_rgb(frames, where)

    def _proprio(self, group: h5py.Group, where: str) -> np.ndarray:
        n_obs = self._num_obs(group, where)
        if self.state is None:
            return np.zeros((n_obs, 0), np.float32)
        path = "observations" if self.state == "observations" else f"observations/{self.state}"
        x = np.asarray(self._dataset(group, path, where)[()])
        if x.dtype.kind not in "fiub":
            raise FormatError(f"{where}: state={self.state!r} is not numeric (dtype {x.dtype})")
        return x.reshape(len(x), -1).astype(np.float32)

    def _num_obs(self, group: h5py.Group, where: str) -> int:
        path = "observations" if self.camera == "observations" else f"observations/{self.camera}"
        return int(self._dataset(group, path, where).shape[0])

    def _actions(self, group: h5py.Group, where: str) -> np.ndarray:
        path = "actions" if self.action is None else f"actions/{self.action}"
        item = group.get(path)
        if isinstance(item, h5py.Group):
            raise FormatError(f"{where}: the actions are a dict; choose one with action=<key> "
                              f"(keys: {sorted(_leaves(item))})")
        a = np.asarray(self._dataset(group, path, where)[()])
        if a.dtype.kind not in "fiub":
            raise FormatError(f"{where}: '{path}' is not numeric (dtype {a.dtype})")
        return a.reshape(len(a), -1).astype(np.float32)

    # -- the reader interface ---------------------------------------------------------------
    def num_episodes(self) -> int:
        return len(self.ids)

    def action_bounds(self) -> tuple[list[float], list[float], str]:
        """(low, high, where from): the Box action space in metadata.json, else the data min/max."""
        space = self.act_space if self.action is None else _subspace(self.act_space, self.action)
        if space is not None and space.get("type") == "Box":
            b = bounds_from(space.get("low"), space.get("high"), self.action_dim, str(self.meta_path))
            if b is not None:
                return b[0], b[1], "action_space"
        low, high = np.full(self.action_dim, np.inf), np.full(self.action_dim, -np.inf)
        with h5py.File(self.h5_path, "r") as f:
            for i in self.ids:
                a = self._actions(f[f"episode_{i}"], f"episode {i} ({self.h5_path})")
                low, high = np.minimum(low, a.min(0)), np.maximum(high, a.max(0))
        return low.tolist(), high.tolist(), "data min/max"

    def meta(self) -> dict[str, Any]:
        low, high, bounds_src = self.action_bounds()
        return {"env_id": None, "env_kwargs": {}, "image_size": self.transform["image_size"],
                "action_dim": self.action_dim, "proprio_dim": self.proprio_dim, "state_dim": 0,
                "action_low": low, "action_high": high, "action_bounds_source": bounds_src,
                "seed": None, "policy": "recorded", "source_format": "minari",
                "source_minari_version": self.metadata.get("minari_version"),
                "source_dataset_id": self.metadata.get("dataset_id"), "source_path": str(self.data_dir.resolve()),
                "source_jpeg_encoding": self.jpeg, "camera": self.camera, "state_key": self.state,
                "action_key": self.action, **{k: v for k, v in self.transform.items() if k != "image_size"}}

    def read_episode(self, f: h5py.File, episode_id: int) -> Episode:
        """Load ``episode_<episode_id>`` of the open file ``f`` as a wmplan Episode."""
        where = f"episode {episode_id} ({self.h5_path})"
        group = f[f"episode_{episode_id}"]
        frames = self._frames(group, where)
        actions = self._actions(group, where)
        proprio = self._proprio(group, where)
        rewards = np.asarray(self._dataset(group, "rewards", where)[()], dtype=np.float32).reshape(-1)
        T = len(actions)
        for name, got, want in (("observations", len(frames), T + 1), ("state", len(proprio), T + 1),
                                ("rewards", len(rewards), T)):
            if got != want:
                raise FormatError(f"{where}: '{name}' has {got} rows but the episode has {T} actions "
                                  f"(expected {want}; mismatched lengths)")
        success = np.zeros(T, bool)
        info = group.get("infos/success")
        if isinstance(info, h5py.Dataset):
            s = np.asarray(info[()]).astype(bool).reshape(-1)
            if len(s) not in (T, T + 1):
                raise FormatError(f"{where}: 'infos/success' has {len(s)} rows for {T} steps (mismatched lengths)")
            success = s[-T:]
        return Episode(frames=crop_resize(frames, self.transform["image_size"]), actions=actions,
                       proprio=proprio, states=np.zeros((T + 1, 0), np.float64), rewards=rewards, success=success)

    def episodes(self) -> Iterator[tuple[int, Episode]]:
        try:
            with h5py.File(self.h5_path, "r") as f:
                for i in self.ids:
                    yield i, self.read_episode(f, i)
        except OSError as e:
            raise FormatError(f"{self.h5_path}: unreadable or truncated HDF5 file ({e})") from e
