"""Random shooting: sample S action sequences per env once, keep the best (a baseline)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import (
    Goal, PlanContext, PlannerConfig, PlanResult, Planner, PlanSetup, WorldModelLike, argmin_rows,
    check_choice, check_number,
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

    def validate(self, where: str) -> None:
        super().validate(where)
        check_number(self.samples, "samples", where, low=1 + int(self.include_mean), integer=True)
        check_choice(self.distribution, "distribution", ("uniform", "gaussian"), where)
        check_number(self.init_std, "init_std", where, low=0, low_open=True)
        check_number(self.chunk, "chunk", where, low=0, integer=True)


@register_planner("random_shooting")
class RandomShootingPlanner(Planner):
    """One batched rollout of B*S random sequences; returns the lowest-energy one per env."""

    config_cls = RandomShootingConfig
    config: RandomShootingConfig

    def _optimise(
        self, world_model: WorldModelLike, context: PlanContext, goal: Goal, setup: PlanSetup
    ) -> tuple[PlanResult, dict[str, Tensor]]:
        c = self.config
        n = c.samples - int(c.include_mean)
        if c.distribution == "uniform":
            cand = setup.uniform((n,))
        elif c.distribution == "gaussian":
            cand = setup.mean[:, None] + c.init_std * setup.scale * setup.noise((n,))
        else:
            raise ValueError(f"unknown distribution {c.distribution!r}; use 'uniform' or 'gaussian'")
        if c.include_mean:
            cand = torch.cat([setup.mean[:, None], cand], 1)
        cand = self._project(cand, setup.low, setup.high)  # [B,S,H,A]
        step = c.chunk if 0 < c.chunk < c.samples else c.samples
        totals, parts = [], {}
        for j in range(0, c.samples, step):
            part = cand[:, j : j + step]
            tot, terms = self._evaluate(world_model, context, goal.broadcast(part.shape[1]), part)
            totals.append(tot)
            for k, v in terms.items():
                parts.setdefault(k, []).append(v)
        terms = {k: torch.cat(v, 1) for k, v in parts.items()}
        actions, energy, best_terms = argmin_rows(torch.cat(totals, 1), cand, terms)
        return PlanResult(actions, energy, {"terms": best_terms}), {}
