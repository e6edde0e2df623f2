"""An ensemble of independently trained world models that share one latent space.

Members are separate predictor trainings (other seeds, other data) on the same frozen encoder,
so a frame has one latent for all of them: the ensemble encodes with the first member, rolls the
same actions through every member (mapping latents between the members' standardisations when
their training data differed), and returns the mean prediction and the members' disagreement. Unlike the heads of one predictor (trained
together on the same batches), independent members disagree where the data did not pin the
dynamics down, which is what the world-consistency energy (``ensemble_disagreement``) needs.

    python scripts/plan.py task=arm_push world_model=ensemble:pretrained:arm_push+runs/seed1/world_model.pt
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..protocols import Rollout
from .world_model import WorldModel

ENSEMBLE_PREFIX = "ensemble:"


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(torch.equal(a.cpu(), b.cpu()))


def _close(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.cpu(), b.cpu(), rtol=1e-5, atol=1e-6))


class EnsembleWorldModel:
    """K world models with one encoder and latent space; the planner protocol of one model.

    ``rollout`` returns latents [M,H,N,D] (member mean), proprio [M,H,P] (mean) | None and
    ``disagreement`` [M,H]: the variance across members, averaged over tokens and channels.
    """

    def __init__(self, members: Sequence[WorldModel], names: Sequence[str] | None = None):
        members = list(members)
        names = list(names) if names is not None else [f"member {i}" for i in range(len(members))]
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 world models, got {len(members)}")
        first = members[0]
        enc0 = first.encoder.state_dict()
        for m, name in zip(members[1:], names[1:]):
            problems = [what for what, ok in (
                ("frameskip", m.frameskip == first.frameskip), ("pool_k", m.pool_k == first.pool_k),
                ("action_dim", m.action_dim == first.action_dim), ("proprio_dim", m.proprio_dim == first.proprio_dim),
                ("action bounds", _close(m.action_low, first.action_low) and _close(m.action_high, first.action_high)),
                ("latent standardisation (one has it, one not)", (m.latent_mean is None) == (first.latent_mean is None)),
                ("env_id", m.meta.get("env_id") == first.meta.get("env_id")),
            ) if not ok]
            enc = m.encoder.state_dict()
            if enc.keys() != enc0.keys() or not all(_same(enc[k], enc0[k]) for k in enc0):
                problems.append("encoder weights")
            if problems:
                raise ValueError(f"ensemble: {name} differs from {names[0]} in {', '.join(problems)}; members must "
                                 "share the encoder and latent space (train them on the same encoder and data stats)")
        self.members, self.names = members, names
        self.frameskip, self.pool_k = first.frameskip, first.pool_k
        self.action_dim, self.proprio_dim = first.action_dim, first.proprio_dim
        self.action_low, self.action_high = first.action_low, first.action_high
        self.image_size = first.image_size
        self.meta: dict[str, Any] = {**first.meta, "ensemble": names}

    def num_params(self) -> int:
        return sum(m.num_params() for m in self.members)

    def encode(self, frames: Tensor, chunk_size: int | None = 256) -> Tensor:
        """uint8 [B,T,H,W,3] -> latents [B,T,N,D] (the members share the encoder)."""
        return self.members[0].encode(frames, chunk_size)

    def _to_member(self, k: int, z: Tensor) -> Tensor:
        """Latents [...,N,D] in member 0's standardisation -> member k's (identity without stats)."""
        m0, mk = self.members[0], self.members[k]
        if k == 0 or mk.latent_mean is None:
            return z
        return (z * m0.latent_std + m0.latent_mean - mk.latent_mean) / mk.latent_std

    def _from_member(self, k: int, z: Tensor) -> Tensor:
        m0, mk = self.members[0], self.members[k]
        if k == 0 or mk.latent_mean is None:
            return z
        return (z * mk.latent_std + mk.latent_mean - m0.latent_mean) / m0.latent_std

    def _combine(self, outs: list[Rollout]) -> Rollout:
        stack = torch.stack([self._from_member(k, o.latents.float()) for k, o in enumerate(outs)])  # [K,M,H,N,D]
        mean = stack.mean(0)
        dis = (stack - mean).pow(2).mean(dim=(0, 3, 4))
        prop = None if outs[0].proprio is None else torch.stack([o.proprio.float() for o in outs]).mean(0)
        return Rollout(mean, prop, dis)

    def rollout(self, ctx_latents: Tensor, ctx_proprio: Tensor | None, actions: Tensor,
                ctx_actions: Tensor | None = None) -> Rollout:
        """Each member's rollout of actions [M,H,A] from context [B,Tc,N,D] -> their mean and spread."""
        return self._combine([m.rollout(self._to_member(k, ctx_latents), ctx_proprio, actions, ctx_actions)
                              for k, m in enumerate(self.members)])

    def predict_next(self, latents: Tensor, proprio: Tensor | None, actions: Tensor) -> Rollout:
        """Teacher-forced one-step predictions [M,T,N,D] (member mean) and their spread [M,T]."""
        return self._combine([m.predict_next(self._to_member(k, latents), proprio, actions)
                              for k, m in enumerate(self.members)])

    def rollout_bytes_per_row(self, horizon: int, ctx_len: int = 1) -> int:
        """Members run one after another; their outputs are kept until combined."""
        return sum(m.rollout_bytes_per_row(horizon, ctx_len) for m in self.members)

    def rollout_bytes_fixed(self, horizon: int, ctx_len: int = 1) -> int:
        return max(m.rollout_bytes_fixed(horizon, ctx_len) for m in self.members)

    def gradient_bytes_per_row(self, horizon: int, ctx_len: int = 1) -> int | None:
        """Every member's graph is kept until the backward pass (None if a member has no estimate)."""
        parts = [m.gradient_bytes_per_row(horizon, ctx_len) for m in self.members]
        return None if None in parts else sum(parts)

    def gradient_bytes_fixed(self, horizon: int, ctx_len: int = 1) -> int | None:
        parts = [m.gradient_bytes_fixed(horizon, ctx_len) for m in self.members]
        return None if None in parts else sum(parts)
