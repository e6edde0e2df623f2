"""Goal energy: distance between predicted latents and the goal latent."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...checks import ConfigError, check_finite, check_number
from .base import Energy, register_energy

METRICS = ("l1", "l2", "cosine")
STEPS = ("last", "all", "min")


def latent_distance(pred: Tensor, goal: Tensor, metric: str) -> Tensor:
    """pred [M,T,N,D], goal [M,N,D] -> [M,T].

    l1: mean |pred-goal| over N,D (V-JEPA 2-AC); l2: mean squared error over N,D (DINO-WM);
    cosine: 1 - cos(pred, goal) over D, averaged over the N tokens.
    """
    g = goal.unsqueeze(1)
    if metric == "l1":
        return (pred - g).abs().mean(dim=(-2, -1))
    if metric == "l2":
        return (pred - g).pow(2).mean(dim=(-2, -1))
    if metric == "cosine":
        return 1.0 - F.cosine_similarity(pred, g.expand_as(pred), dim=-1, eps=1e-8).mean(-1)
    raise ValueError(f"unknown metric {metric!r}; use one of {METRICS}")


@register_energy("goal")
class GoalEnergy(Energy):
    """Distance of predicted latents to the goal latent, on the last step or on all steps.

    steps="last": distance at t = H-1. steps="all": weighted mean over t of the per-step
    distance, ``step_weights`` None (uniform) | "linear" (w_t ∝ t+1, later steps count more)
    | a list of H floats; weights are normalised to sum to 1. steps="min": the smallest
    per-step distance (the goal reached at any step counts, as success is tested at every
    step; a plan may pass near the goal early without being pulled there in a straight line).
    ``proprio_weight`` > 0 adds that weight times the proprio distance (L1 mean for
    metric="l1", else squared L2 mean), on the same steps; needs predicted and goal proprio.
    """

    def __init__(
        self,
        metric: str = "l1",
        steps: str = "last",
        step_weights: str | Sequence[float] | None = None,
        proprio_weight: float = 0.0,
    ):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; use one of {METRICS}")
        if steps not in STEPS:
            raise ValueError(f"steps must be one of {STEPS}, got {steps!r}")
        check_number(proprio_weight, "proprio_weight", "energy term 'goal'", low=0)
        if step_weights is not None and not isinstance(step_weights, str):
            sw = [float(w) for w in step_weights]
            check_finite(torch.tensor(sw), "step_weights", "energy term 'goal'")
            if min(sw) < 0 or sum(sw) <= 0:
                raise ConfigError(f"energy term 'goal': 'step_weights' must be >= 0 with a positive sum, got {sw}")
        self.metric = metric
        self.steps = steps
        self.step_weights = step_weights
        self.proprio_weight = float(proprio_weight)

    def _weights(self, h: int, ref: Tensor) -> Tensor:
        sw = self.step_weights
        if sw is None or sw == "uniform":
            w = torch.ones(h, device=ref.device, dtype=ref.dtype)
        elif sw == "linear":
            w = torch.arange(1, h + 1, device=ref.device, dtype=ref.dtype)
        elif isinstance(sw, str):
            raise ValueError(f"unknown step_weights {sw!r}; use None, 'uniform', 'linear' or a list")
        else:
            if len(sw) != h:
                raise ValueError(f"step_weights has {len(sw)} entries for horizon {h}")
            w = torch.as_tensor(list(sw), device=ref.device, dtype=ref.dtype)
        return w / w.sum()

    def _reduce(self, d: Tensor) -> Tensor:
        """[M,T] per-step distances -> [M] (T is 1 for steps='last')."""
        if self.steps == "last":
            return d[:, -1]
        if self.steps == "min":
            return d.amin(dim=1)
        return d @ self._weights(d.shape[1], d)

    def __call__(self, rollout: Any, goal: Any, actions: Tensor, extras: dict[str, Any]) -> Tensor:
        pred = rollout.latents
        if self.steps == "last":
            pred = pred[:, -1:]  # only the last step is needed
        d = latent_distance(pred, goal.latents, self.metric)  # [M,T]
        if self.proprio_weight > 0:
            pp, gp = getattr(rollout, "proprio", None), getattr(goal, "proprio", None)
            if pp is None or gp is None:
                raise ValueError("GoalEnergy(proprio_weight>0) needs predicted proprio and goal proprio")
            if self.steps == "last":
                pp = pp[:, -1:]
            diff = pp - gp.unsqueeze(1)
            dp = diff.abs().mean(-1) if self.metric == "l1" else diff.pow(2).mean(-1)
            d = d + self.proprio_weight * dp  # per step, so steps="min" picks one step for both terms
        return self._reduce(d)
