"""Collect an episode dataset with random / correlated-random / noisy-expert policies.

    python scripts/collect.py env=point_maze episodes=300 out_dir=data/pointmaze workers=2

Episodes are deterministic in (seed, episode index) and each is committed
atomically, so rerunning into the same ``out_dir`` resumes: existing episodes are
kept and only missing ones are collected.
"""
from __future__ import annotations

import multiprocessing as mp
import time
from functools import partial

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from wmplan.envs.rollout import collect_episode
from wmplan.worldmodel.data import DatasetError, Episode, EpisodeDataset, read_meta, write_episode, write_meta
from wmplan.worldmodel.utils import ProgressBar


def dataset_meta(cfg: DictConfig) -> dict:
    import gymnasium as gym

    import wmplan.envs  # noqa: F401  (registers the wmplan/* gymnasium ids)

    env = gym.make(cfg.env.id, disable_env_checker=True, **cfg.env.kwargs)
    space = env.action_space
    obs, info = env.reset(seed=0)
    meta = {
        "env_id": cfg.env.id,
        "env_kwargs": OmegaConf.to_container(cfg.env.kwargs),
        "image_size": int(obs["pixels"].shape[0]),
        "action_dim": int(space.shape[0]),
        "proprio_dim": int(obs["proprio"].shape[0]),
        "state_dim": int(info["state"].shape[0]),
        "action_low": space.low.tolist(),
        "action_high": space.high.tolist(),
        "episode_length": int(cfg.episode_length),
        "policy_mix": OmegaConf.to_container(cfg.policy_mix),
        "policy_kwargs": OmegaConf.to_container(cfg.policy_kwargs),
        "seed": int(cfg.seed),
    }
    env.close()
    return meta


def check_compatible(out_dir: str, meta: dict) -> None:
    """Refuse to resume into a folder collected with different settings."""
    old = read_meta(out_dir)
    for k in ("env_id", "env_kwargs", "episode_length", "policy_mix", "policy_kwargs", "seed"):
        if old.get(k) != meta[k]:
            raise DatasetError(
                f"{out_dir}/meta.json: field '{k}' is {old.get(k)!r} but this run has {meta[k]!r}; "
                "use another out_dir or the same settings to resume"
            )


@hydra.main(version_base="1.3", config_path="../configs", config_name="collect")
def main(cfg: DictConfig) -> None:
    meta = dataset_meta(cfg)
    try:
        check_compatible(cfg.out_dir, meta)
        existing = set(EpisodeDataset(cfg.out_dir).episode_ids)
    except DatasetError as e:
        if "missing" not in str(e) or "meta.json" not in str(e):
            raise
        write_meta(cfg.out_dir, meta)
        existing = set()
    todo = [i for i in range(cfg.episodes) if i not in existing]
    print(f"[collect] {cfg.env.id} -> {cfg.out_dir}: {len(existing)} episodes present, {len(todo)} to collect")
    if not todo:
        return
    work = partial(
        collect_episode,
        cfg.env.id,
        OmegaConf.to_container(cfg.env.kwargs),
        int(cfg.seed),
        length=int(cfg.episode_length),
        policy_mix=OmegaConf.to_container(cfg.policy_mix),
        policy_kwargs=OmegaConf.to_container(cfg.policy_kwargs),
    )
    t0, frames, counts, succ = time.time(), 0, {}, []
    bar = ProgressBar(total=len(todo), desc="[collect] episodes")
    fields = ("frames", "actions", "proprio", "states", "rewards", "success")
    with mp.get_context("spawn").Pool(cfg.workers) if cfg.workers > 1 else _Serial() as pool:
        for out in pool.imap_unordered(_call, [(work, i) for i in todo]):
            write_episode(cfg.out_dir, out["episode_id"], Episode(**{k: out[k] for k in fields}))
            frames += out["frames"].shape[0]
            counts[out["policy"]] = counts.get(out["policy"], 0) + 1
            succ.append(bool(out["success"].any()))
            bar.update(1, fps=frames / (time.time() - t0))
    bar.close()
    dt = time.time() - t0
    print(
        f"[collect] {len(todo)} episodes, {frames} frames in {dt:.1f}s = {frames / dt:.0f} frames/s "
        f"({cfg.workers} workers); policies {counts}; episodes reaching their goal {np.mean(succ):.2f}"
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
    main()
