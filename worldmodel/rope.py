"""3D rotary position embeddings (time, height, width) for attention heads.

The head dimension is split into three equal even-sized chunks (t, h, w); leftover
dimensions are not rotated. Within a chunk the frequencies follow the "repeat"
layout (``cat(f, f)`` with rotate-half), the convention of the V-JEPA 2 release.
Tokens that only have a time position (action / proprio tokens) pass h = w = 0,
which leaves those chunks unrotated.
"""
from __future__ import annotations

import torch
from torch import Tensor


def rope_chunk(head_dim: int) -> int:
    """Size of each axis chunk: the largest even number <= head_dim / 3."""
    d = 2 * ((head_dim // 3) // 2)
    if d == 0:
        raise ValueError(f"head_dim={head_dim} too small for 3D RoPE (needs >= 6)")
    return d


def rope_cos_sin(pos: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """Rotation tables for positions.

    Args:
        pos: ``[..., L, 3]`` (t, h, w) positions, int or float.
        head_dim: per-head channel count.
    Returns:
        cos, sin: ``[..., L, 3 * chunk]`` float32 tables (see :func:`apply_rope`).
    """
    d = rope_chunk(head_dim)
    inv = base ** (-torch.arange(0, d, 2, device=pos.device, dtype=torch.float32) / d)  # [d/2]
    ang = pos.to(torch.float32).unsqueeze(-1) * inv  # [..., L, 3, d/2]
    ang = torch.cat([ang, ang], dim=-1)  # "repeat" layout -> [..., L, 3, d]
    return ang.cos().flatten(-2), ang.sin().flatten(-2)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate queries or keys.

    Args:
        x: ``[B, heads, L, head_dim]``.
        cos, sin: ``[B or 1, L, 3 * chunk]`` from :func:`rope_cos_sin` (broadcast over heads).
    Returns:
        ``[B, heads, L, head_dim]``, same dtype as ``x``.
    """
    r = cos.shape[-1]
    d = r // 3
    xr, xp = x[..., :r], x[..., r:]
    cos, sin = cos.unsqueeze(1).to(x.dtype), sin.unsqueeze(1).to(x.dtype)
    xs = xr.unflatten(-1, (3, 2, d // 2))  # per axis: first half, second half
    rot = torch.stack([-xs[..., 1, :], xs[..., 0, :]], dim=-2).flatten(-3)  # rotate-half per axis
    return torch.cat([xr * cos + rot * sin, xp], dim=-1)
