"""Random shooting: sample S action sequences per env once, keep the best (a baseline)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from planners.base import (
    GeneratorArg,
    Goal,
    PlanContext,
    PlannerConfig,
    PlanResult,
    Planner,
    WorldModelLike,
    action_bounds,
    box_centre,
    half_range,
    make_noise,
    make_uniform,
)
from planners.registry import register_planner


@dataclass
class RandomShootingConfig(PlannerConfig):
    samples: int = 1024
    distribution: str = "uniform"  # "uniform" over the box | "gaussian" around the init/warm mean
    init_std: float = 0.5  # gaussian std as a fraction of the half-range
    include_mean: bool = True  # also evaluate the init/warm-start plan


@register_planner("random_shooting")
class RandomShootingPlanner(Planner):
    """One batched rollout of B*S random sequences; returns the lowest-energy one per env."""

    config_cls = RandomShootingConfig
    config: RandomShootingConfig

    @torch.no_grad()
    def plan(
        self,
        world_model: WorldModelLike,
        context: PlanContext,
        goal: Goal,
        init: Tensor | None = None,
        generator: GeneratorArg = None,
        horizon: int | None = None,
    ) -> PlanResult:
        c = self.config
        b, h = context.batch, self._horizon(init, horizon)
        low, high = action_bounds(world_model)
        a_dim, dev = low.shape[0], low.device
        mean = self._initial_mean(init, b, h, low, high)
        n = c.samples - int(c.include_mean)
        if n < 1:
            raise ValueError("random shooting needs samples > include_mean")
        if c.distribution == "uniform":
            # unbounded dims fall back to centre +- 1
            lo = torch.where(torch.isfinite(low), low, box_centre(low, high) - 1)
            span = 2 * half_range(low, high)
            cand = lo + span * make_uniform(generator, b, (n, h, a_dim), dev)
        elif c.distribution == "gaussian":
            cand = mean[:, None] + c.init_std * half_range(low, high) * make_noise(generator, b, (n, h, a_dim), dev)
        else:
            raise ValueError(f"unknown distribution {c.distribution!r}; use 'uniform' or 'gaussian'")
        if c.include_mean:
            cand = torch.cat([mean[:, None], cand], 1)
        cand = self._project(cand, low, high)
        flat = cand.reshape(b * c.samples, h, a_dim)
        total, terms = self.energy.evaluate(self._rollout(world_model, context, flat), goal.broadcast(c.samples), flat, {})
        e = total.reshape(b, c.samples)
        best_e, idx = e.min(1)
        actions = cand[torch.arange(b, device=dev), idx]
        if c.warm_start:
            self._warm = {"mean": actions}
        best_terms = {k: v.reshape(b, -1).gather(1, idx[:, None]).squeeze(1) for k, v in terms.items()}
        return PlanResult(actions, best_e, {"terms": best_terms})
