"""Action constraint sets: box bounds and an L1 ball around the box centre.

All projections are branch-free tensor ops (no host syncs), so they can sit inside the
optimisation loop and under ``torch.compile``. This module imports nothing else of wmplan
(``planners/base.py`` imports it).
"""
from __future__ import annotations

import torch
from torch import Tensor


def box_centre(low: Tensor, high: Tensor) -> Tensor:
    """[A] centre of the box; 0 on unbounded dims."""
    c = (low + high) / 2
    return torch.where(torch.isfinite(c), c, torch.zeros_like(c))


def project_l1_ball(v: Tensor, radius: float) -> Tensor:
    """Euclidean projection of each row of v [...,K] onto {x : ||x||_1 <= radius}.

    Sort-based algorithm: find the soft-threshold theta so that sum(max(|v|-theta,0)) = r;
    rows already inside the ball are returned unchanged (selected with ``where``).
    """
    a = v.abs()
    srt, _ = torch.sort(a, dim=-1, descending=True)
    csum = srt.cumsum(-1) - radius
    k = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    # rho = largest k with srt_k > (csum_k)/k; cond is monotone so counting Trues finds it.
    cond = srt * k > csum
    rho = cond.sum(-1, keepdim=True).clamp(min=1)
    theta = torch.gather(csum, -1, rho - 1) / rho.to(v.dtype)
    proj = torch.sign(v) * (a - theta).clamp(min=0)
    inside = a.sum(-1, keepdim=True) <= radius
    return torch.where(inside, v, proj)


def project_actions(
    actions: Tensor, low: Tensor, high: Tensor, constraint: str = "box", l1_radius: float = 1.0, l1_group: int = 0
) -> Tensor:
    """Project actions [...,A] onto the constraint set; the result is always inside the box.

    ``constraint="l1"``: each chunk of ``l1_group`` dims (0 = the whole vector, e.g. one
    env action per chunk when it equals the env action dim under frameskip) is projected
    onto the L1 ball of ``l1_radius`` around the box centre, then clamped to the box.
    Clamping towards a centre inside the box never increases the L1 norm, so the result
    lies in both sets.
    """
    if constraint == "l1":
        c = box_centre(low, high)
        d = actions - c
        g = l1_group if l1_group > 0 else d.shape[-1]
        if d.shape[-1] % g != 0:
            raise ValueError(f"l1_group={g} does not divide action dim {d.shape[-1]}")
        d = project_l1_ball(d.reshape(*d.shape[:-1], d.shape[-1] // g, g), l1_radius).reshape(d.shape)
        actions = c + d
    elif constraint != "box":
        raise ValueError(f"unknown constraint {constraint!r}; use 'box' or 'l1'")
    return torch.maximum(torch.minimum(actions, high), low)
