"""Collect an episode dataset with random / correlated-random / noisy-expert policies.

    python scripts/collect.py env=point_maze episodes=300 out_dir=data/pointmaze workers=2
    python scripts/collect.py env=gym:Pusher-v5 episodes=300 out_dir=data/pusher   # any gymnasium env

Episodes are deterministic in (seed, episode index) and each is committed
atomically, so rerunning into the same ``out_dir`` resumes: existing episodes are
kept and only missing ones are collected. Rerunning with a larger ``episodes`` grows the
dataset (the other settings must match the folder's meta.json).

Every setting is checked, and the env and each policy of the mix are built and stepped
once, before anything is written, so a bad setting leaves no meta.json behind. meta.json is
written before the first episode and records ``num_episodes`` (the count the dataset holds
once this run finishes: ``episodes``, or more when more episode files are already there);
training calls ``EpisodeDataset.require_complete()``, which names any episode still missing.
A meta.json under which no episode was collected yet is simply replaced. Temp files of a
killed run are removed on start.
"""
from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from wmplan.checks import ConfigError, check_number
from wmplan.cli import expand_gym_env
from wmplan.envs.rollout import check_policy_settings, collect_episode
from wmplan.io import remove_stale_temps
from wmplan.worldmodel.data import DatasetError, Episode, EpisodeDataset, read_meta, write_episode, write_meta
from wmplan.worldmodel.utils import ProgressBar

WHERE = "collect"
# meta.json fields a resumed / grown collection must share with the folder's meta.json
COMPATIBLE_KEYS = ("env_id", "env_kwargs", "episode_length", "policy_mix", "policy_kwargs", "seed",
                   "image_size", "action_dim", "proprio_dim", "state_dim")


def collect_settings(cfg: DictConfig) -> dict[str, Any]:
    """The run's settings as plain values; raises ConfigError naming a bad one (writes nothing)."""
    s = {k: (OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v)
         for k, v in (("out_dir", cfg.out_dir), ("episodes", cfg.episodes), ("episode_length", cfg.episode_length),
                      ("workers", cfg.workers), ("seed", cfg.seed), ("env_id", cfg.env.id),
                      ("env_kwargs", cfg.env.get("kwargs") or {}), ("policy_mix", cfg.policy_mix),
                      ("policy_kwargs", cfg.policy_kwargs))}
    if not isinstance(s["out_dir"], str) or not s["out_dir"]:
        raise ConfigError(f"{WHERE}: 'out_dir' must be a folder path, got {s['out_dir']!r}")
    for k in ("episodes", "episode_length", "workers"):
        check_number(s[k], k, WHERE, low=1, integer=True)
    check_number(s["seed"], "seed", WHERE, low=0, integer=True)  # numpy SeedSequence wants >= 0
    if not isinstance(s["env_kwargs"], Mapping):
        raise ConfigError(f"{WHERE}: 'env.kwargs' must be a dict, got {s['env_kwargs']!r}")
    for k in ("episodes", "episode_length", "workers", "seed"):
        s[k] = int(s[k])
    return s


def dataset_meta(s: dict[str, Any]) -> dict[str, Any]:
    """meta.json for settings ``s`` (without num_episodes). Builds the env and steps every policy
    of the mix once; raises ConfigError when the env or a policy does not work."""
    try:  # wmplan.envs (imported above with wmplan.envs.rollout) registered the wmplan/* ids
        env = gym.make(s["env_id"], disable_env_checker=True, **s["env_kwargs"])
        obs, info = env.reset(seed=0)
    except (gym.error.Error, TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"{WHERE}: env.id={s['env_id']!r} with env.kwargs={s['env_kwargs']!r} does not build "
                          f"({type(e).__name__}: {e})") from e
    try:
        space = env.action_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ConfigError(f"{WHERE}: env {s['env_id']!r} needs a 1-D Box action space, got {space}")
        check_policy_settings(env, s["policy_mix"], s["policy_kwargs"], WHERE)
        return {
            "env_id": s["env_id"],
            "env_kwargs": s["env_kwargs"],
            "image_size": int(obs["pixels"].shape[0]),
            "action_dim": int(space.shape[0]),
            "proprio_dim": int(obs["proprio"].shape[0]),
            "state_dim": int(info["state"].shape[0]),
            "action_low": space.low.tolist(),
            "action_high": space.high.tolist(),
            "episode_length": s["episode_length"],
            "policy_mix": s["policy_mix"],
            "policy_kwargs": s["policy_kwargs"],
            "seed": s["seed"],
        }
    finally:
        env.close()


def check_compatible(out_dir: str | Path, old: dict[str, Any], meta: dict[str, Any]) -> None:
    """Refuse to resume into a folder collected with different settings (``episodes`` may differ)."""
    for k in COMPATIBLE_KEYS:
        if old.get(k) != meta[k]:
            raise DatasetError(
                f"{out_dir}/meta.json: field '{k}' is {old.get(k)!r} but this run has {meta[k]!r}; "
                "use another out_dir or the same settings to resume"
            )


def prepare_out_dir(out_dir: str | Path, meta: dict[str, Any], episodes: int) -> tuple[set[int], int]:
    """Check ``out_dir`` against ``meta``, write meta.json with ``num_episodes`` and return the
    episode ids already present and num_episodes."""
    out = Path(out_dir)
    removed = remove_stale_temps(out)
    if removed:
        print(f"[collect] removed {len(removed)} temp file(s) left by a killed run in {out}")
    has_files = any((out / "episodes").glob("ep_*.npz"))
    old = read_meta(out) if (out / "meta.json").is_file() else None
    if old is None and has_files:
        raise DatasetError(f"{out / 'episodes'} holds episode files but {out / 'meta.json'} is missing, so "
                           "their settings are unknown; use another out_dir")
    existing = set(EpisodeDataset(out).episode_ids) if has_files else set()
    if existing:
        check_compatible(out, old, meta)
    # a smaller rerun never deletes episodes: the dataset then holds up to the highest id present
    num = max(episodes, max(existing, default=-1) + 1)
    new = {**meta, "num_episodes": num}
    if new != old:
        write_meta(out, new)
    return existing, num


@hydra.main(version_base="1.3", config_path="../configs", config_name="collect")
def main(cfg: DictConfig) -> None:
    s = collect_settings(cfg)
    meta = dataset_meta(s)
    existing, num = prepare_out_dir(s["out_dir"], meta, s["episodes"])
    todo = [i for i in range(num) if i not in existing]
    present = sum(i in existing for i in range(s["episodes"]))
    more = f" (num_episodes={num}: episode files up to {num - 1} are kept)" if num > s["episodes"] else ""
    print(f"[collect] {s['env_id']} -> {s['out_dir']}: {present} episodes present, {len(todo)} to collect{more}")
    if not todo:
        return
    work = partial(
        collect_episode,
        s["env_id"],
        s["env_kwargs"],
        s["seed"],
        length=s["episode_length"],
        policy_mix=s["policy_mix"],
        policy_kwargs=s["policy_kwargs"],
    )
    t0, frames, counts, succ = time.time(), 0, {}, []
    bar = ProgressBar(total=len(todo), desc="[collect] episodes")
    fields = ("frames", "actions", "proprio", "states", "rewards", "success")
    workers = s["workers"]
    with mp.get_context("spawn").Pool(workers) if workers > 1 else _Serial() as pool:
        for out in pool.imap_unordered(_call, [(work, i) for i in todo]):
            write_episode(s["out_dir"], out["episode_id"], Episode(**{k: out[k] for k in fields}), meta=meta)
            frames += out["frames"].shape[0]
            counts[out["policy"]] = counts.get(out["policy"], 0) + 1
            succ.append(bool(out["success"].any()))
            bar.update(1, fps=frames / (time.time() - t0))
    bar.close()
    dt = time.time() - t0
    print(
        f"[collect] {len(todo)} episodes, {frames} frames in {dt:.1f}s = {frames / dt:.0f} frames/s "
        f"({workers} workers); policies {counts}; episodes reaching their goal {np.mean(succ):.2f}"
    )


def _call(args):
    fn, i = args
    return fn(i)


class _Serial:
    """Pool stand-in for workers=1 (no subprocesses)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap_unordered(self, fn, items):
        return map(fn, items)


if __name__ == "__main__":
    expand_gym_env(__file__)  # env=gym:<id> (wmplan/cli.py)
    main()
