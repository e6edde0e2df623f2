"""V-JEPA pretraining: context encoder + EMA target encoder + narrow masked-latent predictor.

The context encoder sees only the visible (context) tokens of a clip; the predictor gets
those features plus learnable mask tokens at the target positions (both at their true 3D
RoPE positions) and regresses the layer-normed target-encoder features there with an L1
loss. The target encoder is an exponential moving average of the context encoder.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rope import rope_cos_sin
from .vit import Block, ViTConfig, VisionTransformer, gather_tokens, init_weights, token_positions


class JEPAPredictor(nn.Module):
    """Narrow transformer predicting target-token features from context-token features.

    embed_dim D (encoder width) -> pred_dim Dp inside -> D out.
    """

    def __init__(self, embed_dim: int, pred_dim: int | None = None, depth: int = 2, num_heads: int = 4,
                 mlp_ratio: float = 4.0):
        super().__init__()
        pred_dim = pred_dim or max(embed_dim // 2, 6 * num_heads)
        if pred_dim % num_heads:
            raise ValueError(f"pred_dim={pred_dim} not divisible by num_heads={num_heads}")
        self.head_dim = pred_dim // num_heads
        self.embed = nn.Linear(embed_dim, pred_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, pred_dim))
        self.blocks = nn.ModuleList(Block(pred_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(pred_dim, eps=1e-6)
        self.proj = nn.Linear(pred_dim, embed_dim)
        init_weights(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, ctx: Tensor, context_idx: Tensor, target_idx: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """Predict target features.

        Args:
            ctx: context-encoder outputs ``[B, Kc, D]``.
            context_idx: ``[B, Kc]``, target_idx: ``[B, Kt]`` token indices (flattened t,h,w).
            grid: (grid_t, grid_h, grid_w) of the clip.
        Returns:
            ``[B, Kt, D]`` predictions at the target positions.
        """
        B, Kc, _ = ctx.shape
        Kt = target_idx.shape[1]
        x = torch.cat([self.embed(ctx), self.mask_token.expand(B, Kt, -1)], dim=1)  # [B, Kc+Kt, Dp]
        pos = token_positions(*grid, device=ctx.device)[torch.cat([context_idx, target_idx], dim=1)]
        cos, sin = rope_cos_sin(pos, self.head_dim)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        return self.proj(self.norm(x[:, Kc:]))


class VJEPA(nn.Module):
    """Context encoder, EMA target encoder (no grad) and predictor."""

    def __init__(self, cfg: ViTConfig, pred_dim: int | None = None, pred_depth: int = 2, pred_heads: int = 4):
        super().__init__()
        self.encoder = VisionTransformer(cfg)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.predictor = JEPAPredictor(cfg.embed_dim, pred_dim, pred_depth, pred_heads, cfg.mlp_ratio)

    @torch.no_grad()
    def targets(self, x: Tensor) -> Tensor:
        """Layer-normed (no affine) target-encoder features of ALL tokens: ``[B, L, D]``.

        Computed on the full clip (not just the targets) so target tokens get full context.
        """
        h = self.target_encoder(x)
        return F.layer_norm(h, h.shape[-1:])

    def loss(self, x: Tensor, context_idx: Tensor | Sequence[Tensor], target_idx: Tensor | Sequence[Tensor]) -> Tensor:
        """Masked latent prediction L1 loss (scalar).

        Args:
            x: normalised clip ``[B, 3, T, H, W]``.
            context_idx / target_idx: ``[B, Kc]`` / ``[B, Kt]``, or equal-length sequences of them
                (one pair per mask spec, sharing one target-encoder pass); the loss is their mean.
        """
        if isinstance(context_idx, Tensor):
            context_idx, target_idx = [context_idx], [target_idx]
        if len(context_idx) != len(target_idx):
            raise ValueError("context_idx and target_idx must have the same number of masks")
        grid = self.encoder.grid_for(x)
        h = self.targets(x)
        losses = []
        for ci, ti in zip(context_idx, target_idx):
            ci, ti = ci.to(x.device), ti.to(x.device)
            z = self.encoder(x, keep=ci)
            pred = self.predictor(z, ci, ti, grid)
            losses.append((pred.float() - gather_tokens(h, ti).float()).abs().mean())  # fp32 under bf16 autocast
        return torch.stack(losses).mean()


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place: target <- momentum * target + (1 - momentum) * online (parameters only)."""
    if momentum >= 1.0:
        return  # exact no-op (avoids 0 * inf surprises)
    tp = list(target.parameters())
    op = [p.detach() for p in online.parameters()]
    if len(tp) != len(op):
        raise ValueError("ema_update: target and online modules have different parameter lists")
    torch._foreach_mul_(tp, momentum)
    torch._foreach_add_(tp, op, alpha=1.0 - momentum)


def ema_momentum(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """Linear schedule from ``start`` (step 0) to ``end`` (last step)."""
    frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return start + (end - start) * frac


def warmup_cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int, final_ratio: float = 0.01) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps`` then cosine decay to ``final_ratio * base_lr``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    frac = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return base_lr * (final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac)))


@torch.no_grad()
def latent_std(z: Tensor) -> float:
    """Collapse diagnostic: mean over dims of the per-dim std across rows of layer-normed ``z [M, D]``.

    About 1 for diverse features, -> 0 when all rows collapse to the same vector.
    """
    z = F.layer_norm(z.float(), z.shape[-1:])
    return z.std(dim=0).mean().item()


@torch.no_grad()
def effective_rank(z: Tensor, eps: float = 1e-12) -> float:
    """Effective rank (RankMe): exp of the entropy of the normalised singular values of ``z [M, D]``.

    Between 1 (rank-one / collapsed) and min(M, D).
    """
    s = torch.linalg.svdvals(z.float())
    p = s / (s.sum() + eps) + eps
    return torch.exp(-(p * p.log()).sum()).item()
