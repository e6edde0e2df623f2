"""Data-collection policies: uniform random, temporally correlated random, noisy expert.

A policy is ``act(env) -> float32 [A]``; it may read privileged state through
``env.unwrapped`` (the expert does). ``make_policy`` builds one from a name.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np


class UniformRandomPolicy:
    name = "uniform"

    def __init__(self, space: gym.spaces.Box, rng: np.random.Generator) -> None:
        self.space, self.rng = space, rng

    def act(self, env: gym.Env) -> np.ndarray:
        return self.rng.uniform(self.space.low, self.space.high).astype(np.float32)


class CorrelatedRandomPolicy:
    """AR(1) noise a_t = c a_{t-1} + sqrt(1 - c^2) e_t (unit stationary std), clipped to bounds.
    Correlated actions travel further than white noise, so data covers the arena."""

    name = "correlated"

    def __init__(self, space: gym.spaces.Box, rng: np.random.Generator, correlation: float = 0.9) -> None:
        if not 0.0 <= correlation < 1.0:
            raise ValueError(f"correlation={correlation}: must be in [0, 1)")
        self.space, self.rng, self.c = space, rng, correlation
        self.a = rng.standard_normal(space.shape)

    def act(self, env: gym.Env) -> np.ndarray:
        self.a = self.c * self.a + np.sqrt(1 - self.c**2) * self.rng.standard_normal(self.space.shape)
        half = (self.space.high - self.space.low) / 2
        mid = (self.space.high + self.space.low) / 2
        return np.clip(mid + half * self.a, self.space.low, self.space.high).astype(np.float32)


class NoisyExpertPolicy:
    """The task's scripted expert plus Gaussian noise of std ``noise`` (in action units)."""

    name = "expert"

    def __init__(self, space: gym.spaces.Box, rng: np.random.Generator, noise: float = 0.0) -> None:
        self.space, self.rng, self.noise = space, rng, noise

    def act(self, env: gym.Env) -> np.ndarray:
        a = env.unwrapped.expert_action()
        if self.noise > 0:
            a = a + self.noise * self.rng.standard_normal(a.shape)
        return np.clip(a, self.space.low, self.space.high).astype(np.float32)


POLICIES = {p.name: p for p in (UniformRandomPolicy, CorrelatedRandomPolicy, NoisyExpertPolicy)}


def make_policy(name: str, space: gym.spaces.Box, rng: np.random.Generator, **kwargs) -> object:
    if name not in POLICIES:
        raise ValueError(f"policy={name!r}: unknown, choose from {sorted(POLICIES)}")
    return POLICIES[name](space, rng, **kwargs)
