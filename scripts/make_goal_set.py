"""Make a goal set for the dataset-goal protocol (``plan.py goals=dataset``) from a dataset.

    python scripts/collect.py env=push_t episodes=100 episode_length=60 seed=1000 \\
        'policy_mix={expert: 1.0}' out_dir=data/heldout/push_t       # held-out expert episodes
    python scripts/make_goal_set.py data_dir=data/heldout/push_t out=planners/goal_sets/push_t.npz episodes=50

Row e of the goal set is episode e's recorded full physics state at its start step (the start)
and at start step + ``offset`` (the goal). ``start_step=random`` (the default, as DINO-WM samples
its evaluation pairs) draws each episode's start step uniformly from 0 .. T - offset with
``seed``; an integer uses that step for every episode. Pairs whose goal the task already counts
as reached at the start are skipped (``exclude_solved``; an expert idles at its goal once there). Only the states are kept (the env renders
the goal image from the goal state), so a goal set is a few kB and can ship with the package.
"""
from __future__ import annotations

import gymnasium as gym
import hydra
import numpy as np
from omegaconf import DictConfig

import wmplan.envs  # noqa: F401  (registers the wmplan/* ids, to check the pairs)
from wmplan.checks import ConfigError, check_number
from wmplan.io import atomic_write_bytes
from wmplan.worldmodel.data import EpisodeDataset


def solved_at_start(env: gym.Env, start: np.ndarray, goal: np.ndarray) -> bool:
    """True when the task already counts ``goal`` as reached from ``start`` (full physics states)."""
    _, info = env.reset(seed=0, options={"state": start, "goal_state": goal})
    return bool(info["success"])


def make_goal_set(data_dir: str, offset: int = 25, start_step: int | str = "random", episodes: int | None = None,
                  seed: int = 0, exclude_solved: bool = True) -> dict:
    """{start_states [E,S], goal_states [E,S], episode_ids [E], start_steps [E], offset, env_id}.

    ``exclude_solved``: skip pairs whose goal is already within the task's success tolerance at the
    start (an expert that reached its own goal early idles there, and such pairs measure nothing);
    with ``start_step=random`` another start step of the episode is tried first. ``episodes``
    then counts the kept episodes.
    """
    check_number(offset, "offset", "make_goal_set", low=1, integer=True)
    if start_step != "random":
        check_number(start_step, "start_step", "make_goal_set (an int >= 0 or 'random')", low=0, integer=True)
    check_number(episodes, "episodes", "make_goal_set", low=1, integer=True, allow_none=True)
    check_number(seed, "seed", "make_goal_set", low=0, integer=True)
    ds = EpisodeDataset(data_dir).require_complete()
    env = gym.make(ds.meta["env_id"], disable_env_checker=True, **ds.meta.get("env_kwargs", {})) if exclude_solved else None
    rng = np.random.default_rng(seed)
    starts, goals, kept, steps, skipped = [], [], [], [], 0
    for i, ep in ds.iter_episodes():
        if episodes is not None and len(kept) == int(episodes):
            break
        need = offset + (0 if start_step == "random" else int(start_step))
        if ep.length < need:
            raise ConfigError(f"{data_dir}: episode {i} has {ep.length} steps, fewer than "
                              f"start step + offset = {need}; collect longer episodes")
        tries = rng.permutation(ep.length - offset + 1).tolist() if start_step == "random" else [int(start_step)]
        t0 = next((t for t in tries if env is None or not solved_at_start(env, ep.states[t], ep.states[t + offset])), None)
        if t0 is None:
            skipped += 1
            continue
        starts.append(ep.states[t0])
        goals.append(ep.states[t0 + offset])
        kept.append(i)
        steps.append(t0)
    if env is not None:
        env.close()
    if not kept or (episodes is not None and len(kept) < int(episodes)):
        raise ConfigError(f"{data_dir}: episodes={episodes} asked, {len(kept)} usable ({skipped} skipped: goal "
                          f"already reached at every start step); collect more episodes")
    return {"start_states": np.stack(starts), "goal_states": np.stack(goals), "episode_ids": np.array(kept),
            "start_steps": np.array(steps), "offset": np.array(offset), "seed": np.array(seed),
            "env_id": np.array(str(ds.meta["env_id"])), "skipped_solved_at_start": np.array(skipped)}


@hydra.main(version_base="1.3", config_path="../configs", config_name="make_goal_set")
def main(cfg: DictConfig) -> None:
    gs = make_goal_set(cfg.data_dir, int(cfg.offset), cfg.start_step, cfg.episodes, int(cfg.seed), bool(cfg.exclude_solved))
    atomic_write_bytes(cfg.out, lambda f: np.savez(f, **gs))
    print(f"[make_goal_set] {cfg.out}: {len(gs['episode_ids'])} episodes of {gs['env_id']}, goal {cfg.offset} steps "
          f"after the start step ({cfg.start_step}: steps {gs['start_steps'].min()}..{gs['start_steps'].max()}, seed {cfg.seed}); "
          f"{int(gs['skipped_solved_at_start'])} episodes skipped (goal reached at every start step)")


if __name__ == "__main__":
    main()
