"""The Planner base class and the helpers every planner shares (the shared types live in
``wmplan.protocols``; they are re-exported here).

Shapes (B envs, S samples per env, M = B*S rollout rows, H horizon, A planner action dim,
Tc context frames, N tokens per frame, D latent width, P proprio width):

- ``PlanContext.latents`` [B,Tc,N,D], ``PlanContext.proprio`` [B,Tc,P] | None
- ``Goal.latents`` [B,N,D], ``Goal.proprio`` [B,P] | None
- ``WorldModelLike.rollout(ctx [B,Tc,N,D], ctx_proprio [B,Tc,P]|None, actions [M,H,A])``
  -> ``Rollout(latents [M,H,N,D], proprio [M,H,P]|None, disagreement [M,H]|None)``;
  with Tc > 1 also ``ctx_actions=[B,Tc-1,A]`` (keyword, only passed when the context has it).
  When M = B*S the world model broadcasts env b's context to rows b*S .. (b+1)*S-1.
- ``PlanResult.actions`` [B,H,A], ``PlanResult.energy`` [B].
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..protocols import Goal, PlanContext, PlanResult, Rollout, TeacherForcedModel, WorldModelLike


@dataclass
class PlannerConfig:
    """Fields shared by all planners. Subclasses add their own."""

    horizon: int = 8
    warm_start: bool = True  # keep the last plan (and elites) to seed the next call
    shift_fill: str = "last"  # how a shifted plan is padded at the end: "last" | "zero"
    amp: bool = False  # bf16 autocast for the world-model rollout; CUDA only, ignored elsewhere
    constraint: str = "box"  # "box" | "l1" (L1 ball around the box centre, then box)
    l1_radius: float = 1.0
    l1_group: int = 0  # L1 ball per chunk of this many action dims (0 = whole action vector)


GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


class Planner(ABC):
    """Base class: holds config + energy, warm-start state, and shared helpers.

    Subclasses implement ``plan``. Warm-start state is a dict of per-env tensors whose last
    two dims are [H,A] (e.g. ``mean`` [B,H,A], ``elites`` [B,K,H,A]); ``shift`` and ``select``
    operate on all of them, so the MPC runner stays planner-agnostic.
    """

    name: ClassVar[str] = "base"
    config_cls: ClassVar[type[PlannerConfig]] = PlannerConfig

    def __init__(self, config: PlannerConfig | None = None, energy: Any = None):
        from .energies import GoalEnergy  # local import: energies import base

        self.config = config if config is not None else self.config_cls()
        self.energy = energy if energy is not None else GoalEnergy()
        self._warm: dict[str, Tensor] = {}

    # ----------------------------------------------------------------- interface
    @abstractmethod
    def plan(
        self,
        world_model: WorldModelLike,
        context: PlanContext,
        goal: Goal,
        init: Tensor | None = None,
        generator: GeneratorArg = None,
        horizon: int | None = None,
    ) -> PlanResult:
        """Optimise actions [B,H,A] for B envs at once.

        ``init`` [B,H,A] seeds the search (overrides the internal warm start). ``generator``:
        one ``torch.Generator`` shared by all envs, or a list of B (one noise stream per env,
        so planning envs together equals planning them one by one), or None (a fresh
        generator seeded 0). ``horizon`` overrides ``config.horizon``.
        """

    def reset(self) -> None:
        """Forget warm-start state (call at episode start)."""
        self._warm = {}

    def shift(self, steps: int) -> None:
        """Advance warm-start state by ``steps`` executed predictor steps."""
        self._warm = {k: shift_actions(v, steps, self.config.shift_fill) for k, v in self._warm.items()}

    def select(self, index: Tensor | Sequence[int]) -> None:
        """Keep warm-start state only for env rows ``index`` (batch compaction)."""
        if not self._warm:
            return
        dev = next(iter(self._warm.values())).device
        idx = torch.as_tensor(index, dtype=torch.long, device=dev)
        self._warm = {k: v.index_select(0, idx) for k, v in self._warm.items()}

    # ----------------------------------------------------------------- helpers
    def _horizon(self, init: Tensor | None, horizon: int | None) -> int:
        if horizon is not None:
            return int(horizon)
        if init is not None:
            return int(init.shape[1])
        return int(self.config.horizon)

    def _warm_tensor(self, key: str, batch: int, horizon: int) -> Tensor | None:
        """Warm-start tensor ``key`` if it matches the current batch and horizon."""
        v = self._warm.get(key) if self.config.warm_start else None
        if v is None or v.shape[0] != batch or v.shape[-2] != horizon:
            return None
        return v

    def _initial_mean(self, init: Tensor | None, batch: int, horizon: int, low: Tensor, high: Tensor) -> Tensor:
        """[B,H,A]: ``init`` > warm state > box centre (0 where bounds are infinite)."""
        if init is not None:
            return init.to(low.dtype)
        warm = self._warm_tensor("mean", batch, horizon)
        if warm is not None:
            return warm
        return box_centre(low, high).expand(batch, horizon, -1).clone()

    def _project(self, actions: Tensor, low: Tensor, high: Tensor) -> Tensor:
        """Project [...,A] onto the configured constraint set (always ends inside the box)."""
        from .constraints import project_actions

        c = self.config
        return project_actions(actions, low, high, c.constraint, c.l1_radius, c.l1_group)

    def _rollout(self, world_model: WorldModelLike, context: PlanContext, actions: Tensor) -> Rollout:
        """Roll [M,H,A] through the model; bf16 autocast on CUDA when ``config.amp``.

        Outputs are cast back to fp32 so energies, top-k and statistics stay fp32.
        """
        use_amp = self.config.amp and actions.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else nullcontext():
            if context.actions is None:
                r = world_model.rollout(context.latents, context.proprio, actions)
            else:
                r = world_model.rollout(context.latents, context.proprio, actions, ctx_actions=context.actions)
        f32 = lambda x: None if x is None else x.float()  # noqa: E731
        return Rollout(f32(r.latents), f32(getattr(r, "proprio", None)), f32(getattr(r, "disagreement", None)))


# ---------------------------------------------------------------------- free helpers
def box_centre(low: Tensor, high: Tensor) -> Tensor:
    """[A] centre of the box; 0 on unbounded dims."""
    c = (low + high) / 2
    return torch.where(torch.isfinite(c), c, torch.zeros_like(c))


def half_range(low: Tensor, high: Tensor) -> Tensor:
    """[A] half-width of the box; 1 on unbounded dims (so relative stds stay meaningful)."""
    h = (high - low) / 2
    return torch.where(torch.isfinite(h), h, torch.ones_like(h))


def shift_actions(x: Tensor, steps: int, fill: str = "last") -> Tensor:
    """Drop the first ``steps`` entries of the H axis (dim -2) and pad the end.

    x: [...,H,A] -> [...,H,A]; padding repeats the last step ("last") or is zero ("zero").
    """
    h = x.shape[-2]
    steps = max(0, min(int(steps), h))
    if steps == 0:
        return x
    kept = x[..., steps:, :]
    if fill == "zero":
        pad = torch.zeros_like(x[..., :steps, :])
    else:
        pad = x[..., -1:, :].expand(*x.shape[:-2], steps, x.shape[-1])
    return torch.cat([kept, pad], dim=-2)


def make_noise(
    generator: GeneratorArg, batch: int, shape: Sequence[int], device: torch.device, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Standard normal noise [B,*shape], drawn once per plan call (outside the loop).

    A list of B generators gives env b its own stream (batched == one-by-one); a single
    generator draws the whole block at once; None uses a fresh generator seeded 0.
    """
    shape = tuple(int(s) for s in shape)
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    if isinstance(generator, torch.Generator):
        return torch.randn((batch, *shape), generator=generator, device=device, dtype=dtype)
    gens = list(generator)
    if len(gens) != batch:
        raise ValueError(f"got {len(gens)} generators for a batch of {batch} envs")
    return torch.stack([torch.randn(shape, generator=g, device=device, dtype=dtype) for g in gens])


def make_uniform(
    generator: GeneratorArg, batch: int, shape: Sequence[int], device: torch.device, dtype: torch.dtype = torch.float32
) -> Tensor:
    """U[0,1) noise [B,*shape] with the same generator conventions as ``make_noise``."""
    shape = tuple(int(s) for s in shape)
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    if isinstance(generator, torch.Generator):
        return torch.rand((batch, *shape), generator=generator, device=device, dtype=dtype)
    gens = list(generator)
    if len(gens) != batch:
        raise ValueError(f"got {len(gens)} generators for a batch of {batch} envs")
    return torch.stack([torch.rand(shape, generator=g, device=device, dtype=dtype) for g in gens])


def action_bounds(world_model: WorldModelLike, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """(low [A], high [A]) of the world model as fp32 tensors."""
    low = torch.as_tensor(world_model.action_low).to(dtype)
    high = torch.as_tensor(world_model.action_high).to(dtype)
    return low, high


def gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """x [B,S,...], idx [B,K] -> [B,K,...] (top-k gather along the sample axis)."""
    view = idx.reshape(*idx.shape, *([1] * (x.dim() - 2)))
    return torch.gather(x, 1, view.expand(*idx.shape, *x.shape[2:]))


# ---------------------------------------------------------------------- config plumbing
def to_plain(cfg: Any) -> Any:
    """Recursively turn Mapping/Sequence configs (incl. OmegaConf containers) into dict/list."""
    if isinstance(cfg, Mapping):
        return {str(k): to_plain(v) for k, v in cfg.items()}
    if isinstance(cfg, Sequence) and not isinstance(cfg, (str, bytes)):
        return [to_plain(v) for v in cfg]
    return cfg


def dataclass_from_dict(cls: type, values: Mapping[str, Any], what: str) -> Any:
    """Build dataclass ``cls`` from ``values``; unknown keys raise naming the valid ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{what}: unknown option(s) {unknown}; valid: {sorted(names)}")
    return cls(**values)
