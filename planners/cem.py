"""Batched cross-entropy method (CEM) with iCEM extras.

All B envs are planned in one call: samples [B,S,H,A] -> one world-model rollout of
B*S rows per iteration -> energies [B,S] -> elites by ``topk`` + ``gather``. The loop has
static shapes and no host syncs, so it can run under ``torch.compile`` (``compile=True``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .base import (
    ActionPrior, BestSoFar, Goal, PlanContext, PlannerConfig,
    PlanResult, Planner, PlanSetup, WorldModelLike, ConfigError, check_number, gather_rows,
)
from .noise import colour_noise
from .registry import register_planner


@dataclass
class CEMConfig(PlannerConfig):
    """CEM options. Stds are fractions of the action half-range (high-low)/2."""

    samples: int = 256  # S, including the mean and kept elites
    iterations: int = 6
    elites: int = 32  # K
    momentum: float = 0.1  # weight of the previous mean/std in each update
    init_std: float = 0.5
    min_std: float = 0.05
    include_mean: bool = True  # evaluate the current mean as one of the S candidates
    keep_elites: float = 0.0  # fraction of K elites carried to the next iteration / replan (iCEM: 0.3)
    noise_beta: float = 0.0  # coloured noise exponent along time (0 = white; iCEM uses 2-3)
    compile: bool = False  # torch.compile the per-iteration step (compile time shows in the first call)
    return_mean: bool = False  # return the final mean (scored by one extra rollout) instead of the best sample (V-JEPA 2-AC)

    def validate(self, where: str) -> None:
        super().validate(where)
        check_number(self.samples, "samples", where, low=1, integer=True)
        check_number(self.iterations, "iterations", where, low=1, integer=True)
        check_number(self.elites, "elites", where, low=1, high=self.samples, integer=True)
        check_number(self.momentum, "momentum", where, low=0, high=1, high_open=True)
        check_number(self.init_std, "init_std", where, low=0, low_open=True)
        check_number(self.min_std, "min_std", where, low=0)
        check_number(self.keep_elites, "keep_elites", where, low=0, high=1)
        check_number(self.noise_beta, "noise_beta", where)


@register_planner("cem")
class CEMPlanner(Planner):
    """Cross-entropy method over action sequences.

    Returns the best sequence evaluated in any iteration (not the final mean: the best
    evaluated sequence has a known energy, and with ``include_mean`` the mean of each
    iteration is among the candidates); ``return_mean=True`` returns the final mean instead,
    as V-JEPA 2-AC's planner does, with its energy from one more rollout of B rows. Warm start: the returned plan becomes the next
    call's initial mean and the top ``keep_elites*K`` elites are re-evaluated, both shifted
    by ``shift(k)``; the std restarts at ``init_std`` on each call.
    """

    config_cls = CEMConfig
    config: CEMConfig

    def __init__(self, config: CEMConfig | None = None, energy: Any = None, prior: ActionPrior | None = None):
        super().__init__(config, energy, prior)
        c = self.config
        self.n_keep = min(int(round(c.keep_elites * c.elites)), c.elites)
        if c.samples - self.n_keep - int(c.include_mean) < 1:
            raise ConfigError(f"planner {self.name!r}: 'samples'={c.samples} must exceed the kept elites "
                              f"({self.n_keep}) plus the mean ({int(c.include_mean)})")
        self._step_fn = torch.compile(self._step, dynamic=False) if c.compile else self._step

    # ------------------------------------------------------------------ one iteration
    def _step(
        self,
        world_model: WorldModelLike,
        context: PlanContext,
        goal_m: Goal,
        mean: Tensor,
        std: Tensor,
        eps: Tensor,
        kept: Tensor | None,
        std_floor: Tensor,
        low: Tensor,
        high: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """mean/std [B,H,A], eps [B,S',H,A], kept [B,n_keep,H,A]|None ->
        (mean, std, elites [B,K,H,A], elite energies [B,K], elite index [B,K], terms {k: [B,S]})."""
        c = self.config
        fresh = mean.unsqueeze(1) + std.unsqueeze(1) * eps
        parts = [mean.unsqueeze(1)] if c.include_mean else []
        if kept is not None:
            parts.append(kept)
        parts.append(fresh)
        cand = self._project(torch.cat(parts, 1), low, high)  # [B,S,H,A]
        energy, terms = self._evaluate(world_model, context, goal_m, cand)
        vals, idx = torch.topk(energy, c.elites, dim=1, largest=False, sorted=True)
        elites = gather_rows(cand, idx)
        m = c.momentum
        new_mean = m * mean + (1 - m) * elites.mean(1)
        new_std = m * std + (1 - m) * elites.std(1, unbiased=False)
        new_std = torch.maximum(new_std, std_floor)
        return new_mean, new_std, elites, vals, idx, terms

    # ------------------------------------------------------------------ search
    def _optimise(
        self, world_model: WorldModelLike, context: PlanContext, goal: Goal, setup: PlanSetup
    ) -> tuple[PlanResult, dict[str, Tensor]]:
        c, b, h, a_dim = self.config, setup.b, setup.h, setup.a_dim
        mean = setup.mean
        std = (c.init_std * setup.scale).expand(b, h, a_dim).clone()
        std_floor = (c.min_std * setup.scale).expand(b, h, a_dim)
        kept = self._warm_tensor("elites", b, h) if self.n_keep > 0 else None
        if kept is not None and kept.shape[1] != self.n_keep:
            kept = None

        n_noise = c.samples - int(c.include_mean)  # kept elites replace the last fresh columns
        eps = colour_noise(setup.noise((c.iterations, n_noise)), c.noise_beta, dim=-2)
        goal_m = goal.broadcast(c.samples)

        best = BestSoFar(mean)
        trace = []
        for i in range(c.iterations):
            eps_i = eps[:, i] if kept is None else eps[:, i, : n_noise - self.n_keep]
            mean, std, elites, vals, idx, terms = self._step_fn(
                world_model, context, goal_m, mean, std, eps_i, kept, std_floor, setup.low, setup.high
            )
            best.update(elites[:, 0], vals[:, 0], {k: v.gather(1, idx[:, :1]).squeeze(1) for k, v in terms.items()})
            kept = elites[:, : self.n_keep] if self.n_keep > 0 else None
            trace.append(vals[:, 0])

        actions, energy, terms = best.actions, best.energy, best.terms
        if c.return_mean:
            actions = self._project(mean, setup.low, setup.high)
            e, t = self._evaluate(world_model, context, goal, actions.unsqueeze(1))
            energy, terms = e[:, 0], {k: v[:, 0] for k, v in t.items()}
        stats = {
            "energy_per_iter": torch.stack(trace, 1),  # [B,I] best energy of each iteration
            "terms": terms,  # {term: [B]} unweighted terms of the returned plan
            "final_std": std.mean(dim=(1, 2)),  # [B]
        }
        return PlanResult(actions, energy, stats), ({} if kept is None else {"elites": kept})
