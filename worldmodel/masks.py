"""Multi-block spatio-temporal masks for V-JEPA pretraining.

A block is a rectangle on the spatial (h, w) token grid that spans every time step (so the
target cannot be copied from the same place in a neighbouring frame). The union of the
blocks is the target set; its complement is the context.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MaskSpec:
    """num_blocks rectangles, each covering ``scale`` (min, max) of the h*w grid with
    aspect ratio (h/w) drawn from ``aspect_ratio`` (min, max)."""

    num_blocks: int
    scale: tuple[float, float]
    aspect_ratio: tuple[float, float] = (0.75, 1.5)

    def __post_init__(self) -> None:
        if self.num_blocks < 1:
            raise ValueError(f"MaskSpec.num_blocks must be >= 1, got {self.num_blocks}")
        lo, hi = self.scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"MaskSpec.scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        alo, ahi = self.aspect_ratio
        if not 0.0 < alo <= ahi:
            raise ValueError(f"MaskSpec.aspect_ratio must satisfy 0 < min <= max, got {self.aspect_ratio}")


SHORT_RANGE = MaskSpec(num_blocks=8, scale=(0.15, 0.15))
LONG_RANGE = MaskSpec(num_blocks=2, scale=(0.7, 0.7))
DEFAULT_SPECS: tuple[MaskSpec, ...] = (SHORT_RANGE, LONG_RANGE)


def _uniform(lo: float, hi: float, g: torch.Generator | None) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def _block_size(spec: MaskSpec, grid_h: int, grid_w: int, g: torch.Generator | None) -> tuple[int, int]:
    """Height and width (in tokens) of one block, clamped to the grid."""
    area = _uniform(*spec.scale, g) * grid_h * grid_w
    ar = math.exp(_uniform(math.log(spec.aspect_ratio[0]), math.log(spec.aspect_ratio[1]), g))
    h = min(max(round(math.sqrt(area * ar)), 1), grid_h)
    w = min(max(round(math.sqrt(area / ar)), 1), grid_w)
    return h, w


def sample_spatial_mask(
    batch: int, grid_h: int, grid_w: int, spec: MaskSpec, generator: torch.Generator | None = None,
    max_tries: int = 20,
) -> Tensor:
    """Boolean ``[B, grid_h, grid_w]`` (True = masked/target); never masks the whole grid.

    As in V-JEPA, block sizes are drawn once per batch (shared by all rows) and positions per row.
    """
    for _ in range(max_tries):
        sizes = [_block_size(spec, grid_h, grid_w, generator) for _ in range(spec.num_blocks)]
        mask = torch.zeros(batch, grid_h, grid_w, dtype=torch.bool)
        for bh, bw in sizes:
            top = torch.randint(0, grid_h - bh + 1, (batch,), generator=generator)
            left = torch.randint(0, grid_w - bw + 1, (batch,), generator=generator)
            rows = torch.arange(grid_h).view(1, -1, 1)
            cols = torch.arange(grid_w).view(1, 1, -1)
            mask |= (
                (rows >= top.view(-1, 1, 1)) & (rows < (top + bh).view(-1, 1, 1))
                & (cols >= left.view(-1, 1, 1)) & (cols < (left + bw).view(-1, 1, 1))
            )
        if not mask.flatten(1).all(dim=1).any():
            return mask
    raise ValueError(f"{spec} masks the whole {grid_h}x{grid_w} grid; lower its scale or num_blocks")


def _take(sets: list[Tensor], k: int, g: torch.Generator | None) -> Tensor:
    """Random size-k subset of each index set, kept sorted: ``[B, k]``."""
    out = []
    for s in sets:
        sel = torch.randperm(s.numel(), generator=g)[:k]
        out.append(s[sel].sort().values)
    return torch.stack(out)


def sample_masks(
    batch: int, grid_t: int, grid_h: int, grid_w: int, spec: MaskSpec,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample context/target token indices for a batch of clips.

    Returns:
        context_idx ``[B, Kc]``, target_idx ``[B, Kt]``: LongTensors (CPU) of flattened
        (t, h, w) token indices, sorted, disjoint, Kc >= grid_t. Rows are cut to the batch
        minimum so they stack; the cut drops whole spatial locations (random ones rather than
        the last ones, avoiding a bias toward the top of the image), so every kept location
        keeps all its time steps.
    """
    mask = sample_spatial_mask(batch, grid_h, grid_w, spec, generator).flatten(1)  # [B, S]
    tgt_sets = [m.nonzero().squeeze(1) for m in mask]
    ctx_sets = [(~m).nonzero().squeeze(1) for m in mask]
    kt = min(s.numel() for s in tgt_sets)
    kc = min(s.numel() for s in ctx_sets)
    tgt_sp, ctx_sp = _take(tgt_sets, kt, generator), _take(ctx_sets, kc, generator)  # spatial ids
    # Expand every spatial id over time: token = t * S + s keeps flattened (t, h, w) order.
    offs = torch.arange(grid_t).view(1, -1, 1) * (grid_h * grid_w)
    ctx = (offs + ctx_sp.unsqueeze(1)).flatten(1)
    tgt = (offs + tgt_sp.unsqueeze(1)).flatten(1)
    return ctx, tgt
