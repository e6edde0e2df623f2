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
- ``ActionPrior.propose(world_model, context, goal, H)`` -> actions [B,H,A] (env units).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["Rollout", "PlanContext", "Goal", "GoalRows", "row_chunks", "PlanResult", "EncoderLike", "WorldModelLike", "TeacherForcedModel",
           "ActionPrior"]


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
        """Each env's goal over its ``samples`` rows: [B,...] -> [B*samples,...].

        Rows b*S .. (b+1)*S-1 belong to env b, matching the rollout layout. One env (B = 1)
        is a stride-0 ``expand`` view (no copy); otherwise the rows are a :class:`GoalRows`,
        materialised (``repeat_interleave``, [B*S,N,D]) only when ``latents``/``proprio`` are
        read, so a planner that scores rows in chunks (``Goal.rows``) never holds the copy.
        """
        if samples == 1:
            return self
        if self.latents.shape[0] == 1:
            return Goal(_expand_rows(self.latents, samples), None if self.proprio is None else _expand_rows(self.proprio, samples))
        return GoalRows(self, samples)

    def rows(self, r0: int, r1: int) -> "Goal":
        """Rows ``r0:r1`` of these goal rows (views)."""
        return Goal(self.latents[r0:r1], None if self.proprio is None else self.proprio[r0:r1])


def _expand_rows(x: Tensor, rows: int) -> Tensor:
    """[1,...] -> [rows,...] stride-0 view (read-only use: energies never write their goal)."""
    return x.expand(rows, *x.shape[1:])


class GoalRows(Goal):
    """Goal rows [B*S,...] of a per-env goal [B,...], built lazily (see ``Goal.broadcast``).

    ``latents``/``proprio`` give the full rows (computed once, then kept, exactly the
    ``repeat_interleave`` copy); ``rows(r0, r1)`` builds only that range: a stride-0 view when
    it lies inside one env, else a copy of its own rows.
    """

    def __init__(self, per_env: Goal, samples: int):
        self.per_env, self.samples = per_env, int(samples)
        self._full: Goal | None = None

    def _materialised(self) -> Goal:
        if self._full is None:
            rep = lambda x: None if x is None else x.repeat_interleave(self.samples, dim=0)  # noqa: E731
            self._full = Goal(rep(self.per_env.latents), rep(self.per_env.proprio))
        return self._full

    @property  # type: ignore[override]
    def latents(self) -> Tensor:
        return self._materialised().latents

    @property  # type: ignore[override]
    def proprio(self) -> Tensor | None:
        return self._materialised().proprio

    def __repr__(self) -> str:
        return f"GoalRows(per_env latents {tuple(self.per_env.latents.shape)}, samples={self.samples})"

    def rows(self, r0: int, r1: int) -> Goal:
        if self._full is not None:
            return self._full.rows(r0, r1)
        s = self.samples
        b0, b1 = r0 // s, -(-r1 // s)
        env = Goal(self.per_env.latents[b0:b1], None if self.per_env.proprio is None else self.per_env.proprio[b0:b1])
        if b1 - b0 == 1:
            return Goal(_expand_rows(env.latents, r1 - r0), None if env.proprio is None else _expand_rows(env.proprio, r1 - r0))
        return GoalRows(env, s)._materialised().rows(r0 - b0 * s, r1 - b0 * s)


def row_chunks(B: int, S: int, rows: int) -> list[tuple[int, int, int, int]]:
    """Split ``B`` contexts x ``S`` samples (rows ``b*S + s``) into chunks of about ``rows`` rows,
    each either whole contexts or part of one: ``(b0, b1, r0, r1)`` = contexts ``b0:b1``, rows ``r0:r1``.
    Shared by the planners' memory budget and the predictor's CPU chunking."""
    rows = max(1, int(rows))
    if S >= rows:
        n = -(-S // rows)
        step = -(-S // n)
        return [(b, b + 1, b * S + s0, b * S + min(s0 + step, S)) for b in range(B) for s0 in range(0, S, step)]
    per = rows // S
    return [(b0, min(b0 + per, B), b0 * S, min(b0 + per, B) * S) for b0 in range(0, B, per)]


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


@runtime_checkable
class ActionPrior(Protocol):
    """A proposal a planner's search starts from (``worldmodel.goal_policy.GoalPolicy`` satisfies it).

    ``propose(world_model, context, goal, horizon)`` -> actions [B,H,A] in env units, for the
    B envs of ``context``; the planner projects them onto its constraint set.
    """

    def propose(self, world_model: Any, context: PlanContext, goal: Goal, horizon: int) -> Tensor:
        ...
