"""Run one data-collection episode in a fresh process-local env (used by scripts/collect.py).

:func:`check_policy_settings` validates a ``policy_mix`` / ``policy_kwargs`` pair (names,
weights, and one dry-run action of every policy in the mix) before anything is collected.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from ..checks import ConfigError, NonFiniteError, check_finite, check_number
# importing this module runs wmplan.envs/__init__, which registers the wmplan/* ids in worker processes
from .policies import POLICIES, make_policy

_ENV_CACHE: dict[tuple, gym.Env] = {}


def pick_policy(mix: dict[str, float], rng: np.random.Generator) -> str:
    """Draw a policy name with probability proportional to its weight in ``mix``."""
    names = sorted(k for k, w in mix.items() if w > 0)
    if not names:
        raise ValueError(f"policy_mix={mix}: needs at least one positive weight")
    w = np.array([mix[n] for n in names], float)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def check_policy_settings(env: gym.Env, policy_mix: Any, policy_kwargs: Any, where: str = "collect") -> None:
    """Raise ConfigError unless ``policy_mix`` maps known policy names to non-negative finite
    weights with a positive sum, ``policy_kwargs`` maps known names to keyword dicts, and every
    policy with a positive weight builds with its kwargs and acts (one finite action of the
    env's shape on a freshly reset ``env``)."""
    known = sorted(POLICIES)
    if not isinstance(policy_mix, Mapping) or not policy_mix:
        raise ConfigError(f"{where}: 'policy_mix' must map policy names {known} to weights, got {policy_mix!r}")
    if policy_kwargs is None:
        policy_kwargs = {}
    if not isinstance(policy_kwargs, Mapping):
        raise ConfigError(f"{where}: 'policy_kwargs' must map policy names to keyword dicts, got {policy_kwargs!r}")
    for field, names in (("policy_mix", policy_mix), ("policy_kwargs", policy_kwargs)):
        for name in names:
            if name not in POLICIES:
                raise ConfigError(f"{where}: '{field}' names an unknown policy {name!r}; known: {known}")
    for name, w in policy_mix.items():
        check_number(w, f"policy_mix.{name}", where, low=0.0)
    if sum(float(w) for w in policy_mix.values()) <= 0:
        raise ConfigError(f"{where}: 'policy_mix' weights must have a positive sum, got {dict(policy_mix)!r}")
    space = env.action_space
    for name, w in policy_mix.items():
        kw = policy_kwargs.get(name) or {}
        if not isinstance(kw, Mapping):
            raise ConfigError(f"{where}: 'policy_kwargs.{name}' must be a dict of keyword arguments, got {kw!r}")
        if float(w) == 0:
            continue
        env.reset(seed=0)
        try:
            a = np.asarray(make_policy(name, space, np.random.default_rng(0), **kw).act(env))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: policy {name!r} with policy_kwargs.{name}={dict(kw)!r} fails: {e}") from e
        if a.shape != space.shape:
            raise ConfigError(f"{where}: policy {name!r} returns actions of shape {list(a.shape)}, "
                              f"the env wants {list(space.shape)}")
        try:
            check_finite(a.astype(np.float64), "action", f"{where}: policy {name!r} (policy_kwargs {dict(kw)!r})")
        except NonFiniteError as e:
            raise ConfigError(str(e)) from e


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
    key = (env_id, json.dumps(env_kwargs, sort_keys=True, default=str))  # nested kwargs (gym adapter) too
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
    for t in range(length):
        a = policy.act(env)
        check_finite(np.asarray(a, np.float64), "action", f"episode {episode_id} step {t} (policy {name!r})")
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
