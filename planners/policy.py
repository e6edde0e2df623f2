"""The goal policy as a planner: its rollout through the world model is the plan, no search.

This is goal-conditioned behaviour cloning in the world model's latent space, the baseline the
field sets beside world-model planning: what the data's policies would do, without the model's
judgement. ``plan.py planner=policy prior=<file>`` (``scripts/train_policy.py`` makes the file);
any other planner with ``prior=<file>`` searches from the same rollout instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .base import (
    ActionPrior, ConfigError, Goal, PlanContext, PlannerConfig, PlanResult, Planner, PlanSetup, WorldModelLike,
)
from .registry import register_planner


@dataclass
class PolicyConfig(PlannerConfig):
    warm_start: bool = False  # nothing to carry: every call asks the prior afresh


@register_planner("policy")
class PolicyPlanner(Planner):
    """Returns the prior's proposal ``[B,H,A]`` (``Planner.plan`` made it the initial mean) and its
    energy from one rollout of B rows, so run records compare with the searching planners'."""

    config_cls = PolicyConfig
    config: PolicyConfig

    def __init__(self, config: PolicyConfig | None = None, energy: Any = None, prior: ActionPrior | None = None):
        super().__init__(config, energy, prior)
        if prior is None:
            raise ConfigError(f"planner {self.name!r} needs an action prior: plan.py prior=<goal-policy file> "
                              "(made by scripts/train_policy.py)")

    def _optimise(
        self, world_model: WorldModelLike, context: PlanContext, goal: Goal, setup: PlanSetup
    ) -> tuple[PlanResult, dict[str, Tensor]]:
        energy, terms = self._evaluate(world_model, context, goal, setup.mean.unsqueeze(1))
        return PlanResult(setup.mean, energy[:, 0], {"terms": {k: v[:, 0] for k, v in terms.items()}}), {}
