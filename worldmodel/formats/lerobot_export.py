"""Write a wmplan episode dataset as a LeRobotDataset (codebase v3.0, images as PNG bytes).

Layout written under ``out_dir`` (what lerobot 0.5+ and :class:`.lerobot.LeRobotReader` read)::

    meta/info.json                          codebase_version v3.0, fps, features, path templates
    meta/stats.json                         min / max / mean / std / count per feature
    meta/tasks.parquet                      task_index + task (the pandas index), one task
    meta/episodes/chunk-000/file-000.parquet  per episode: length, dataset_from/to_index, data file
    data/chunk-XXX/file-YYY.parquet         one row per frame, many episodes per file

Mapping from a wmplan episode (T actions, T+1 frames) to N = T+1 rows: frame t and proprio t at
row t; ``action`` row t = action t, and the last row repeats action T-1 (LeRobot pairs every frame
with an action; the importer drops that last one again); ``next.reward`` / ``next.success`` row t
= reward / success of step t (0 / False on the last row), ``next.done`` True on the last row;
``timestamp`` = frame_index / fps. Simulator states are not exported.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ...io import write_json
from ..data import EpisodeDataset
from ..utils import ProgressBar
from .common import FormatError

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
CHUNKS_SIZE = 1000


def _png(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def _features(camera: str, hw: tuple[int, int], action_dim: int, proprio_dim: int) -> dict[str, dict]:
    """info.json features (LeRobot's dtype/shape/names) of an exported dataset."""
    one = {"shape": [1], "names": None}
    feats: dict[str, dict] = {camera: {"dtype": "image", "shape": [hw[0], hw[1], 3],
                                       "names": ["height", "width", "channels"]}}
    if proprio_dim:
        feats["observation.state"] = {"dtype": "float32", "shape": [proprio_dim], "names": None}
    feats["action"] = {"dtype": "float32", "shape": [action_dim], "names": None}
    feats["next.reward"] = {"dtype": "float32", **one}
    feats["next.success"] = {"dtype": "bool", **one}
    feats["next.done"] = {"dtype": "bool", **one}
    for k, dt in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                  ("index", "int64"), ("task_index", "int64")):
        feats[k] = {"dtype": dt, **one}
    return feats


def _hf_metadata(features: dict[str, dict]) -> bytes:
    """The ``huggingface`` schema metadata that tells ``datasets`` the column types (Image, List)."""
    hf: dict[str, Any] = {}
    for k, ft in features.items():
        if ft["dtype"] == "image":
            hf[k] = {"_type": "Image"}
        elif ft["shape"] == [1]:
            hf[k] = {"dtype": ft["dtype"], "_type": "Value"}
        else:
            hf[k] = {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": ft["shape"][0], "_type": "List"}
    return json.dumps({"info": {"features": hf}}).encode()


def _vectors(x: np.ndarray, dim: int) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.astype(np.float32).reshape(-1)), dim)


class _Stats:
    """Running min / max / sum / sum of squares of [n, d] rows."""

    def __init__(self) -> None:
        self.n, self.lo, self.hi, self.s, self.ss = 0, None, None, 0.0, 0.0

    def update(self, x: np.ndarray) -> None:
        x = x.astype(np.float64)
        lo, hi = x.min(0), x.max(0)
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)
        self.n, self.s, self.ss = self.n + len(x), self.s + x.sum(0), self.ss + (x * x).sum(0)

    def summary(self, shape: tuple[int, ...] = (-1,)) -> dict[str, Any]:
        mean = self.s / self.n
        std = np.sqrt(np.maximum(self.ss / self.n - mean * mean, 0.0))
        return {**{k: np.reshape(v, shape).tolist() for k, v in (("min", self.lo), ("max", self.hi),
                                                                   ("mean", mean), ("std", std))},
                "count": [int(self.n)]}


def export_lerobot(source: str | Path, out_dir: str | Path, fps: float | None = None, task: str | None = None,
                   camera: str = "observation.image", overwrite: bool = False,
                   data_file_mb: float = 100.0) -> Path:
    """Write the wmplan dataset ``source`` as LeRobot v3.0 in ``out_dir``; returns ``out_dir``.

    ``fps``: None takes meta.json's ``fps`` (imported datasets have it), else 10. ``task``: the one
    task string (None: meta.json's env_id, else "wmplan dataset"). A new data file is started
    once the current one holds ``data_file_mb`` MB of frames.
    """
    ds = EpisodeDataset(source).require_complete()
    out = Path(out_dir)
    if (out / "meta" / "info.json").exists():
        if not overwrite:
            raise FormatError(f"out_dir {out} already holds a LeRobot dataset; choose another folder or overwrite=true")
        for sub in ("meta", "data", "videos"):
            shutil.rmtree(out / sub, ignore_errors=True)
    fps = float(fps if fps is not None else ds.meta.get("fps") or 10)
    if fps <= 0:
        raise FormatError(f"fps must be > 0, got {fps}")
    task = task or ds.meta.get("env_id") or "wmplan dataset"
    first = ds.load_episode(ds.episode_ids[0])
    hw = first.frames.shape[1:3]
    action_dim, proprio_dim = first.actions.shape[1], first.proprio.shape[1]
    features = _features(camera, hw, action_dim, proprio_dim)
    schema_meta = {b"huggingface": _hf_metadata(features)}
    stats = {k: _Stats() for k in features if k != camera}
    image_stats = _Stats()
    episodes: list[dict[str, Any]] = []
    pending: list[pa.Table] = []
    pending_bytes, file_pos, index = 0, [0, 0], 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        if not pending:
            return
        path = out / DATA_PATH.format(chunk_index=file_pos[0], file_index=file_pos[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(pending), path)
        pending, pending_bytes = [], 0
        file_pos[1] += 1
        if file_pos[1] == CHUNKS_SIZE:
            file_pos[0], file_pos[1] = file_pos[0] + 1, 0

    bar = ProgressBar(total=len(ds), desc="export")
    for new_id, (_, ep) in enumerate(ds.iter_episodes()):
        n = ep.length + 1
        actions = np.concatenate([ep.actions, ep.actions[-1:]]).astype(np.float32)
        cols: dict[str, pa.Array] = {}
        pngs = [_png(f) for f in ep.frames]
        cols[camera] = pa.StructArray.from_arrays([pa.array(pngs, pa.binary()), pa.array([None] * n, pa.string())],
                                                  names=["bytes", "path"])
        values = {"action": actions,
                  "next.reward": np.append(ep.rewards, 0.0).astype(np.float32),
                  "next.success": np.append(ep.success, False), "next.done": np.arange(n) == n - 1,
                  "timestamp": (np.arange(n) / fps).astype(np.float32), "frame_index": np.arange(n),
                  "episode_index": np.full(n, new_id), "index": index + np.arange(n), "task_index": np.zeros(n, int)}
        if proprio_dim:
            values["observation.state"] = ep.proprio.astype(np.float32)
        for k, ft in features.items():
            if k == camera:
                continue
            v = values[k]
            cols[k] = _vectors(v, ft["shape"][0]) if ft["shape"] != [1] else pa.array(v.astype(ft["dtype"]))
            stats[k].update(v.reshape(n, -1))
        image_stats.update(ep.frames.reshape(-1, 3) / 255.0)
        table = pa.table(cols).replace_schema_metadata(schema_meta)
        pending_bytes += sum(len(p) for p in pngs)
        episodes.append({"episode_index": new_id, "tasks": [task], "length": n, "data/chunk_index": file_pos[0],
                         "data/file_index": file_pos[1], "dataset_from_index": index, "dataset_to_index": index + n,
                         "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        pending.append(table)
        index += n
        if pending_bytes >= data_file_mb * 1024 * 1024:
            flush()
        bar.update(1)
    flush()
    bar.close()
    ep_path = out / EPISODES_PATH.format(chunk_index=0, file_index=0)
    ep_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes), ep_path)
    pandas_meta = {"index_columns": ["task"], "column_indexes": [], "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
         "metadata": None},
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}],
        "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__}}
    tasks = pa.table({"task_index": pa.array([0], pa.int64()), "task": pa.array([task], pa.string())})
    pq.write_table(tasks.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}),
                   out / "meta" / "tasks.parquet")
    all_stats = {k: s.summary() for k, s in stats.items()}
    all_stats[camera] = image_stats.summary((3, 1, 1))
    write_json(out / "meta" / "stats.json", all_stats)
    info = {"codebase_version": "v3.0", "fps": int(fps) if float(fps).is_integer() else fps, "features": features,
            "total_episodes": len(episodes), "total_frames": index, "total_tasks": 1, "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": int(np.ceil(data_file_mb)), "video_files_size_in_mb": 200,
            "data_path": DATA_PATH, "video_path": None, "robot_type": None,
            "splits": {"train": f"0:{len(episodes)}"}}
    write_json(out / "meta" / "info.json", info)
    return out
