"""Read LeRobotDataset folders (codebase v3.0 and v2.1) with pyarrow and PyAV only.

Layout read (``<root>`` is the dataset folder holding ``meta/info.json``):

* v3.0: ``meta/episodes/chunk-*/file-*.parquet`` (one row per episode: ``length``,
  ``dataset_from_index``/``dataset_to_index``, ``data/chunk_index``, ``data/file_index`` and per
  video camera ``videos/<key>/{chunk_index, file_index, from_timestamp}``); data files
  ``info["data_path"]`` hold several episodes each; an episode's video frames start at its
  ``from_timestamp`` inside a video file shared with other episodes.
* v2.1: ``meta/episodes.jsonl``; one data parquet and one mp4 per camera per episode (chunk =
  episode_index // chunks_size), video time from 0.

Data rows: one per frame (``episode_index``, ``frame_index``, ``timestamp`` float32 restarting at
0 per episode, the features). Image features are structs ``{bytes: PNG, path}``; a video
camera's frame for a row is the one shown at ``from_timestamp + timestamp``, matched within
half a frame (``0.5 / fps``).

Mapping to a wmplan episode: N frames -> frames uint8 [N, S, S, 3] (centre-cropped, resized),
the first N-1 actions -> actions float32 [N-1, A] (the action at the last frame is dropped),
``observation.state`` (or ``state=``) -> proprio float32 [N, P] (P = 0 without one),
``next.reward`` rows 0..N-2 -> rewards (zeros when absent), ``next.success`` likewise (False),
states float64 [N, 0].
"""
from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from ..data import Episode
from .common import FormatError, bounds_from, crop_resize, frame_transform, to_rgb

SUPPORTED_VERSIONS = ("v2.1", "v3.0")
DEFAULT_STATE = "observation.state"
REWARD_KEY, SUCCESS_KEY = "next.reward", "next.success"


def read_json(path: Path) -> Any:
    """Parse a JSON file; FormatError naming it when missing or invalid."""
    if not path.is_file():
        raise FormatError(f"missing {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: invalid JSON ({e})") from e


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a parquet file (only ``columns`` when given); FormatError naming a missing, truncated
    or unreadable file or a missing column."""
    if not path.is_file():
        raise FormatError(f"missing parquet file {path}")
    try:
        schema = pq.read_schema(path)
        if columns is not None:
            absent = [c for c in columns if c not in schema.names]
            if absent:
                raise FormatError(f"{path}: missing column(s) {absent} (has {schema.names})")
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise FormatError(f"{path}: unreadable or truncated parquet file ({type(e).__name__}: {e})") from e


def column_array(table: pa.Table, name: str, where: str) -> np.ndarray:
    """A numeric column as numpy: scalars -> [N], lists of equal length L -> [N, L]."""
    arr = table.column(name).combine_chunks()
    if arr.null_count:
        raise FormatError(f"{where}: column '{name}' has {arr.null_count} missing value(s)")
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        lengths = np.unique(pc.list_value_length(arr).to_numpy(zero_copy_only=False))
        if len(lengths) > 1:
            raise FormatError(f"{where}: column '{name}' has rows of different lengths {lengths.tolist()}")
        values = arr.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(arr), int(lengths[0]) if len(lengths) else 0)
    return arr.to_numpy(zero_copy_only=False)


def decode_video(path: Path, times: np.ndarray, tolerance: float, where: str) -> np.ndarray:
    """Frames of ``path`` shown at ``times`` (seconds, [N]) -> uint8 [N, H, W, 3].

    Seeks to the keyframe before ``times.min()`` and decodes up to ``times.max()``; each time gets
    the decoded frame whose timestamp is nearest, which must lie within ``tolerance`` seconds.
    """
    if not path.is_file():
        raise FormatError(f"{where}: missing video file {path}")
    first, last = float(times.min()), float(times.max())
    frames, stamps = [], []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            container.seek(max(int(round(first / stream.time_base)) - 1, 0), backward=True, any_frame=False,
                           stream=stream)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base)
                if t < first - tolerance:
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                stamps.append(t)
                if t >= last:
                    break
    except (av.FFmpegError, OSError, IndexError) as e:
        raise FormatError(f"{where}: cannot decode video {path} ({type(e).__name__}: {e})") from e
    if not frames:
        raise FormatError(f"{where}: video {path} has no frame in [{first:.4f}, {last:.4f}] s")
    stamps_arr = np.asarray(stamps)
    order = np.argsort(stamps_arr, kind="stable")
    stamps_arr = stamps_arr[order]
    right = np.clip(np.searchsorted(stamps_arr, times), 1, len(stamps_arr) - 1) if len(stamps_arr) > 1 \
        else np.zeros(len(times), dtype=np.int64)
    left = np.maximum(right - 1, 0)
    pick = np.where(np.abs(stamps_arr[left] - times) <= np.abs(stamps_arr[right] - times), left, right)
    err = np.abs(stamps_arr[pick] - times)
    if (err > tolerance).any():
        k = int(np.argmax(err))
        raise FormatError(f"{where}: video {path} has no frame within {tolerance:.4f} s of t={times[k]:.4f} s "
                          f"(nearest {stamps_arr[pick[k]]:.4f} s; {int((err > tolerance).sum())} of {len(times)} "
                          "frames unmatched): timestamps and video disagree")
    return np.stack([frames[i] for i in order[pick]])


class LeRobotReader:
    """A LeRobotDataset folder as wmplan episodes (see the module docstring for the mapping).

    Args:
        root: the dataset folder (holds ``meta/info.json``).
        camera: image or video feature key giving the frames (e.g. ``observation.images.top``).
        state: feature giving the proprio; ``"auto"`` = ``observation.state`` when present, else
            none; None / ``"none"`` = none.
        action: the action feature key.
        image_size: side of the square output frames (None: the centred square crop as it is).
    """

    def __init__(self, root: str | Path, camera: str, state: str | None = "auto", action: str = "action",
                 image_size: int | None = None) -> None:
        self.root = Path(root)
        self.info_path = self.root / "meta" / "info.json"
        if not self.info_path.is_file():
            raise FormatError(f"{self.root} is not a LeRobot dataset: missing {self.info_path}")
        self.info = read_json(self.info_path)
        self.version = self.info.get("codebase_version")
        if self.version not in SUPPORTED_VERSIONS:
            raise FormatError(f"{self.info_path}: codebase_version {self.version!r} is not supported "
                              f"(wmplan reads LeRobot {' and '.join(SUPPORTED_VERSIONS)})")
        self.features: dict[str, dict] = self.info.get("features") or {}
        self.fps = float(self.info.get("fps") or 0)
        if self.fps <= 0:
            raise FormatError(f"{self.info_path}: fps must be > 0, got {self.info.get('fps')!r}")
        cameras = sorted(k for k, f in self.features.items() if f.get("dtype") in ("image", "video"))
        if camera not in cameras:
            raise FormatError(f"{self.info_path}: no camera feature {camera!r}; camera features: {cameras} "
                              f"(all features: {sorted(self.features)})")
        self.camera, self.is_video = camera, self.features[camera]["dtype"] == "video"
        self.action, self.action_dim = action, self._vector_dim(action, "action")
        if state == "auto":
            state = DEFAULT_STATE if DEFAULT_STATE in self.features else None
        self.state = None if state in (None, "", "none") else str(state)
        self.proprio_dim = 0 if self.state is None else self._vector_dim(self.state, "state")
        height, width = self._frame_hw(self.features[camera])
        self.transform = frame_transform(height, width, image_size)
        self.tolerance = 0.5 / self.fps
        self.table = self._episode_table()
        self._cached: tuple[Path, pa.Table, np.ndarray] | None = None

    # -- metadata -------------------------------------------------------------------------
    def _vector_dim(self, key: str, option: str) -> int:
        ft = self.features.get(key)
        numeric = sorted(k for k, f in self.features.items()
                         if f.get("dtype") not in ("image", "video", "string") and len(f.get("shape") or []) == 1)
        if ft is None:
            raise FormatError(f"{self.info_path}: no feature {key!r} for {option}=; 1-D numeric features: {numeric}")
        shape = list(ft.get("shape") or [])
        if ft.get("dtype") in ("image", "video", "string") or len(shape) != 1:
            raise FormatError(f"{self.info_path}: {option}={key!r} must be a 1-D numeric feature, got dtype "
                              f"{ft.get('dtype')!r} shape {shape}; 1-D numeric features: {numeric}")
        return int(shape[0])

    def _frame_hw(self, ft: dict) -> tuple[int, int]:
        shape, names = list(ft.get("shape") or []), list(ft.get("names") or [])
        if len(shape) != 3:
            raise FormatError(f"{self.info_path}: camera {self.camera!r} shape must be 3-D, got {shape}")
        if names[:1] in (["channels"], ["channel"], ["c"]):
            return int(shape[1]), int(shape[2])
        return int(shape[0]), int(shape[1])

    def _episode_table(self) -> list[dict[str, Any]]:
        """One dict per episode, sorted by episode_index: length, data file, video file, from_timestamp."""
        rows: list[dict[str, Any]] = []
        if self.version == "v3.0":
            files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
            if not files:
                raise FormatError(f"{self.root}: no episode metadata in {self.root / 'meta' / 'episodes'}")
            vid = f"videos/{self.camera}/"
            cols = ["episode_index", "length", "dataset_from_index", "dataset_to_index", "data/chunk_index",
                    "data/file_index"] + ([vid + "chunk_index", vid + "file_index", vid + "from_timestamp"]
                                          if self.is_video else [])
            for path in files:
                for r in read_parquet(path, cols).to_pylist():
                    r["data_path"] = self.root / self.info["data_path"].format(
                        chunk_index=r["data/chunk_index"], file_index=r["data/file_index"])
                    if self.is_video:
                        r["video_path"] = self.root / self.info["video_path"].format(
                            video_key=self.camera, chunk_index=r[vid + "chunk_index"], file_index=r[vid + "file_index"])
                        r["from_timestamp"] = float(r[vid + "from_timestamp"])
                    r["meta_file"] = path
                    rows.append(r)
        else:
            path = self.root / "meta" / "episodes.jsonl"
            if not path.is_file():
                raise FormatError(f"{self.root}: missing {path}")
            chunks = int(self.info.get("chunks_size") or 1000)
            for line_no, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                    e = int(r["episode_index"])
                    r["length"] = int(r["length"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                    raise FormatError(f"{path}:{line_no}: bad episode line ({err}): {line[:120]}") from err
                r["data_path"] = self.root / self.info["data_path"].format(episode_chunk=e // chunks, episode_index=e)
                if self.is_video:
                    r["video_path"] = self.root / self.info["video_path"].format(
                        episode_chunk=e // chunks, video_key=self.camera, episode_index=e)
                    r["from_timestamp"] = 0.0
                r["meta_file"] = path
                rows.append(r)
        rows.sort(key=lambda r: int(r["episode_index"]))
        return rows

    def tasks(self) -> list[str]:
        """Task strings by task_index (the task column's name comes from the pandas metadata)."""
        if self.version == "v2.1":
            path = self.root / "meta" / "tasks.jsonl"
            if not path.is_file():
                return []
            items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            return [str(t["task"]) for t in sorted(items, key=lambda t: t["task_index"])]
        path = self.root / "meta" / "tasks.parquet"
        if not path.is_file():
            return []
        table = read_parquet(path)
        pandas_meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
        names = [c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)] + ["task"]
        name = next((c for c in names if c in table.column_names), None)
        if name is None or "task_index" not in table.column_names:
            raise FormatError(f"{path}: no task column (columns {table.column_names})")
        pairs = sorted(zip(table.column("task_index").to_pylist(), table.column(name).to_pylist()))
        return [str(t) for _, t in pairs]

    def action_bounds(self) -> tuple[list[float], list[float], str]:
        """(low, high, where from): meta/stats.json, v2.1's episodes_stats.jsonl, else the data."""
        stats_path = self.root / "meta" / "stats.json"
        if stats_path.is_file():
            s = read_json(stats_path).get(self.action) or {}
            b = bounds_from(s.get("min"), s.get("max"), self.action_dim, str(stats_path))
            if b is not None:
                return b[0], b[1], "meta/stats.json"
        ep_stats = self.root / "meta" / "episodes_stats.jsonl"
        if ep_stats.is_file():
            lows, highs = [], []
            for line in ep_stats.read_text().splitlines():
                s = (json.loads(line).get("stats") or {}).get(self.action) if line.strip() else None
                if s and "min" in s and "max" in s:
                    lows.append(s["min"])
                    highs.append(s["max"])
            if lows:
                b = bounds_from(np.min(lows, axis=0), np.max(highs, axis=0), self.action_dim, str(ep_stats))
                if b is not None:
                    return b[0], b[1], "meta/episodes_stats.jsonl"
        low = np.full(self.action_dim, np.inf)
        high = np.full(self.action_dim, -np.inf)
        for path in sorted({r["data_path"] for r in self.table}):
            a = column_array(read_parquet(path, [self.action]), self.action, str(path)).reshape(-1, self.action_dim)
            low, high = np.minimum(low, a.min(0)), np.maximum(high, a.max(0))
        return low.tolist(), high.tolist(), "data min/max"

    def num_episodes(self) -> int:
        return len(self.table)

    def meta(self) -> dict[str, Any]:
        low, high, bounds_src = self.action_bounds()
        reward = REWARD_KEY if REWARD_KEY in self.features else None
        success = SUCCESS_KEY if SUCCESS_KEY in self.features else None
        tasks = self.tasks()
        return {"env_id": None, "env_kwargs": {}, "image_size": self.transform["image_size"],
                "action_dim": self.action_dim, "proprio_dim": self.proprio_dim, "state_dim": 0,
                "action_low": low, "action_high": high, "action_bounds_source": bounds_src,
                "seed": None, "policy": "recorded", "fps": self.fps,
                "source_format": "lerobot", "source_codebase_version": self.version,
                "source_path": str(self.root.resolve()), "camera": self.camera,
                "camera_storage": "video" if self.is_video else "image", "state_key": self.state,
                "action_key": self.action, "reward_key": reward, "success_key": success,
                "robot_type": self.info.get("robot_type"), "tasks": tasks[:100],
                "video_tolerance_s": self.tolerance if self.is_video else None,
                **{k: v for k, v in self.transform.items() if k != "image_size"}}

    # -- episodes -------------------------------------------------------------------------
    def _data_rows(self, ep: dict[str, Any]) -> pa.Table:
        """The episode's rows of its data file, ordered by frame_index (checked against the metadata)."""
        path: Path = ep["data_path"]
        e, n = int(ep["episode_index"]), int(ep["length"])
        where = f"episode {e} ({path})"
        if self._cached is None or self._cached[0] != path:
            table = read_parquet(path)
            for c in ["episode_index", "frame_index", "timestamp", self.action] + \
                     ([self.state] if self.state else []) + ([] if self.is_video else [self.camera]):
                if c not in table.column_names:
                    raise FormatError(f"{path}: missing column '{c}' (has {table.column_names})")
            self._cached = (path, table, column_array(table, "episode_index", str(path)))
        _, table, episodes = self._cached
        rows = table.take(pa.array(np.nonzero(episodes == e)[0]))
        if rows.num_rows != n:
            raise FormatError(f"{where}: {ep['meta_file']} says length {n} but the data file has "
                              f"{rows.num_rows} rows for it (mismatched lengths)")
        frame_index = column_array(rows, "frame_index", where)
        order = np.argsort(frame_index, kind="stable")
        if not np.array_equal(frame_index[order], np.arange(n)):
            raise FormatError(f"{where}: frame_index is not 0..{n - 1} (got {frame_index[order][:10].tolist()}...)")
        if "dataset_from_index" in ep and "index" in rows.column_names:
            index = column_array(rows, "index", where)[order]
            if index[0] != ep["dataset_from_index"] or index[-1] + 1 != ep["dataset_to_index"]:
                raise FormatError(f"{where}: rows have index {index[0]}..{index[-1]} but {ep['meta_file']} says "
                                  f"dataset_from_index={ep['dataset_from_index']}, "
                                  f"dataset_to_index={ep['dataset_to_index']}")
        return rows.take(pa.array(order))

    def _images(self, rows: pa.Table, where: str) -> np.ndarray:
        col = rows.column(self.camera).combine_chunks()
        if not pa.types.is_struct(col.type) or col.type.get_field_index("bytes") < 0:
            raise FormatError(f"{where}: image column '{self.camera}' must be a struct with 'bytes', got {col.type}")
        data = col.field("bytes").to_pylist()
        paths = col.field("path").to_pylist() if col.type.get_field_index("path") >= 0 else [None] * len(data)
        frames = []
        for i, (blob, rel) in enumerate(zip(data, paths)):
            try:
                if blob is None and rel:
                    blob = (self.root / rel).read_bytes()
                if blob is None:
                    raise FormatError(f"{where}: image '{self.camera}' of frame {i} has neither bytes nor a path")
                with Image.open(io.BytesIO(blob)) as img:
                    frames.append(np.asarray(img.convert("RGB") if img.mode not in ("RGB", "L") else img))
            except (OSError, Image.UnidentifiedImageError) as e:
                raise FormatError(f"{where}: image '{self.camera}' of frame {i} does not decode ({e})") from e
        return to_rgb(np.stack(frames), where)

    def read_episode(self, ep: dict[str, Any]) -> Episode:
        """Load one episode (a row of :attr:`table`) as a wmplan Episode."""
        e, n = int(ep["episode_index"]), int(ep["length"])
        where = f"episode {e} ({ep['data_path']})"
        if n < 2:
            raise FormatError(f"{where}: has {n} frame(s); a wmplan episode needs at least 2 (one action)")
        rows = self._data_rows(ep)
        actions = column_array(rows, self.action, where).reshape(n, -1)
        if actions.shape[1] != self.action_dim:
            raise FormatError(f"{where}: '{self.action}' rows have {actions.shape[1]} values, info.json says "
                              f"{self.action_dim}")
        proprio = (column_array(rows, self.state, where).reshape(n, -1) if self.state
                   else np.zeros((n, 0), np.float32))
        if self.is_video:
            times = ep["from_timestamp"] + column_array(rows, "timestamp", where).astype(np.float64)
            frames = decode_video(ep["video_path"], times, self.tolerance, f"episode {e} camera {self.camera}")
        else:
            frames = self._images(rows, where)
        if frames.shape[0] != n:
            raise FormatError(f"{where}: {frames.shape[0]} frames for {n} rows (mismatched lengths)")
        names = rows.column_names
        rewards = (column_array(rows, REWARD_KEY, where).reshape(n)[:-1] if REWARD_KEY in names
                   else np.zeros(n - 1))
        success = (column_array(rows, SUCCESS_KEY, where).reshape(n)[:-1] if SUCCESS_KEY in names
                   else np.zeros(n - 1, bool))
        return Episode(frames=crop_resize(frames, self.transform["image_size"]),
                       actions=actions[:-1].astype(np.float32), proprio=proprio.astype(np.float32),
                       states=np.zeros((n, 0), np.float64), rewards=rewards.astype(np.float32),
                       success=success.astype(bool))

    def episodes(self) -> Iterator[tuple[int, Episode]]:
        for ep in self.table:
            yield int(ep["episode_index"]), self.read_episode(ep)
