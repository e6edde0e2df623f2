"""Make a goal set for the dataset-goal protocol (``plan.py goals=dataset``) from a dataset.

    python scripts/collect.py env=push_t episodes=50 episode_length=60 seed=1000 \\
        'policy_mix={expert: 1.0}' out_dir=data/heldout/push_t       # held-out expert episodes
    python scripts/make_goal_set.py data_dir=data/heldout/push_t out=planners/goal_sets/push_t.npz

Row e of the goal set is episode e's recorded full physics state at its start step (the start)
and at start step + ``offset`` (the goal). ``start_step=random`` (the default, as DINO-WM samples
its evaluation pairs) draws each episode's start step uniformly from 0 .. T - offset with
``seed``; an integer uses that step for every episode. Only the states are kept (the env renders
the goal image from the goal state), so a goal set is a few kB and can ship with the package.
"""
from __future__ import annotations

import hydra
import numpy as np
from omegaconf import DictConfig

from wmplan.checks import ConfigError, check_number
from wmplan.io import atomic_write_bytes
from wmplan.worldmodel.data import EpisodeDataset


def make_goal_set(data_dir: str, offset: int = 25, start_step: int | str = "random", episodes: int | None = None,
                  seed: int = 0) -> dict:
    """{start_states [E,S], goal_states [E,S], episode_ids [E], start_steps [E], offset, env_id}."""
    check_number(offset, "offset", "make_goal_set", low=1, integer=True)
    if start_step != "random":
        check_number(start_step, "start_step", "make_goal_set (an int >= 0 or 'random')", low=0, integer=True)
    check_number(episodes, "episodes", "make_goal_set", low=1, integer=True, allow_none=True)
    check_number(seed, "seed", "make_goal_set", low=0, integer=True)
    ds = EpisodeDataset(data_dir).require_complete()
    ids = ds.episode_ids if episodes is None else ds.episode_ids[: int(episodes)]
    rng = np.random.default_rng(seed)
    starts, goals, kept, steps = [], [], [], []
    for i, ep in ds.iter_episodes(ids):
        random_start = start_step == "random" and ep.length >= offset
        t0 = int(rng.integers(0, ep.length - offset + 1)) if random_start else (0 if start_step == "random" else int(start_step))
        if ep.length < t0 + offset:
            raise ConfigError(f"{data_dir}: episode {i} has {ep.length} steps, fewer than "
                              f"start step + offset = {t0 + offset}; collect longer episodes")
        starts.append(ep.states[t0])
        goals.append(ep.states[t0 + offset])
        kept.append(i)
        steps.append(t0)
    if episodes is not None and len(kept) < int(episodes):
        raise ConfigError(f"{data_dir}: episodes={episodes} asked, the dataset has {len(kept)}")
    return {"start_states": np.stack(starts), "goal_states": np.stack(goals), "episode_ids": np.array(kept),
            "start_steps": np.array(steps), "offset": np.array(offset), "seed": np.array(seed),
            "env_id": np.array(str(ds.meta["env_id"]))}


@hydra.main(version_base="1.3", config_path="../configs", config_name="make_goal_set")
def main(cfg: DictConfig) -> None:
    gs = make_goal_set(cfg.data_dir, int(cfg.offset), cfg.start_step, cfg.episodes, int(cfg.seed))
    atomic_write_bytes(cfg.out, lambda f: np.savez(f, **gs))
    print(f"[make_goal_set] {cfg.out}: {len(gs['episode_ids'])} episodes of {gs['env_id']}, goal {cfg.offset} steps "
          f"after the start step ({cfg.start_step}: steps {gs['start_steps'].min()}..{gs['start_steps'].max()}, seed {cfg.seed})")


if __name__ == "__main__":
    main()
