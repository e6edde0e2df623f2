"""What a planner refuses before it searches and after: non-finite or mis-shaped inputs, an
empty batch, bounds with low > high, and a plan whose energy is not finite.

Each check costs a few reductions and one host sync per ``plan`` call (never inside the
optimisation loop). Errors name the planner, the field, the shape or the first bad index.
"""
from __future__ import annotations

from torch import Tensor

from ..checks import ConfigError, NonFiniteError, check_finite
from ..protocols import Goal, PlanContext

__all__ = ["check_bounds", "check_plan_inputs", "check_plan_output"]


def _shape(t: Tensor) -> list[int]:
    return list(t.shape)


def check_bounds(low: Tensor, high: Tensor, where: str) -> None:
    """low/high [A]: no NaN (inf means unbounded), low <= high everywhere."""
    if low.shape != high.shape or low.dim() != 1:
        raise ValueError(f"{where}: action bounds must both be [A], got low {_shape(low)} and high {_shape(high)}")
    if bool(low.isnan().any() | high.isnan().any()):
        raise NonFiniteError(f"{where}: action bounds hold NaN (low={low.tolist()}, high={high.tolist()}); "
                             "use +-inf for an unbounded dimension")
    bad = (low > high).nonzero().flatten().tolist()
    if bad:
        i = bad[0]
        raise ConfigError(f"{where}: action bounds have low > high on dim(s) {bad} "
                          f"(dim {i}: low={float(low[i])}, high={float(high[i])})")


def check_plan_inputs(context: PlanContext, goal: Goal, init: Tensor | None, horizon: int,
                      low: Tensor, high: Tensor, where: str) -> None:
    """Context latents [B,Tc,N,D] (proprio [B,Tc,P], actions [B,Tc-1,A]), goal [B,N,D] (proprio
    [B,P]), init [B,H,A]: all finite, B >= 1, shapes that agree, horizon >= 1, valid bounds."""
    lat = context.latents
    if lat.dim() != 4:
        raise ValueError(f"{where}: context.latents must be [B,Tc,N,D], got shape {_shape(lat)}")
    b, tc, n, d = lat.shape
    if b < 1:
        raise ValueError(f"{where}: a batch of 0 envs (context.latents {_shape(lat)}); pass at least one")
    if tc < 1:
        raise ValueError(f"{where}: context.latents has 0 frames ({_shape(lat)})")
    if horizon < 1:
        raise ConfigError(f"{where}: 'horizon' must be >= 1, got {horizon}")
    check_bounds(low, high, where)
    a_dim = int(low.shape[0])
    want = {"goal.latents": (goal.latents, [b, n, d])}
    if context.proprio is not None:
        want["context.proprio"] = (context.proprio, [b, tc, context.proprio.shape[-1]])
    if goal.proprio is not None:
        want["goal.proprio"] = (goal.proprio, [b, goal.proprio.shape[-1]])
    if context.actions is not None:
        want["context.actions"] = (context.actions, [b, tc - 1, a_dim])
    if init is not None:
        want["init"] = (init, [b, horizon, a_dim])
    for field, (t, shape) in want.items():
        if _shape(t) != shape:
            raise ValueError(f"{where}: '{field}' has shape {_shape(t)}, expected {shape} "
                             f"(B={b} envs, Tc={tc}, N={n} tokens, D={d}, H={horizon}, A={a_dim})")
    if context.proprio is not None and goal.proprio is not None and goal.proprio.shape[-1] != context.proprio.shape[-1]:
        raise ValueError(f"{where}: goal.proprio has P={goal.proprio.shape[-1]} but context.proprio "
                         f"has P={context.proprio.shape[-1]}")
    check_finite(lat, "context.latents", where)
    check_finite(goal.latents, "goal.latents", where)
    for field, t in (("context.proprio", context.proprio), ("goal.proprio", goal.proprio),
                     ("context.actions", context.actions), ("init", init)):
        if t is not None:
            check_finite(t, field, where)


def check_plan_output(actions: Tensor, energy: Tensor, where: str) -> None:
    """The returned plan: finite actions [B,H,A], and a finite energy [B] for every env (an
    energy that is inf or NaN for every candidate means the model or an energy term broke)."""
    bad = (~energy.isfinite()).nonzero().flatten().tolist()
    if bad:
        raise NonFiniteError(
            f"{where}: every candidate of env(s) {bad[:10]} has a non-finite energy "
            f"(env {bad[0]}: {float(energy[bad[0]])}); the world model's rollout or an energy term "
            "produced NaN/inf, so there is no plan to return (check the model file with "
            "WorldModel.load, which validates weights and statistics)")
    check_finite(actions, "actions (the plan)", where)
