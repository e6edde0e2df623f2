"""Training a :class:`~wmplan.worldmodel.goal_policy.GoalPolicy` on a latent cache, with hindsight goals.

A sample is (episode e, env step t, offset j): input the latents of frame t, the latents of
frame ``t + j * frameskip`` (the goal) and the proprio of frame t; target the ``frameskip`` env
actions taken from t, concatenated (one predictor step, normalised with the world model's
action statistics). ``j`` is uniform in ``1 .. min(max_offset, steps left // frameskip)``, so
the policy sees goals as near and as far as a plan's horizon reaches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .latent_cache import LatentCache
from .latents import standardise


@dataclass
class HindsightBatch:
    latents: Tensor  # [B,N,D] standardised
    goal: Tensor  # [B,N,D]
    proprio: Tensor | None  # [B,P] normalised
    actions: Tensor  # [B,A] normalised

    def to(self, device: torch.device) -> "HindsightBatch":
        return HindsightBatch(self.latents.to(device), self.goal.to(device),
                              None if self.proprio is None else self.proprio.to(device), self.actions.to(device))


class HindsightSampler:
    """Draws :class:`HindsightBatch` es from the cached episodes at ``positions`` (indices into the cache).

    Args:
        cache: the latents of the world model's encoder (unstandardised, as cached).
        world_model: gives ``frameskip``, the latent statistics and the action/proprio normalisation.
        max_offset: the farthest goal, in predictor steps.
    """

    def __init__(self, cache: LatentCache, positions: list[int], world_model, max_offset: int):
        wm = world_model
        self.fs, self.max_offset = int(wm.frameskip), int(max_offset)
        self.z = standardise(cache.latents.float(), wm.latent_mean, wm.latent_std)  # [F,N,D]
        self.proprio = wm.normalize_proprio(cache.proprio.float()) if wm.proprio_dim is not None else None
        self.actions = cache.actions.float()
        self.action_mean, self.action_std = wm.action_mean.cpu(), wm.action_std.cpu()
        fo, ao = cache.frame_offsets, cache.action_offsets
        rows = []
        for e in positions:
            n = int(ao[e + 1] - ao[e])  # actions of episode e
            t = torch.arange(max(n - self.fs + 1, 0))  # starts with a whole predictor step of actions
            rows.append(torch.stack([t, torch.full_like(t, int(fo[e])), torch.full_like(t, int(ao[e])),
                                     torch.full_like(t, n)], 1))
        self.rows = torch.cat(rows) if rows else torch.zeros(0, 4, dtype=torch.long)  # [R, (t, f0, a0, n)]
        if len(self.rows) == 0:
            raise ValueError(f"no episode at the given positions has {self.fs} actions (one predictor step)")

    def __len__(self) -> int:
        return len(self.rows)

    def sample(self, batch_size: int, generator: torch.Generator) -> HindsightBatch:
        r = self.rows[torch.randint(len(self.rows), (batch_size,), generator=generator)]
        t, f0, a0, n = r.unbind(1)
        room = torch.clamp((n - t) // self.fs, max=self.max_offset)  # >= 1 by construction
        j = 1 + (torch.rand(batch_size, generator=generator) * room).long().clamp(max=room - 1)
        frame, goal = f0 + t, f0 + t + j * self.fs
        a = self.actions[(a0 + t)[:, None] + torch.arange(self.fs)].flatten(1)  # [B, fs*A_env]
        return HindsightBatch(self.z[frame], self.z[goal], None if self.proprio is None else self.proprio[frame],
                              (a - self.action_mean) / self.action_std)


def policy_loss(policy, batch: HindsightBatch) -> Tensor:
    """Mean squared error of the normalised actions (a scalar)."""
    return (policy(batch.latents, batch.goal, batch.proprio) - batch.actions).pow(2).mean()
