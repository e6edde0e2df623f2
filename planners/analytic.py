"""An analytic world model: linear latent dynamics z_{t+1} = A z_t + B a_t (one token/frame).

Useful for tests, examples and smoke runs without a trained model: it implements the
planner protocol (``encode``/``rollout``/bounds), the optional teacher-forced
``predict_next`` used by collocation, and an optional ensemble of B matrices that reports
``disagreement``. Optimal actions are known in closed form for quadratic goals.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..protocols import Rollout


class LinearLatentWorldModel:
    """z_{t+1} = A z_t + B a_t with z [D], a [A]; latents are [.., N=1, D].

    ``encoder`` maps uint8 frames [B,T,H,W,3] to [B,T,D] (default: per-channel mean
    intensity, D=3). ``heads``: optional list of extra B matrices; with K heads the rollout
    averages their predictions and reports ``disagreement`` [M,H] = mean over D of the
    across-head variance (0 when all heads agree). Differentiable in the actions.
    """

    def __init__(
        self,
        A: Tensor,
        B: Tensor,
        action_low: Tensor,
        action_high: Tensor,
        encoder: Callable[[Tensor], Tensor] | None = None,
        heads: Sequence[Tensor] | None = None,
        frameskip: int = 1,
    ):
        self.A = A.float()
        self.B = B.float()
        self.action_low = torch.as_tensor(action_low, dtype=torch.float32, device=self.A.device)
        self.action_high = torch.as_tensor(action_high, dtype=torch.float32, device=self.A.device)
        self.action_dim = int(self.B.shape[1])
        self.latent_dim = int(self.A.shape[0])
        self.frameskip = frameskip
        self.proprio_dim = None
        self.heads = [h.float() for h in heads] if heads else None
        self._encoder = encoder
        self.rollout_calls = 0  # number of rollout() calls, for tests and benchmarks

    def encode(self, frames: Tensor) -> Tensor:
        """uint8 [B,T,H,W,3] -> [B,T,1,D]."""
        if self._encoder is not None:
            z = self._encoder(frames)
        else:
            z = frames.float().mean(dim=(2, 3)) / 255.0
        return z.to(self.A.device, torch.float32).unsqueeze(2)

    def _step(self, z: Tensor, a: Tensor, bmat: Tensor) -> Tensor:
        """z [M,D], a [M,A] -> [M,D]."""
        return z @ self.A.T + a @ bmat.T

    def rollout(
        self, ctx_latents: Tensor, ctx_proprio: Tensor | None, actions: Tensor, ctx_actions: Tensor | None = None
    ) -> Rollout:
        """ctx [B,Tc,1,D] (last frame used: the model is Markov, so ``ctx_actions`` [B,Tc-1,A]
        is accepted and ignored), actions [M,H,A] with M = B*S -> Rollout [M,H,1,D]."""
        self.rollout_calls += 1
        b, m = ctx_latents.shape[0], actions.shape[0]
        if m % b != 0:
            raise ValueError(f"{m} action rows are not a multiple of {b} contexts")
        z0 = ctx_latents[:, -1, 0].repeat_interleave(m // b, dim=0)  # [M,D]
        mats = self.heads if self.heads else [self.B]
        per_head = []
        for bmat in mats:
            z, out = z0, []
            for t in range(actions.shape[1]):
                z = self._step(z, actions[:, t], bmat)
                out.append(z)
            per_head.append(torch.stack(out, 1))  # [M,H,D]
        stack = torch.stack(per_head, 0)  # [K,M,H,D]
        lat = stack.mean(0)
        dis = stack.var(0, unbiased=False).mean(-1) if self.heads else None
        return Rollout(lat.unsqueeze(2), None, dis)

    def predict_next(self, latents: Tensor, proprio: Tensor | None, actions: Tensor) -> Rollout:
        """Teacher-forced one-step predictions: latents [M,T,1,D], actions [M,T,A] -> [M,T,1,D]."""
        mats = self.heads if self.heads else [self.B]
        z = latents[:, :, 0]
        preds = torch.stack([z @ self.A.T + actions @ bm.T for bm in mats], 0).mean(0)
        return Rollout(preds.unsqueeze(2), None, None)

    def optimal_last_step_actions(self, z0: Tensor, goal: Tensor, horizon: int) -> Tensor:
        """Least-norm actions [H,A] reaching ``goal`` [D] exactly at step H from ``z0`` [D]
        (ignores bounds; single-head model). z_H = A^H z0 + sum_t A^(H-1-t) B a_t."""
        d = self.latent_dim
        blocks, p = [], torch.eye(d, device=self.A.device)
        for _ in range(horizon):
            blocks.insert(0, p @ self.B)
            p = self.A @ p
        ctrl = torch.cat(blocks, 1)  # [D, H*A]
        target = goal - torch.linalg.matrix_power(self.A, horizon) @ z0
        return (torch.linalg.pinv(ctrl) @ target).reshape(horizon, self.action_dim)
