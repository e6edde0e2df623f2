"""Make a goal set for the dataset-goal protocol (``plan.py goals=dataset``) from a dataset.

    python scripts/collect.py env=push_t episodes=50 episode_length=60 seed=1000 \\
        'policy_mix={expert: 1.0}' out_dir=data/heldout/push_t       # held-out expert episodes
    python scripts/make_goal_set.py data_dir=data/heldout/push_t out=planners/goal_sets/push_t.npz

Row e of the goal set is episode e's recorded full physics state at ``start_step`` (the start)
and at ``start_step + offset`` (the goal). Only the states are kept (the env renders the goal
image from the goal state), so a goal set is a few kB and can ship with the package.
"""
from __future__ import annotations

import hydra
import numpy as np
from omegaconf import DictConfig

from wmplan.checks import ConfigError, check_number
from wmplan.io import atomic_write_bytes
from wmplan.worldmodel.data import EpisodeDataset


def make_goal_set(data_dir: str, offset: int = 25, start_step: int = 0, episodes: int | None = None) -> dict:
    """{start_states [E,S], goal_states [E,S], episode_ids [E], start_steps [E], offset, env_id}."""
    check_number(offset, "offset", "make_goal_set", low=1, integer=True)
    check_number(start_step, "start_step", "make_goal_set", low=0, integer=True)
    check_number(episodes, "episodes", "make_goal_set", low=1, integer=True, allow_none=True)
    ds = EpisodeDataset(data_dir)
    ids = ds.episode_ids if episodes is None else ds.episode_ids[: int(episodes)]
    starts, goals, kept = [], [], []
    for i, ep in ds.iter_episodes(ids):
        if ep.length < start_step + offset:
            raise ConfigError(f"{data_dir}: episode {i} has {ep.length} steps, fewer than "
                              f"start_step + offset = {start_step + offset}; collect longer episodes")
        starts.append(ep.states[start_step])
        goals.append(ep.states[start_step + offset])
        kept.append(i)
    if episodes is not None and len(kept) < int(episodes):
        raise ConfigError(f"{data_dir}: episodes={episodes} asked, the dataset has {len(kept)}")
    return {"start_states": np.stack(starts), "goal_states": np.stack(goals), "episode_ids": np.array(kept),
            "start_steps": np.full(len(kept), start_step), "offset": np.array(offset),
            "env_id": np.array(str(ds.meta["env_id"]))}


@hydra.main(version_base="1.3", config_path="../configs", config_name="make_goal_set")
def main(cfg: DictConfig) -> None:
    gs = make_goal_set(cfg.data_dir, int(cfg.offset), int(cfg.start_step), cfg.episodes)
    atomic_write_bytes(cfg.out, lambda f: np.savez(f, **gs))
    print(f"[make_goal_set] {cfg.out}: {len(gs['episode_ids'])} episodes of {gs['env_id']}, "
          f"goal {cfg.offset} steps after step {cfg.start_step}")


if __name__ == "__main__":
    main()
