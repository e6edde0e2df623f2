"""Batched MPPI (model-predictive path integral) planner.

Each iteration samples S perturbations around the current mean for all B envs at once,
weights them by softmax(-energy / temperature) per env and moves the mean to the weighted
average. Same static-shape, sync-free loop and generator conventions as CEM.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import (
    ActionPrior, BestSoFar, Goal, PlanContext, PlannerConfig,
    PlanResult, Planner, PlanSetup, WorldModelLike, ConfigError, argmin_rows, check_number,
)
from .noise import colour_noise
from .registry import register_planner


@dataclass
class MPPIConfig(PlannerConfig):
    """MPPI options. ``noise_std`` is a fraction of the action half-range."""

    samples: int = 256
    iterations: int = 4
    temperature: float = 0.1  # on energies min-max normalised per env, so it is scale-free
    noise_std: float = 0.5
    noise_decay: float = 1.0  # noise_std multiplier per iteration
    noise_beta: float = 0.0  # coloured noise exponent along time (0 = white)
    smoothing: int = 1  # moving-average window (odd) applied to the updated mean along time
    momentum: float = 0.0  # weight of the previous mean in each update
    include_mean: bool = True
    compile: bool = False

    def validate(self, where: str) -> None:
        super().validate(where)
        check_number(self.samples, "samples", where, low=1 + int(self.include_mean), integer=True)
        check_number(self.iterations, "iterations", where, low=1, integer=True)
        check_number(self.temperature, "temperature", where, low=0, low_open=True)
        check_number(self.noise_std, "noise_std", where, low=0, low_open=True)
        check_number(self.noise_decay, "noise_decay", where, low=0, low_open=True)
        check_number(self.noise_beta, "noise_beta", where)
        check_number(self.smoothing, "smoothing", where, low=1, integer=True)
        if self.smoothing % 2 == 0:
            raise ConfigError(f"{where}: 'smoothing' must be odd, got {self.smoothing}")
        check_number(self.momentum, "momentum", where, low=0, high=1, high_open=True)


def smooth_time(x: Tensor, window: int) -> Tensor:
    """Centred moving average along H of x [B,H,A] with edge replication (window 1 = identity)."""
    if window <= 1:
        return x
    if window % 2 == 0:
        raise ValueError(f"smoothing window must be odd, got {window}")
    b, h, a = x.shape
    y = x.permute(0, 2, 1).reshape(b * a, 1, h)
    y = F.pad(y, (window // 2, window // 2), mode="replicate")
    kernel = torch.full((1, 1, window), 1.0 / window, device=x.device, dtype=x.dtype)
    return F.conv1d(y, kernel).reshape(b, a, h).permute(0, 2, 1)


@register_planner("mppi")
class MPPIPlanner(Planner):
    """MPPI over action sequences.

    Returns whichever has lower energy per env: the final weighted mean (evaluated with one
    extra B-row rollout) or the best sample seen; ``stats["mean_chosen"]`` [B] says which.
    Warm start: the returned plan seeds the next call (shifted by ``shift``).
    """

    config_cls = MPPIConfig
    config: MPPIConfig

    def __init__(self, config: MPPIConfig | None = None, energy: Any = None, prior: ActionPrior | None = None):
        super().__init__(config, energy, prior)
        c = self.config
        self._step_fn = torch.compile(self._step, dynamic=False) if c.compile else self._step

    def _step(
        self, world_model: WorldModelLike, context: PlanContext, goal_m: Goal, mean: Tensor, noise: Tensor,
        low: Tensor, high: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """mean [B,H,A], noise [B,S',H,A] (already scaled) -> (new mean, best sample [B,H,A],
        best energy [B], terms of the best sample {k: [B]})."""
        c = self.config
        cand = mean.unsqueeze(1) + noise
        if c.include_mean:
            cand = torch.cat([mean.unsqueeze(1), cand], 1)
        cand = self._project(cand, low, high)
        e, terms = self._evaluate(world_model, context, goal_m, cand)
        best, e_min, best_terms = argmin_rows(e, cand, terms)
        span = (e.max(1).values - e_min).clamp(min=1e-12)
        w = torch.softmax(-(e - e_min[:, None]) / (c.temperature * span[:, None]), dim=1)
        new = (w[:, :, None, None] * cand).sum(1)
        new = smooth_time(new, c.smoothing)
        new = self._project(c.momentum * mean + (1 - c.momentum) * new, low, high)
        return new, best, e_min, best_terms

    def _optimise(
        self, world_model: WorldModelLike, context: PlanContext, goal: Goal, setup: PlanSetup
    ) -> tuple[PlanResult, dict[str, Tensor]]:
        c = self.config
        mean = setup.mean
        n_noise = c.samples - int(c.include_mean)
        eps = colour_noise(setup.noise((c.iterations, n_noise)), c.noise_beta, dim=-2)
        goal_m = goal.broadcast(c.samples)

        best = BestSoFar(mean)
        trace = []
        std = c.noise_std * setup.scale
        for i in range(c.iterations):
            mean, cand_a, cand_e, terms = self._step_fn(
                world_model, context, goal_m, mean, eps[:, i] * std, setup.low, setup.high
            )
            best.update(cand_a, cand_e, terms)
            trace.append(cand_e)
            std = std * c.noise_decay

        # The final mean is what MPPI would execute; evaluate it and keep it where it is better.
        mean_e, mean_terms = self._energy(world_model, context, goal, mean)
        use_mean = mean_e <= best.energy
        actions = torch.where(use_mean[:, None, None], mean, best.actions)
        energy = torch.where(use_mean, mean_e, best.energy)
        terms_out = {k: torch.where(use_mean, mean_terms[k], v) for k, v in best.terms.items()}
        stats = {"energy_per_iter": torch.stack(trace, 1), "terms": terms_out, "mean_chosen": use_mean}
        return PlanResult(actions, energy, stats), {}
