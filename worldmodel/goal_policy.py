"""Goal-conditioned policy in a world model's latent space (goal-conditioned behaviour cloning).

``GoalPolicy`` maps the current latents, the goal latents and (when the world model uses it)
the proprio to one predictor step of actions, ``frameskip`` env actions concatenated, the
world model's action unit. It is trained on the world model's own latents of recorded
episodes with hindsight goals (the frame ``j`` predictor steps later is the goal of the
actions taken now; ``scripts/train_policy.py``), so it knows what the data's policies did and
nothing about the model's errors. Planners use it two ways (``planners/base.py``):

- ``plan.py prior=<file>``: the policy's rollout through the world model seeds the search's
  initial mean (TD-MPC2 mixes its policy into MPPI the same way);
- ``plan.py planner=policy prior=<file>``: that rollout is the plan, no search (the
  goal-conditioned BC baseline the field compares world-model planning with).

It is a :class:`~wmplan.protocols.ActionPrior` (``propose``), which is all a planner sees of it.

File (``save``; loads with ``weights_only=True``): kind ``wmplan-goal-policy``, version,
config (plain dict), state_dict, world_model (the latent space it was trained in: tokens,
latent dim, action dim, proprio dim, the world model file's sha256) and meta (seed, data,
metrics). ``check_fits`` refuses a world model of another latent space, naming the field.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..checks import ConfigError, check_number
from ..protocols import Goal, PlanContext
from .registry import encoder_fingerprint
from .utils import CheckpointError, atomic_save, config_from_dict, load_checkpoint

POLICY_KIND = "wmplan-goal-policy"


@dataclass
class GoalPolicyConfig:
    """Shapes of the latent space (taken from the world model) and the MLP's size."""

    tokens: int  # N tokens per frame
    latent_dim: int  # D
    action_dim: int  # A = frameskip * A_env (one predictor step)
    proprio_dim: int | None  # P, None when the world model has no proprio
    hidden: int = 512
    depth: int = 3  # hidden layers
    dropout: float = 0.0

    def validate(self, where: str) -> None:
        for f in ("tokens", "latent_dim", "action_dim", "hidden", "depth"):
            check_number(getattr(self, f), f, where, low=1, integer=True)
        check_number(self.proprio_dim, "proprio_dim", where, low=1, integer=True, allow_none=True)
        check_number(self.dropout, "dropout", where, low=0, high=1, high_open=True)


def space_of(world_model: Any) -> dict[str, Any]:
    """The latent-space facts a policy must share with the world model it plans with (a single
    wmplan ``WorldModel``: the policy uses its action and proprio statistics)."""
    if not hasattr(world_model, "predictor") or not hasattr(world_model, "action_std"):
        raise ConfigError(f"a goal policy needs a single wmplan WorldModel (its latent space and statistics), "
                          f"got {type(world_model).__name__}")
    pc = world_model.predictor.config
    return {"tokens": int(pc.tokens_per_frame), "latent_dim": int(pc.latent_dim),
            "action_dim": int(world_model.action_dim), "proprio_dim": world_model.proprio_dim}


_SPACE_STATS = ("latent_mean", "latent_std", "action_mean", "action_std", "proprio_mean", "proprio_std")


def latent_space_fingerprint(world_model: Any) -> str:
    """sha256 of what a policy's inputs and outputs mean: the encoder (type, config, weights), the
    pooling and the world model's latent/action/proprio statistics. Predictors may differ."""
    h = hashlib.sha256(f"{encoder_fingerprint(world_model.encoder)} pool_k={world_model.pool_k}".encode())
    for name in _SPACE_STATS:
        t = getattr(world_model, name, None)
        h.update(name.encode() + (b" none" if t is None else t.detach().cpu().float().contiguous().numpy().tobytes()))
    return h.hexdigest()


class GoalPolicy(nn.Module):
    """MLP ``(z [B,N,D], z_goal [B,N,D], proprio [B,P] normalised | None) -> [B,A]`` normalised
    actions (the world model's ``normalize_actions`` units)."""

    def __init__(self, config: GoalPolicyConfig, meta: dict[str, Any] | None = None):
        super().__init__()
        config.validate("goal policy")
        self.config = config
        self.meta = dict(meta or {})
        c = config
        width = 2 * c.tokens * c.latent_dim + (c.proprio_dim or 0)
        layers: list[nn.Module] = []
        for _ in range(c.depth):
            layers += [nn.Linear(width, c.hidden), nn.GELU()] + ([nn.Dropout(c.dropout)] if c.dropout else [])
            width = c.hidden
        layers.append(nn.Linear(width, c.action_dim))
        self.net = nn.Sequential(*layers)
        self._fits: int | None = None  # id() of the world model check_fits last passed

    def forward(self, latents: Tensor, goal: Tensor, proprio: Tensor | None = None) -> Tensor:
        x = [latents.flatten(1), goal.flatten(1)]
        if self.config.proprio_dim is not None:
            if proprio is None:
                raise ValueError(f"GoalPolicy: this policy takes proprio (P={self.config.proprio_dim}); got None")
            x.append(proprio)
        return self.net(torch.cat(x, 1))

    @torch.no_grad()
    def act(self, world_model: Any, latents: Tensor, goal: Tensor, proprio: Tensor | None) -> Tensor:
        """Env-unit actions ``[B,A]`` inside the world model's action box, for latents ``[B,N,D]``,
        goal latents ``[B,N,D]`` and env-unit proprio ``[B,P] | None``."""
        p = world_model.normalize_proprio(proprio) if self.config.proprio_dim is not None else None
        a = self(latents.float(), goal.float(), None if p is None else p.float())
        a = a * world_model.action_std + world_model.action_mean
        return a.clamp(world_model.action_low, world_model.action_high)

    def check_fits(self, world_model: Any, where: str) -> None:
        """Raise ConfigError when ``world_model``'s latent space is not the one this policy was trained in."""
        have = space_of(world_model)
        fix = "train the policy on this world model's latents (scripts/train_policy.py), or plan without it (prior=null)"
        for field, value in have.items():
            mine = getattr(self.config, field)
            if mine != value:
                raise ConfigError(f"{where}: the goal policy has {field}={mine}, the world model {value}; {fix}")
        space = self.meta.get("latent_space")
        if space is not None and space != latent_space_fingerprint(world_model):
            raise ConfigError(f"{where}: the goal policy was trained in another latent space (its world model "
                              f"{self.meta.get('world_model')!r} has another encoder or other statistics); {fix}")
        self._fits = id(world_model)  # propose() need not hash the encoder again

    def propose(self, world_model: Any, context: PlanContext, goal: Goal, horizon: int) -> Tensor:
        """:class:`~wmplan.protocols.ActionPrior`: :func:`policy_rollout` ``[B,H,A]``, after checking
        (once per world model) that the world model's latent space is this policy's."""
        if self._fits != id(world_model):
            self.check_fits(world_model, "goal policy")
        return policy_rollout(world_model, self, context, goal, horizon)

    def save(self, path: str | Path) -> None:
        """Atomic write; refuses (nothing written) a non-finite weight."""
        atomic_save({"kind": POLICY_KIND, "config": asdict(self.config),
                     "state_dict": {k: v.detach().cpu().float() for k, v in self.state_dict().items()},
                     "meta": self.meta}, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "GoalPolicy":
        ckpt = load_checkpoint(path, kind=POLICY_KIND)
        for f in ("config", "state_dict"):
            if f not in ckpt:
                raise CheckpointError(f"checkpoint {path}: missing field {f!r}")
        try:
            policy = cls(config_from_dict(GoalPolicyConfig, dict(ckpt["config"])), ckpt.get("meta"))
            policy.load_state_dict(ckpt["state_dict"])
        except (ValueError, TypeError, RuntimeError, ConfigError) as e:
            raise CheckpointError(f"checkpoint {path}: field 'config'/'state_dict' does not build a policy: {e}") from e
        return policy.to(device).eval().requires_grad_(False)


@torch.no_grad()
def policy_rollout(world_model: Any, policy: GoalPolicy, context: PlanContext, goal: Goal, horizon: int) -> Tensor:
    """The policy's plan ``[B,H,A]``: act, predict the next latents with the world model, act again.

    Step ``h`` re-rolls the ``h`` actions so far from the context (the predictor attends to the
    whole predicted history); that is ``H-1`` rollouts of ``B`` rows, small beside a search's ``B*S``.
    """
    latents = context.latents[:, -1]
    proprio = None if context.proprio is None else context.proprio[:, -1]
    actions: list[Tensor] = []
    for h in range(horizon):
        actions.append(policy.act(world_model, latents, goal.latents, proprio))
        if h + 1 < horizon:
            kwargs = {} if context.actions is None else {"ctx_actions": context.actions}
            r = world_model.rollout(context.latents, context.proprio, torch.stack(actions, 1), **kwargs)
            latents = r.latents[:, -1].float()
            proprio = None if r.proprio is None else r.proprio[:, -1].float()
    return torch.stack(actions, 1)
