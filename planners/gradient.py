"""Gradient planner: Adam on actions through the world model's differentiable rollout.

Shooting mode (default): decision variables are R restarts of actions [B,R,H,A]; each step
rolls out all B*R rows in one call, back-propagates the summed energy (rows are independent,
so each gets its own gradient), takes an Adam step and projects onto the constraint set.

Collocation mode (``collocation=True``): the latent states z_1..z_{H-1} are decision
variables too, and the energy adds the JEPA residual sum_t ||P(z_<=t, a_<=t) - z_{t+1}||
(an energy term ``jepa_residual`` must be configured; it reads ``extras``). The predictions
come from one teacher-forced call: ``world_model.predict_next`` when the model has it
(a block-causal pass over [z_0, z_1..z_{H-1}]), otherwise one batched ``rollout`` of M*H
rows with horizon 1 whose contexts are the individual states (a Markov approximation that
drops the predictor's longer history). Collocation uses the last context frame as z_0.
The goal energy sees [z_1..z_{H-1}, P(z_<=H-1, a_<=H-1)]. The returned plan is chosen by a
final shooting rollout of every restart, so the reported energy is dynamically consistent.

Adam is written out (a few tensor ops, no optimizer object): no host syncs, per-element
state, step sizes in units of the action half-range.

With ``memory_budget_mb`` the rows are scored and back-propagated in chunks, one backward
pass each (rows are independent, so the gradients are the same). A chunk holds its autograd
graph; its rows come from ``rows_per_call(..., grad=True)`` (the world model's
``gradient_bytes_*`` estimates).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .base import (
    ActionPrior, BestSoFar, Goal, PlanContext, PlannerConfig, PlanResult,
    Planner, PlanSetup, Rollout, WorldModelLike, argmin_rows, check_number, slice_context,
)
from .registry import register_planner


@dataclass
class GradientConfig(PlannerConfig):
    samples: int = 8  # restarts per env: row 0 starts at init/warm plan, others uniform in the box
    iterations: int = 50
    lr: float = 0.1  # Adam step, fraction of the action half-range
    cosine_decay: bool = True  # anneal both step sizes to 0 over the iterations (settles Adam's jitter)
    beta1: float = 0.9
    beta2: float = 0.999
    collocation: bool = False
    latent_lr: float = 0.05  # Adam step for latent (and proprio) states in collocation

    def validate(self, where: str) -> None:
        super().validate(where)
        check_number(self.samples, "samples", where, low=1, integer=True)
        check_number(self.iterations, "iterations", where, low=1, integer=True)
        check_number(self.lr, "lr", where, low=0, low_open=True)
        check_number(self.beta1, "beta1", where, low=0, high=1, high_open=True)
        check_number(self.beta2, "beta2", where, low=0, high=1, high_open=True)
        check_number(self.latent_lr, "latent_lr", where, low=0, low_open=True)


def _lr_factor(cfg: GradientConfig, i: int) -> float:
    """Step-size multiplier at iteration i (a Python float: no tensor, no sync)."""
    if not cfg.cosine_decay or cfg.iterations <= 1:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * i / cfg.iterations))


class _Adam:
    """Element-wise Adam on a tensor; ``step`` returns the update direction (no lr scale)."""

    def __init__(self, x: Tensor, beta1: float, beta2: float, eps: float = 1e-8):
        self.m, self.v = torch.zeros_like(x), torch.zeros_like(x)
        self.b1, self.b2, self.eps, self.t = beta1, beta2, eps, 0

    def direction(self, grad: Tensor) -> Tensor:
        self.t += 1
        self.m.mul_(self.b1).add_(grad, alpha=1 - self.b1)
        self.v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        m_hat = self.m / (1 - self.b1**self.t)
        v_hat = self.v / (1 - self.b2**self.t)
        return m_hat / (v_hat.sqrt() + self.eps)


def _plain(t: Tensor | None) -> Tensor | None:
    """Inference-mode tensors cannot be saved for backward; copy them to normal tensors."""
    return t.clone() if t is not None and t.is_inference() else t


@register_planner("gradient")
class GradientPlanner(Planner):
    """Projected Adam on action sequences (optionally with latent collocation)."""

    config_cls = GradientConfig
    config: GradientConfig

    def __init__(self, config: GradientConfig | None = None, energy: Any = None, prior: ActionPrior | None = None):
        super().__init__(config, energy, prior)
        if self.config.collocation and not _has_term(self.energy, "jepa_residual"):
            raise ValueError("collocation=True needs an energy with a 'jepa_residual' term (configs/energy/collocation.yaml)")

    def _optimise(
        self, world_model: WorldModelLike, context: PlanContext, goal: Goal, setup: PlanSetup
    ) -> tuple[PlanResult, dict[str, Tensor]]:
        c, b, h, r = self.config, setup.b, setup.h, self.config.samples
        context = PlanContext(_plain(context.latents), _plain(context.proprio), _plain(context.actions))
        goal_m = goal.broadcast(r)
        rand = setup.uniform((r - 1,))
        x = self._project(torch.cat([setup.mean[:, None], rand], 1), setup.low, setup.high)
        x = x.reshape(b * r, h, setup.a_dim)  # [M,H,A], M = B*R restarts

        best: BestSoFar | None = None
        with torch.enable_grad():  # plan() runs under no_grad; the search needs the graph
            if c.collocation:
                x, trace = self._collocate(world_model, context, goal_m, x, setup)
            else:
                x, best, trace = self._shoot(world_model, context, goal_m, x, setup)
        # final (dynamically consistent) evaluation of the last iterates of every restart
        total = self._evaluate(world_model, context, goal_m, x.reshape(b, r, h, setup.a_dim))[0].reshape(-1)
        if best is not None:
            best.update(x, total)
            rows_a, rows_e = best.actions, best.energy
        else:
            rows_a, rows_e = x, total
        actions, e_min, _ = argmin_rows(rows_e.reshape(b, r), rows_a.reshape(b, r, h, setup.a_dim))
        stats = {"energy_per_iter": torch.stack(trace, 1).reshape(b, r, -1).amin(1) if trace else None}
        return PlanResult(actions.detach(), e_min.detach(), stats), {}

    # ------------------------------------------------------------------ shooting
    def _shoot(
        self, wm: WorldModelLike, context: PlanContext, goal_m: Goal, x: Tensor, setup: PlanSetup
    ) -> tuple[Tensor, BestSoFar, list[Tensor]]:
        """Adam on x [M,H,A] -> (last iterate [M,H,A], best per row, per-iteration energies [M])."""
        c = self.config
        adam = _Adam(x, c.beta1, c.beta2)
        best = BestSoFar(x)
        trace = []
        for i in range(c.iterations):
            f = _lr_factor(c, i)
            total, grad = self._energy_and_grad(wm, context, goal_m, x)
            with torch.no_grad():
                best.update(x, total)
                trace.append(total.detach())
                x = self._project(x - f * c.lr * setup.scale * adam.direction(grad), setup.low, setup.high)
        return x.detach(), best, trace

    def _energy_and_grad(self, wm: WorldModelLike, context: PlanContext, goal_m: Goal, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [M,H,A] -> (energy [M], d energy / d x [M,H,A]), in the budget's chunks."""
        chunks = self.row_spans(wm, context, x.shape[0] // context.batch, x.shape[1], grad=True)
        totals, grads = [], []
        for b0, b1, r0, r1 in chunks:
            xc = x[r0:r1].detach().requires_grad_(True)
            ctx = context if len(chunks) == 1 else slice_context(context, b0, b1)
            t, _ = self._energy(wm, ctx, goal_m.rows(r0, r1) if len(chunks) > 1 else goal_m, xc)
            _check_grad(t)
            (g,) = torch.autograd.grad(t.sum(), xc)
            totals.append(t.detach())
            grads.append(g)
        return torch.cat(totals), torch.cat(grads)

    # ------------------------------------------------------------------ collocation
    def _collocate(
        self, wm: WorldModelLike, context: PlanContext, goal_m: Goal, x: Tensor, setup: PlanSetup
    ) -> tuple[Tensor, list[Tensor]]:
        """Adam on actions x [M,H,A] and states z_1..z_{H-1} -> (last actions [M,H,A], energies [M] per iteration)."""
        c = self.config
        m, h = x.shape[0], x.shape[1]
        s = m // context.batch
        with torch.no_grad():  # the initial states, in the budget's no-grad chunks
            spans = self.row_spans(wm, context, s, h)
            parts = [self._rollout(wm, slice_context(context, b0, b1), x[r0:r1]) for b0, b1, r0, r1 in spans]
            init_roll = Rollout(torch.cat([q.latents for q in parts]),
                                None if parts[0].proprio is None else torch.cat([q.proprio for q in parts]))
        z0 = context.latents[:, -1:].repeat_interleave(s, 0)  # [M,1,N,D]
        z = init_roll.latents[:, : h - 1].detach().clone()  # decision states z_1..z_{H-1}
        use_p = context.proprio is not None
        if use_p and init_roll.proprio is None:
            raise ValueError("collocation with proprio needs a world model that predicts proprio")
        p0 = context.proprio[:, -1:].repeat_interleave(s, 0) if use_p else None
        p = init_roll.proprio[:, : h - 1].detach().clone() if use_p else None
        opt_x, opt_z = _Adam(x, c.beta1, c.beta2), _Adam(z, c.beta1, c.beta2)
        opt_p = _Adam(p, c.beta1, c.beta2) if use_p else None
        chunks = self.row_spans(wm, context, s, h, grad=True)
        trace = []
        for i in range(c.iterations):
            f = _lr_factor(c, i)
            totals, grads = [], []
            for _, _, r0, r1 in chunks:  # rows are independent: z_0 and p_0 are per row
                t, g = self._collocation_energy_and_grad(
                    wm, goal_m.rows(r0, r1) if len(chunks) > 1 else goal_m, x[r0:r1], z[r0:r1], z0[r0:r1],
                    None if p is None else p[r0:r1], None if p0 is None else p0[r0:r1])
                totals.append(t)
                grads.append(g)
            grads = [torch.cat(parts) for parts in zip(*grads)]
            with torch.no_grad():
                trace.append(torch.cat(totals))
                x = self._project(x - f * c.lr * setup.scale * opt_x.direction(grads[0]), setup.low, setup.high)
                z = z - f * c.latent_lr * opt_z.direction(grads[1])
                if use_p:
                    p = p - f * c.latent_lr * opt_p.direction(grads[2])
        return x.detach(), trace

    def _collocation_energy_and_grad(
        self, wm: WorldModelLike, goal_m: Goal, x: Tensor, z: Tensor, z0: Tensor, p: Tensor | None, p0: Tensor | None
    ) -> tuple[Tensor, list[Tensor]]:
        """Energy [m] of rows x [m,H,A], z [m,H-1,N,D] (p [m,H-1,P]) and its gradients w.r.t. them."""
        use_p = p is not None
        x = x.detach().requires_grad_(True)
        z = z.detach().requires_grad_(True)
        leaves = [x, z]
        if use_p:
            p = p.detach().requires_grad_(True)
            leaves.append(p)
        seq = torch.cat([z0, z], 1)  # [m,H,N,D] = z_0..z_{H-1}
        pseq = torch.cat([p0, p], 1) if use_p else None
        pred = self._predict_next(wm, seq, pseq, x)
        roll = Rollout(
            torch.cat([z, pred.latents[:, -1:]], 1),
            torch.cat([p, pred.proprio[:, -1:]], 1) if use_p else None,
            pred.disagreement,  # ensemble spread of each teacher-forced prediction, [m,H] | None
        )
        extras = {"jepa_pred": pred.latents[:, :-1], "jepa_target": z}
        if use_p:
            extras["jepa_pred_proprio"], extras["jepa_target_proprio"] = pred.proprio[:, :-1], p
        total, _ = self.energy.evaluate(roll, goal_m, x, extras)
        _check_grad(total)
        return total.detach(), list(torch.autograd.grad(total.sum(), leaves))

    def _predict_next(self, wm, seq: Tensor, pseq: Tensor | None, actions: Tensor) -> Rollout:
        """Teacher-forced predictions of z_{t+1} for t = 0..H-1: seq [M,H,N,D] -> Rollout [M,H,...]."""
        if hasattr(wm, "predict_next"):
            out = wm.predict_next(seq, pseq, actions)
            return Rollout(out.latents.float(), _f32(getattr(out, "proprio", None)), _f32(getattr(out, "disagreement", None)))
        m, h = seq.shape[:2]
        ctx = PlanContext(seq.reshape(m * h, 1, *seq.shape[2:]), None if pseq is None else pseq.reshape(m * h, 1, -1))
        out = self._rollout(wm, ctx, actions.reshape(m * h, 1, -1))
        lat = out.latents.reshape(m, h, *seq.shape[2:])
        prop = None if out.proprio is None else out.proprio.reshape(m, h, -1)
        dis = None if out.disagreement is None else out.disagreement.reshape(m, h)
        return Rollout(lat, prop, dis)


def _f32(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.float()


def _check_grad(total: Tensor) -> None:
    if not total.requires_grad:
        raise RuntimeError("energy has no gradient w.r.t. actions: the world model's rollout must be "
                           "differentiable (no torch.no_grad / inference_mode inside it)")


def _has_term(energy: Any, name: str) -> bool:
    terms = getattr(energy, "terms", None)
    if terms is not None:
        return any(t.name == name for _, t, _ in terms)
    return getattr(energy, "name", None) == name
