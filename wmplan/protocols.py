"""The types both sides of wmplan share: world models and encoders on one side, planners
and the evaluator on the other. Both import this module; neither imports the other.

Shapes (B envs, S samples per env, M = B*S rollout rows, H horizon in predictor steps,
A planner action dim = frameskip * env action dim, Tc context frames, N tokens per frame,
D latent width, P proprio width):

- frames: uint8 [B,T,H,W,3]; ``EncoderLike.encode`` -> latents [B,T,N,D]
- ``PlanContext.latents`` [B,Tc,N,D], ``.proprio`` [B,Tc,P] | None, ``.actions`` [B,Tc-1,A] | None
- ``Goal.latents`` [B,N,D], ``Goal.proprio`` [B,P] | None
- ``WorldModelLike.rollout(ctx [B,Tc,N,D], ctx_proprio [B,Tc,P]|None, actions [M,H,A])``
  -> ``Rollout(latents [M,H,N,D], proprio [M,H,P]|None, disagreement [M,H]|None)``;
  with Tc > 1 also ``ctx_actions=[B,Tc-1,A]`` (keyword, only passed when the context has it).
  When M = B*S the world model broadcasts env b's context to rows b*S .. (b+1)*S-1.
- ``PlanResult.actions`` [B,H,A], ``PlanResult.energy`` [B].
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["Rollout", "PlanContext", "Goal", "PlanResult", "EncoderLike", "WorldModelLike", "TeacherForcedModel"]


@dataclass
class Rollout:
    """Predicted trajectory: latents [M,H,N,D] (ensemble mean), proprio [M,H,P] | None,
    disagreement [M,H] | None (variance across predictor heads; None with one head)."""

    latents: Tensor
    proprio: Tensor | None = None
    disagreement: Tensor | None = None


@dataclass
class PlanContext:
    """Current observation(s): latents [B,Tc,N,D], proprio [B,Tc,P] | None, and for Tc > 1
    the planner-unit actions taken between the context frames, actions [B,Tc-1,A] | None
    (passed to ``rollout`` as ``ctx_actions=`` only when given)."""

    latents: Tensor
    proprio: Tensor | None = None
    actions: Tensor | None = None

    @property
    def batch(self) -> int:
        return self.latents.shape[0]


@dataclass
class Goal:
    """Goal observation: latents [B,N,D], proprio [B,P] | None (or already [M,...] rows)."""

    latents: Tensor
    proprio: Tensor | None = None

    def broadcast(self, samples: int) -> "Goal":
        """Repeat each env's goal over its ``samples`` rows: [B,...] -> [B*samples,...].

        Rows b*S .. (b+1)*S-1 belong to env b, matching the rollout layout. The copy is
        [B*S,N,D], small next to the [B*S,H,N,D] rollout it is compared with.
        """
        if samples == 1:
            return self
        rep = lambda x: None if x is None else x.repeat_interleave(samples, dim=0)  # noqa: E731
        return Goal(rep(self.latents), rep(self.proprio))


@dataclass
class PlanResult:
    """actions [B,H,A] (within bounds), energy [B] of those actions, stats of tensors."""

    actions: Tensor
    energy: Tensor
    stats: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class EncoderLike(Protocol):
    """A frozen frame encoder: uint8 frames [B,T,H,W,3] -> latents [B,T,N,D]."""

    def encode(self, frames: Tensor) -> Tensor:
        ...


@runtime_checkable
class WorldModelLike(Protocol):
    """What a planner needs from a world model (``wmplan.worldmodel.WorldModel`` satisfies it).

    ``action_low``/``action_high`` are [A] tensors on the model's device; A is the planner's
    action dim (frameskip * env action dim). ``proprio_dim`` (optional attribute, None when the
    model ignores proprio) and ``frameskip`` (optional) are read with ``getattr``.
    """

    action_dim: int
    action_low: Tensor
    action_high: Tensor

    def encode(self, frames: Tensor) -> Tensor:
        """uint8 [B,T,H,W,3] -> latents [B,T,N,D]."""
        ...

    def rollout(self, ctx_latents: Tensor, ctx_proprio: Tensor | None, actions: Tensor) -> Any:
        """[B,Tc,N,D], [B,Tc,P]|None, [M,H,A] (M = B*S) -> Rollout-like with [M,H,...]."""
        ...


@runtime_checkable
class TeacherForcedModel(Protocol):
    """Optional capability used by collocation (``GradientPlanner(collocation=True)``).

    ``predict_next(latents [M,T,N,D], proprio [M,T,P]|None, actions [M,T,A])`` returns a
    Rollout-like whose ``latents[:, t]`` predicts z_{t+1} from z_{<=t}, a_{<=t} in one
    block-causal (teacher-forced) pass. Models without it are driven by batched one-step
    ``rollout`` calls instead (a Markov approximation, see planners/gradient.py).
    """

    def predict_next(self, latents: Tensor, proprio: Tensor | None, actions: Tensor) -> Any:
        ...
