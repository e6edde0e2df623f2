"""Random shooting: sample S action sequences per env once, keep the best (a baseline)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import (
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
from .registry import register_planner


@dataclass
class RandomShootingConfig(PlannerConfig):
    samples: int = 1024
    distribution: str = "uniform"  # "uniform" over the box | "gaussian" around the init/warm mean
    init_std: float = 0.5  # gaussian std as a fraction of the half-range
    include_mean: bool = True  # also evaluate the init/warm-start plan
    chunk: int = 0  # evaluate at most this many samples per env per rollout call (0 = all at once);
    #                 bounds memory for large S (and large batches are slower per row on CPU)


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
        step = c.chunk if 0 < c.chunk < c.samples else c.samples
        totals, parts = [], {}
        for j in range(0, c.samples, step):
            part = cand[:, j : j + step]
            n_j = part.shape[1]
            flat = part.reshape(b * n_j, h, a_dim)
            tot, terms = self.energy.evaluate(self._rollout(world_model, context, flat), goal.broadcast(n_j), flat, {})
            totals.append(tot.reshape(b, n_j))
            for k, v in terms.items():
                parts.setdefault(k, []).append(v.reshape(b, n_j))
        e = torch.cat(totals, 1)
        terms = {k: torch.cat(v, 1) for k, v in parts.items()}
        best_e, idx = e.min(1)
        actions = cand[torch.arange(b, device=dev), idx]
        if c.warm_start:
            self._warm = {"mean": actions}
        best_terms = {k: v.gather(1, idx[:, None]).squeeze(1) for k, v in terms.items()}
        return PlanResult(actions, best_e, {"terms": best_terms})
