"""3D rotary embeddings in the layout of the released V-JEPA 2 / V-JEPA 2-AC weights.

The released weights were trained with a RoPE that differs from ``worldmodel/rope.py``
(which wmplan's own models use and which stays as it is):

- the head dimension ``dh`` is split into three chunks of ``d = 2 * ((dh // 3) // 2)``
  channels for the time, height and width positions; the ``dh - 3d`` channels left over
  are not rotated;
- inside a chunk the ``d / 2`` frequencies ``1 / 10000 ** (i / (d / 2))`` are laid out
  twice in a row (``cat(f, f)``), so channel ``j`` uses frequency ``j mod d/2``;
- channels are rotated in adjacent pairs ``(2k, 2k + 1)``:
  ``out[2k] = x[2k] cos_2k - x[2k+1] sin_2k``, ``out[2k+1] = x[2k+1] cos_2k+1 + x[2k] sin_2k+1``.
  (The two channels of a pair use different frequencies; the released weights depend on it.)

Tokens with only a time position (action and state tokens) pass ``h = w = 0``, which
leaves those chunks unrotated (cos 1, sin 0 exactly).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["official_chunk", "official_rope_tables", "apply_official_rope"]


def official_chunk(head_dim: int) -> int:
    """Channels per axis chunk: ``2 * ((head_dim // 3) // 2)``; raises if that is 0."""
    d = 2 * ((head_dim // 3) // 2)
    if d == 0:
        raise ValueError(f"head_dim={head_dim} too small for 3D RoPE (needs >= 6)")
    return d


def official_rope_tables(pos: Tensor, head_dim: int) -> tuple[Tensor, Tensor]:
    """Full-width rotation tables for positions.

    Args:
        pos: ``[..., L, 3]`` (t, h, w) positions, int or float.
        head_dim: channels per attention head.
    Returns:
        cos, sin: ``[..., L, head_dim]`` float32; ``sin`` carries the pair sign (-1 on even
        channels, +1 on odd ones); the unrotated tail has cos 1, sin 0.
    """
    d = official_chunk(head_dim)
    omega = torch.arange(d // 2, dtype=torch.float32, device=pos.device) / (d / 2.0)
    omega = 1.0 / 10000**omega  # [d/2], computed as the release does (same fp32 rounding)
    ang = pos.to(torch.float32).unsqueeze(-1) * omega  # [..., L, 3, d/2]
    ang = torch.cat([ang, ang], dim=-1)  # "repeat" layout: frequency j mod d/2 -> [..., L, 3, d]
    sign = torch.ones(d, device=pos.device)
    sign[0::2] = -1.0
    cos, sin = ang.cos().flatten(-2), (ang.sin() * sign).flatten(-2)  # [..., L, 3d]
    tail = head_dim - 3 * d
    if tail:
        cos = torch.cat([cos, cos.new_ones(*cos.shape[:-1], tail)], dim=-1)
        sin = torch.cat([sin, sin.new_zeros(*sin.shape[:-1], tail)], dim=-1)
    return cos, sin


def apply_official_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate queries or keys ``x [..., L, head_dim]`` with tables broadcast against it.

    ``x * cos + swap(x) * sin`` where ``swap`` exchanges the channels of each adjacent pair;
    with the sign folded into ``sin`` (see :func:`official_rope_tables`) this is the release's
    ``x * cos + stack(-x[2k+1], x[2k]) * sin``. Same dtype as ``x``.
    """
    r = 3 * official_chunk(x.shape[-1])
    swapped = x[..., :r].unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    if r < x.shape[-1]:  # the unrotated tail (sin 0 there): any values do
        swapped = torch.cat([swapped, x[..., r:]], dim=-1)
    return x * cos.to(x.dtype) + swapped * sin.to(x.dtype)
