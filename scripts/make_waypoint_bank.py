"""Make a waypoint bank for subgoal planning (``plan.py planner=subgoal``) from a dataset.

    python scripts/collect.py env=point_maze episodes=60 seed=7000 'policy_mix={expert: 1.0}' \\
        out_dir=data/bank/point_maze                       # expert episodes, seeds apart from evaluation
    python scripts/make_waypoint_bank.py data_dir=data/bank/point_maze out=planners/waypoint_banks/point_maze.npz

The bank keeps every ``stride``-th step of the first ``episodes`` episodes: the full physics
state (the task renders it into the frame at plan time, so the bank is a few hundred kB and
follows the run's camera and image size), its proprio, episode id and step. ``frames=true``
stores the recorded frames too, for data the task cannot re-render (imported datasets). The
planner encodes the waypoints once per world model and searches the graph of recorded steps and
same-state links between them (planners/waypoints.py).
"""
from __future__ import annotations

import hydra
import numpy as np
from omegaconf import DictConfig

from wmplan.checks import ConfigError, check_number
from wmplan.io import atomic_write_bytes
from wmplan.planners.waypoints import load_waypoint_bank
from wmplan.worldmodel.data import EpisodeDataset


def make_waypoint_bank(data_dir: str, stride: int = 5, episodes: int | None = None, frames: bool = False) -> dict:
    """{states [W,S], proprio [W,P], episode_ids [W], steps [W], stride, env_id, seed} (+ frames [W,H,W,3] uint8)."""
    check_number(stride, "stride", "make_waypoint_bank", low=1, integer=True)
    check_number(episodes, "episodes", "make_waypoint_bank", low=1, integer=True, allow_none=True)
    ds = EpisodeDataset(data_dir).require_complete()
    states, images, proprio, ids, steps = [], [], [], [], []
    for n, (i, ep) in enumerate(ds.iter_episodes()):
        if episodes is not None and n == int(episodes):
            break
        t = np.arange(0, ep.length + 1, int(stride))
        states.append(ep.states[t].astype(np.float64))
        if frames:
            images.append(ep.frames[t])
        proprio.append(ep.proprio[t].astype(np.float32))
        ids.append(np.full(len(t), i))
        steps.append(t)
    if sum(len(t) for t in steps) < 2:
        raise ConfigError(f"{data_dir}: fewer than 2 waypoints with stride {stride}; collect longer episodes")
    out = {"states": np.concatenate(states), "proprio": np.concatenate(proprio), "episode_ids": np.concatenate(ids),
            "steps": np.concatenate(steps), "stride": np.array(int(stride)), "env_id": np.array(str(ds.meta["env_id"])),
            "seed": np.array(int(ds.meta.get("seed", -1)))}
    if frames:
        out["frames"] = np.concatenate(images)
    return out


@hydra.main(version_base="1.3", config_path="../configs", config_name="make_waypoint_bank")
def main(cfg: DictConfig) -> None:
    bank = make_waypoint_bank(cfg.data_dir, int(cfg.stride), cfg.episodes, bool(cfg.frames))
    atomic_write_bytes(cfg.out, lambda f: np.savez_compressed(f, **bank))
    loaded = load_waypoint_bank(cfg.out)  # the planner's own checks, on what was written
    print(f"[make_waypoint_bank] {cfg.out}: {len(loaded)} waypoints of {loaded.env_id} from "
          f"{len(np.unique(loaded.episode_ids))} episodes, every {loaded.stride} env steps")


if __name__ == "__main__":
    main()
