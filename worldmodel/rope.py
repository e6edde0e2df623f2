"""3D rotary position embeddings (time, height, width) for attention heads.

The head dimension is split into three equal even-sized chunks (t, h, w); leftover
dimensions are not rotated. Within a chunk the frequencies follow the "repeat"
layout (``cat(f, f)`` with rotate-half), the convention of the V-JEPA 2 release.
Tokens that only have a time position (action / proprio tokens) pass h = w = 0,
which leaves those chunks unrotated.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
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


def rope_tables(pos: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """Full-width tables for :func:`apply_rope_tables`.

    Args:
        pos: ``[..., L, 3]`` (t, h, w) positions.
        head_dim: per-head channel count.
    Returns:
        cos, sin: ``[..., L, head_dim]`` float32 - the :func:`rope_cos_sin` tables with the
        rotate-half sign folded into ``sin`` and the unrotated tail padded (cos 1, sin 0).
    """
    cos, sin = rope_cos_sin(pos, head_dim, base)
    r = cos.shape[-1]
    half = r // 6
    # -1 on the first half of each axis chunk, +1 on the second (built on device: no H2D copy)
    sign = (torch.arange(r, device=pos.device) // half % 2).to(sin.dtype) * 2 - 1
    return F.pad(cos, (0, head_dim - r), value=1.0), F.pad(sin * sign, (0, head_dim - r))


def apply_rope_tables(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x [..., head_dim]`` (any strides) with :func:`rope_tables` broadcast against it.

    Bit-identical to :func:`apply_rope` (``x*cos + rotate_half(x)*sin``; the negation moved
    into ``sin`` is exact), with tables that may carry their own batch shape. The KV-cached
    rollout uses it to fold RoPE into per-token projection weights. Same dtype as ``x``.
    """
    r = 3 * rope_chunk(x.shape[-1])
    half = r // 6
    out = x * cos.to(x.dtype)  # cos is 1 on the tail: exact copy there
    sw = x.new_empty(*x.shape[:-1], 3, 2, half)  # each axis chunk with its halves swapped
    xs = x[..., :r].unflatten(-1, (3, 2, half))
    sw[..., 0, :] = xs[..., 1, :]
    sw[..., 1, :] = xs[..., 0, :]
    out[..., :r] += sw.flatten(-3) * sin[..., :r].to(x.dtype)
    return out
