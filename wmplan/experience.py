"""The planner's own experience as a dataset, and datasets merged into one.

A world model is only checked where its training data went; a planner searches where the
model is wrong and goes there (``scripts/attribute_failures.py`` measures this). Training on
the planner's own episodes, DAgger-style, puts data where the planner goes:

    python scripts/plan.py task=push_t goals=dataset goal_set=<training goal set> episodes=300 \\
        record_dataset=data/push_t_planner                  # ExperienceSink writes each episode
    python scripts/merge_datasets.py sources=[data/push_t,data/push_t_planner] out_dir=data/push_t_dagger

This module is glue between the planners layer (the sink protocol, the MPC episode) and the
world-model layer (the dataset format); neither imports the other.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from .planners.mpc import EpisodeResult
from .planners.sinks import EpisodeSink
from .worldmodel.data import DatasetError, Episode, EpisodeDataset, episode_path, read_meta, write_episode, write_meta


def trajectory_episode(traj: dict[str, list]) -> Episode:
    """An MPC episode's trajectory (``EpisodeResult.trajectory``) as a dataset episode; the reward
    is the negative goal distance, as the tasks' own."""
    return Episode(frames=np.stack(traj["pixels"]).astype(np.uint8), actions=np.stack(traj["action"]).astype(np.float32),
                   proprio=np.stack(traj["proprio"]).astype(np.float32), states=np.stack(traj["state"]).astype(np.float64),
                   rewards=-np.asarray(traj["distance"], np.float32), success=np.asarray(traj["success"], bool))


def env_meta(env_id: str, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The env fields a dataset's meta.json records (as scripts/collect.py does): id, kwargs and
    the action box that training normalises with."""
    env = gym.make(env_id, disable_env_checker=True, **env_kwargs)
    try:
        space = env.action_space
        return {"env_id": env_id, "env_kwargs": dict(env_kwargs), "action_low": space.low.tolist(),
                "action_high": space.high.tolist()}
    finally:
        env.close()


class ExperienceSink(EpisodeSink):
    """Writes each planned episode to ``root`` in the wmplan dataset layout, as
    ``ep_<row>.npz`` where row is the episode's index in the run (so a resumed run rewrites
    the same files). Episodes solved at reset have no action and are not written; their rows
    are listed in meta.json's ``skipped_solved_at_reset``. meta.json records ``meta`` (env,
    model, planner, protocol; :func:`env_meta` gives the env part) and has no ``num_episodes``: merge with
    :func:`merge_datasets` to get a complete, renumbered dataset."""

    def __init__(self, root: str | Path, meta: dict[str, Any], first_seed: int):
        self.root, self.meta, self.first_seed = Path(root), dict(meta), int(first_seed)
        self.skipped: list[int] = []

    def begin(self, kept_rows: Sequence[dict[str, Any]]) -> None:
        if (self.root / "meta.json").is_file():
            old = read_meta(self.root)
            if old.get("env_id") != self.meta.get("env_id"):
                raise DatasetError(f"record_dataset={self.root} holds episodes of {old.get('env_id')!r}, "
                                   f"not {self.meta.get('env_id')!r}; use another folder")
            self.skipped = [s for s in old.get("skipped_solved_at_reset", []) if s in {r["seed"] - self.first_seed for r in kept_rows}]
        self._write_meta()

    def _write_meta(self) -> None:
        write_meta(self.root, {**self.meta, "policy_mix": {"planner": 1.0}, "skipped_solved_at_reset": sorted(self.skipped)})

    def write(self, result: EpisodeResult, row: dict[str, Any]) -> None:
        if result.trajectory is None:
            raise ValueError("ExperienceSink needs trajectories: evaluate(..., trajectories=True)")
        idx = int(result.seed) - self.first_seed
        if not result.trajectory["action"]:
            self.skipped.append(idx)
            self._write_meta()
            return
        ep = trajectory_episode(result.trajectory)
        if "image_size" not in self.meta:  # the first episode fixes the dimensions every later one must have
            dims = ep.dims()
            h, w = dims["image_size"]
            self.meta.update({**dims, "image_size": h if h == w else [h, w]})  # as scripts/collect.py writes it
            self._write_meta()
        write_episode(self.root, idx, ep)


MERGE_KEYS = ("env_id", "env_kwargs", "image_size", "action_dim", "proprio_dim", "state_dim", "action_low", "action_high")


def merge_datasets(sources: Sequence[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Merge wmplan datasets of one env into ``out_dir``: episodes renumbered 0..N-1 in source
    order, hard-linked where the file system allows (else copied), and a meta.json with
    ``num_episodes`` and each source's meta under ``sources``. The sources must agree on
    ``MERGE_KEYS`` (DatasetError naming the field and both values). Returns the meta."""
    out = Path(out_dir)
    if (out / "meta.json").is_file():
        raise DatasetError(f"merge_datasets: {out} already holds a dataset; choose a new out_dir")
    if not sources:
        raise DatasetError("merge_datasets: no sources given")
    datasets = [EpisodeDataset(s) for s in sources]
    first = datasets[0]
    for ds in datasets[1:]:
        for k in MERGE_KEYS:
            a, b = first.meta.get(k), ds.meta.get(k)
            if a != b:
                raise DatasetError(f"merge_datasets: field '{k}' differs: {a!r} in {first.root / 'meta.json'}, "
                                   f"{b!r} in {ds.root / 'meta.json'}")
    (out / "episodes").mkdir(parents=True, exist_ok=True)
    n, counts = 0, []
    for ds in datasets:
        for i in ds.episode_ids:
            src, dst = episode_path(ds.root, i), episode_path(out, n)
            try:
                os.link(src, dst)
            except OSError:  # another file system: copy
                dst.write_bytes(src.read_bytes())
            n += 1
        counts.append(len(ds))
    meta = {**{k: first.meta.get(k) for k in MERGE_KEYS}, "num_episodes": n,
            "sources": [{"path": str(ds.root), "episodes": c, "meta": ds.meta} for ds, c in zip(datasets, counts)]}
    write_meta(out, meta)
    return meta
