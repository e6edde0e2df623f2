"""Parameter-free pooling of frozen encoder patch tokens into compact latents.

Parameter-free on purpose: the pooled latents are the predictor's targets and the
planner's goal representation, so nothing trainable may sit between the frozen
encoder and them (a learned projection could collapse to a constant and make every
loss and goal energy trivially zero).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def pooled_grid(grid: tuple[int, int], k: int | None) -> tuple[int, int]:
    """Token grid after :func:`pool_latents`: ``(k, k)``, or ``grid`` when ``k`` is None."""
    return (int(grid[0]), int(grid[1])) if k is None else (int(k), int(k))


def pool_latents(tokens: Tensor, grid: tuple[int, int], k: int | None) -> Tensor:
    """Adaptive-average-pool the patch grid to ``k x k`` then layer-norm over channels.

    Args:
        tokens: ``[B, T, N, D]`` patch tokens in row-major grid order, ``N = h * w``.
        grid: ``(h, w)`` of the patch grid.
        k: output grid side; ``None`` keeps all ``N`` tokens (only the layer norm applies).
    Returns:
        ``[B, T, k*k, D]`` (or ``[B, T, N, D]`` for ``k=None``), same dtype as ``tokens``.
    """
    if tokens.dim() != 4:
        raise ValueError(f"pool_latents expects tokens [B,T,N,D], got shape {tuple(tokens.shape)}")
    B, T, N, D = tokens.shape
    h, w = int(grid[0]), int(grid[1])
    if h * w != N:
        raise ValueError(f"pool_latents: grid {h}x{w} does not match N={N} tokens")
    x = tokens
    if k is not None:
        if not 1 <= k <= min(h, w):
            raise ValueError(f"pool_latents: k={k} must be in [1, {min(h, w)}] for grid {h}x{w}")
        if k != h or k != w:
            x = x.reshape(B * T, h, w, D).permute(0, 3, 1, 2)  # [BT, D, h, w]
            x = F.adaptive_avg_pool2d(x, (k, k))
            x = x.permute(0, 2, 3, 1).reshape(B, T, k * k, D)
    # LN without affine: fixes each token's scale so targets cannot shrink towards zero.
    return F.layer_norm(x, (D,))
