"""Episode datasets on disk: one compressed ``.npz`` per episode plus ``meta.json``.

Layout::

    <root>/meta.json                 env id/kwargs, image size, action/proprio/state dims,
                                     action bounds, seed, policy, num_episodes, ...
    <root>/episodes/ep_000000.npz    frames uint8 [T+1,H,W,3], actions float [T,A],
                                     proprio float [T+1,P], states float [T+1,S],
                                     rewards float [T], success bool [T]

Each episode file is written atomically (temp file + rename), so an interrupted
collection leaves only whole episodes and a rerun can resume where it stopped.

Validation at the boundary: :func:`write_episode` and :meth:`EpisodeDataset.load_episode`
check every episode (:meth:`Episode.validate`: dtypes, ``T >= 1``, shapes, finite values)
and compare its dimensions with the ``action_dim`` / ``proprio_dim`` / ``state_dim`` /
``image_size`` fields of ``meta.json`` when it has them. A bad file raises
:class:`DatasetError` naming the episode, the file, the field and the value.

Completeness: ``meta.json`` field ``num_episodes`` is the number of episodes the dataset holds
once its collection finished (ids ``0 .. num_episodes-1``). ``scripts/collect.py`` writes it
before collecting, so a dataset whose collection is still running (or was killed) has fewer
files than that. Readers that need the whole dataset (training) call
:meth:`EpisodeDataset.require_complete`, which raises a DatasetError naming the missing ids;
:meth:`EpisodeDataset.missing_episodes` lists them without raising. Datasets from before
``num_episodes`` existed count as complete.
"""
from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import ConfigError, NonFiniteError, check_finite, check_number
from .utils import atomic_write_bytes

EPISODE_KEYS = ("frames", "actions", "proprio", "states", "rewards", "success")
# field -> (dtype: "uint8" exactly, or any "float" / "bool", layout)
FIELD_SPEC = {"frames": ("uint8", "[T+1,H,W,3]"), "actions": ("float", "[T,A]"), "proprio": ("float", "[T+1,P]"),
              "states": ("float", "[T+1,S]"), "rewards": ("float", "[T]"), "success": ("bool", "[T]")}
# meta.json fields that fix an episode's dimensions -> smallest allowed value
META_DIMS = {"action_dim": 1, "proprio_dim": 0, "state_dim": 0, "image_size": 1}
_EPISODE_FILE = re.compile(r"ep_(\d+)\.npz")


class DatasetError(RuntimeError):
    """A dataset file is missing, truncated or inconsistent (the message names it)."""


def _ids(ids: list[int], limit: int = 10) -> str:
    """'3, 7, 9' (the first ``limit`` ids, then how many in all)."""
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def _where(episode_id: int, path: Path) -> str:
    return f"episode {episode_id} ({path})"


@dataclass
class Episode:
    frames: np.ndarray  # uint8 [T+1, H, W, 3]
    actions: np.ndarray  # float [T, A]
    proprio: np.ndarray  # float [T+1, P]
    states: np.ndarray  # float [T+1, S]
    rewards: np.ndarray  # float [T]
    success: np.ndarray  # bool [T]

    @property
    def length(self) -> int:
        """Number of actions T (the episode has T+1 frames)."""
        return int(self.actions.shape[0]) if np.ndim(self.actions) else 0

    def dims(self) -> dict[str, Any]:
        """The episode's dimensions under their meta.json names (``image_size`` is ``(H, W)``)."""
        return {"action_dim": int(self.actions.shape[1]), "proprio_dim": int(self.proprio.shape[1]),
                "state_dim": int(self.states.shape[1]), "image_size": tuple(int(s) for s in self.frames.shape[1:3])}

    def validate(self, where: str) -> None:
        """Raise DatasetError (prefixed by ``where``) unless every field has its dtype, shape and
        finite values: frames uint8 [T+1,H,W,3], actions float [T,A], proprio float [T+1,P],
        states float [T+1,S], rewards float [T], success bool [T], with T >= 1."""
        for k, (dtype, layout) in FIELD_SPEC.items():
            a = getattr(self, k)
            if not isinstance(a, np.ndarray):
                raise DatasetError(f"{where}: field '{k}' must be a numpy array, got {type(a).__name__}")
            if not (a.dtype == np.uint8 if dtype == "uint8" else a.dtype.kind == dtype[0]):
                raise DatasetError(f"{where}: field '{k}' must be {dtype} {layout}, got dtype {a.dtype} "
                                   f"(e.g. {a.ravel()[:1].tolist()!r})")
            if a.ndim != layout.count(",") + 1:
                raise DatasetError(f"{where}: field '{k}' must be {layout.count(',') + 1}-D {layout}, "
                                   f"got shape {list(a.shape)}")
        T = self.length
        if T < 1:
            raise DatasetError(f"{where}: field 'actions' has {T} steps (shape {list(self.actions.shape)}); "
                               "an episode needs at least 1 action")
        want = {"frames": T + 1, "proprio": T + 1, "states": T + 1, "rewards": T, "success": T}
        for k, n in want.items():
            if getattr(self, k).shape[0] != n:
                raise DatasetError(f"{where}: field '{k}' has {getattr(self, k).shape[0]} rows, expected {n} "
                                   f"(actions has T={T} steps)")
        if self.frames.shape[-1] != 3 or min(self.frames.shape[1:3]) < 1:
            raise DatasetError(f"{where}: field 'frames' must be uint8 [T+1,H,W,3], got shape {list(self.frames.shape)}")
        if self.actions.shape[1] < 1:
            raise DatasetError(f"{where}: field 'actions' must be [T,A] with A >= 1, got shape {list(self.actions.shape)}")
        for k in ("actions", "proprio", "states", "rewards"):
            try:
                check_finite(getattr(self, k), k, where)
            except NonFiniteError as e:
                raise DatasetError(str(e)) from e

    def check_dims(self, expect: dict[str, Any], where: str, source: str) -> None:
        """Raise DatasetError if a dimension differs from ``expect`` (meta.json names; an int
        ``image_size`` means square frames). ``source`` says where ``expect`` came from."""
        got = self.dims()
        fields_of = {"action_dim": "actions", "proprio_dim": "proprio", "state_dim": "states", "image_size": "frames"}
        for k, v in expect.items():
            if k not in got or v is None:
                continue
            want = _frame_size(v) if k == "image_size" else int(v)
            if got[k] != want:
                shown = list(got[k]) if k == "image_size" else got[k]
                field = fields_of[k]
                raise DatasetError(f"{where}: field '{field}' has {k} {shown} but {source} says {k}={v!r} "
                                   f"(shape {list(getattr(self, field).shape)})")


def _frame_size(image_size: Any) -> tuple[int, int]:
    """meta.json's ``image_size`` (an int for square frames, or [H, W]) as ``(H, W)``."""
    if isinstance(image_size, (list, tuple)):
        return int(image_size[0]), int(image_size[1])
    return int(image_size), int(image_size)


def episode_path(root: str | Path, episode_id: int) -> Path:
    return Path(root) / "episodes" / f"ep_{episode_id:06d}.npz"


def meta_dims(meta: dict[str, Any]) -> dict[str, Any]:
    """The dimension fields (:data:`META_DIMS`) that ``meta`` records."""
    return {k: meta[k] for k in META_DIMS if meta.get(k) is not None}


def write_episode(root: str | Path, episode_id: int, ep: Episode, meta: dict[str, Any] | None = None) -> Path:
    """Validate and atomically write one episode; returns its path.

    The episode is checked with :meth:`Episode.validate` and against the dimensions of
    ``meta`` (default: ``<root>/meta.json`` when it exists); nothing is written if it fails.
    """
    path = episode_path(root, episode_id)
    where = _where(episode_id, path)
    ep.validate(where)
    if meta is None and (Path(root) / "meta.json").is_file():
        meta = read_meta(root)
    if meta:
        ep.check_dims(meta_dims(meta), where, f"{Path(root) / 'meta.json'}")
    arrays = {f.name: getattr(ep, f.name) for f in fields(Episode)}
    atomic_write_bytes(path, lambda fh: np.savez_compressed(fh, **arrays))
    return path


def write_meta(root: str | Path, meta: dict[str, Any]) -> None:
    payload = json.dumps(meta, indent=2, sort_keys=True).encode()
    atomic_write_bytes(Path(root) / "meta.json", lambda fh: fh.write(payload))


def read_meta(root: str | Path) -> dict[str, Any]:
    """Read and check ``<root>/meta.json`` (a JSON object; dims and num_episodes whole numbers)."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise DatasetError(f"dataset {root}: missing {path} (is this a wmplan dataset? run scripts/collect.py)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: invalid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: must hold a JSON object, got {type(meta).__name__}")
    for k, low in {**META_DIMS, "num_episodes": 1}.items():
        v = meta.get(k)
        if k == "image_size" and isinstance(v, list):
            if len(v) != 2:
                raise DatasetError(f"{path}: field 'image_size' must be an int or [H, W], got {v!r}")
        try:
            for x in v if isinstance(v, list) else [v]:
                check_number(x, k, str(path), low=low, integer=True, allow_none=True)
        except ConfigError as e:
            raise DatasetError(f"{e} (a field of meta.json)") from e
    return meta


class EpisodeDataset:
    """Read access to an on-disk episode dataset.

    Args:
        root: dataset folder (contains ``meta.json`` and ``episodes/``).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.meta = read_meta(self.root)
        ids = []
        for p in (self.root / "episodes").glob("ep_*.npz"):
            m = _EPISODE_FILE.fullmatch(p.name)
            if m is None:
                raise DatasetError(f"dataset {self.root}: episode file {p} is not named ep_<number>.npz")
            ids.append(int(m.group(1)))
        self.episode_ids = sorted(ids)

    def __len__(self) -> int:
        return len(self.episode_ids)

    @property
    def num_episodes(self) -> int | None:
        """meta.json's ``num_episodes`` (the count once collection finished), None for old datasets."""
        n = self.meta.get("num_episodes")
        return None if n is None else int(n)

    def missing_episodes(self) -> list[int]:
        """Ids below ``num_episodes`` that have no file ([] when meta.json has no num_episodes)."""
        present = set(self.episode_ids)
        return [i for i in range(self.num_episodes or 0) if i not in present]

    def require_complete(self) -> EpisodeDataset:
        """Raise DatasetError unless every episode meta.json promises is present; returns self.

        Complete means: episode files exist for ids ``0 .. num_episodes-1`` and for no other id
        (a dataset without ``num_episodes``, from an older wmplan, only needs one episode).
        """
        meta_path = self.root / "meta.json"
        if not self.episode_ids:
            raise DatasetError(f"dataset {self.root}: no episodes in {self.root / 'episodes'} (run scripts/collect.py)")
        n = self.num_episodes
        if n is None:
            return self
        missing = self.missing_episodes()
        if missing:
            raise DatasetError(
                f"dataset {self.root}: {meta_path} says num_episodes={n} but episode(s) {_ids(missing)} are missing "
                f"({len(self)} of {n} present): its collection did not finish; rerun scripts/collect.py with the "
                f"same settings and out_dir={self.root} to finish it")
        extra = [i for i in self.episode_ids if i >= n]
        if extra:
            raise DatasetError(
                f"dataset {self.root}: {meta_path} says num_episodes={n} but episode file(s) {_ids(extra)} lie beyond "
                f"it; rerun scripts/collect.py with the same settings and out_dir={self.root} to record them, or "
                "remove those files")
        return self

    def load_episode(self, episode_id: int) -> Episode:
        """Load one episode; raises DatasetError naming the episode, file and field if it is bad
        (unreadable, a field missing, wrong dtype/shape, NaN/inf, dimensions unlike meta.json)."""
        path = episode_path(self.root, episode_id)
        where = _where(episode_id, path)
        if not path.is_file():
            raise DatasetError(f"{where}: file is missing")
        field = None
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in EPISODE_KEYS if k not in z.files]
                if missing:
                    raise DatasetError(f"{where}: missing field(s) {missing} (has {sorted(z.files)})")
                arrays = {}
                for field in EPISODE_KEYS:
                    arrays[field] = z[field]
        except DatasetError:
            raise
        except ValueError as e:
            if field is not None and "allow_pickle" in str(e):
                raise DatasetError(f"{where}: field '{field}' holds Python objects (dtype object), not numbers; "
                                   "wmplan never unpickles dataset files") from e
            raise DatasetError(f"{where}: unreadable or truncated file (ValueError: {e})") from e
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise DatasetError(f"{where}: unreadable or truncated file ({type(e).__name__}: {e})") from e
        ep = Episode(**arrays)
        ep.validate(where)
        ep.check_dims(meta_dims(self.meta), where, str(self.root / "meta.json"))
        return ep

    def iter_episodes(self, ids: list[int] | None = None) -> Iterator[tuple[int, Episode]]:
        """Yield ``(episode_id, Episode)`` for ``ids`` (default: every episode present)."""
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
