"""Run one data-collection episode in a fresh process-local env (used by scripts/collect.py)."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

# importing this module runs wmplan.envs/__init__, which registers the wmplan/* ids in worker processes
from .policies import make_policy

_ENV_CACHE: dict[tuple, gym.Env] = {}


def pick_policy(mix: dict[str, float], rng: np.random.Generator) -> str:
    """Draw a policy name with probability proportional to its weight in ``mix``."""
    names = sorted(k for k, w in mix.items() if w > 0)
    if not names:
        raise ValueError(f"policy_mix={mix}: needs at least one positive weight")
    w = np.array([mix[n] for n in names], float)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def collect_episode(
    env_id: str,
    env_kwargs: dict[str, Any],
    seed: int,
    episode_id: int,
    length: int,
    policy_mix: dict[str, float],
    policy_kwargs: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Collect one episode; deterministic in (seed, episode_id).

    Returns a dict of arrays (frames uint8 [T+1,H,W,3], actions float32 [T,A], proprio
    float32 [T+1,P], states float64 [T+1,S], rewards float32 [T], success bool [T])
    plus ``policy`` (name) and ``episode_id``.
    """
    key = (env_id, tuple(sorted(env_kwargs.items())))
    if key not in _ENV_CACHE:  # one env per worker process, reused across episodes
        _ENV_CACHE[key] = gym.make(env_id, disable_env_checker=True, **env_kwargs)
    env = _ENV_CACHE[key]
    ss = np.random.SeedSequence([seed, episode_id])
    rng = np.random.default_rng(ss)
    name = pick_policy(policy_mix, rng)
    policy = make_policy(name, env.action_space, rng, **policy_kwargs.get(name, {}))
    obs, info = env.reset(seed=int(ss.generate_state(1)[0]))
    frames, proprio, states = [obs["pixels"]], [obs["proprio"]], [info["state"]]
    actions, rewards, success = [], [], []
    for _ in range(length):
        a = policy.act(env)
        obs, r, _, _, info = env.unwrapped.step(a)  # bypass TimeLimit: dataset length is ours
        frames.append(obs["pixels"]); proprio.append(obs["proprio"]); states.append(info["state"])
        actions.append(a); rewards.append(r); success.append(info["success"])
    return {
        "episode_id": episode_id,
        "policy": name,
        "frames": np.stack(frames).astype(np.uint8),
        "actions": np.stack(actions).astype(np.float32),
        "proprio": np.stack(proprio).astype(np.float32),
        "states": np.stack(states).astype(np.float64),
        "rewards": np.asarray(rewards, np.float32),
        "success": np.asarray(success, bool),
    }
