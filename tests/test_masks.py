"""Multi-block spatio-temporal masks: shapes, disjointness, ratios, temporal extent, seeding."""
from __future__ import annotations

import pytest
import torch

from wmplan.worldmodel.masks import LONG_RANGE, SHORT_RANGE, MaskSpec, sample_masks

GT, GH, GW = 2, 8, 8
L, S = GT * GH * GW, GH * GW


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("spec", [SHORT_RANGE, LONG_RANGE, MaskSpec(3, (0.05, 0.3), (0.5, 2.0))])
def test_shapes_disjoint_sorted(spec: MaskSpec) -> None:
    ctx, tgt = sample_masks(16, GT, GH, GW, spec, gen())
    assert ctx.dtype == tgt.dtype == torch.long
    assert ctx.shape[0] == tgt.shape[0] == 16
    assert ctx.shape[1] >= GT and tgt.shape[1] >= GT  # never empty
    assert ctx.shape[1] % GT == 0 and tgt.shape[1] % GT == 0
    assert ctx.shape[1] + tgt.shape[1] <= L
    for c, t in zip(ctx, tgt):
        assert len(set(c.tolist()) & set(t.tolist())) == 0
        assert c.unique().numel() == c.numel() and t.unique().numel() == t.numel()
        assert torch.all(c[1:] > c[:-1]) and torch.all(t[1:] > t[:-1])
        assert c.min() >= 0 and t.max() < L


def test_single_row_is_a_partition() -> None:
    """Without batch truncation, context and target cover every token exactly once."""
    for seed in range(10):
        ctx, tgt = sample_masks(1, GT, GH, GW, SHORT_RANGE, gen(seed))
        assert sorted(ctx[0].tolist() + tgt[0].tolist()) == list(range(L))


def test_full_temporal_extent() -> None:
    """A spatial location is in the target (or context) at every time step or at none."""
    ctx, tgt = sample_masks(8, 3, GH, GW, SHORT_RANGE, gen(3))
    for idx in (ctx, tgt):
        for row in idx:
            per_t = [set((row[(row // S) == t] % S).tolist()) for t in range(3)]
            assert per_t[0] and per_t[0] == per_t[1] == per_t[2]
    for c, t in zip(ctx, tgt):  # a masked location never leaks into the context at another t
        assert not (set((c % S).tolist()) & set((t % S).tolist()))


def mean_target_fraction(spec: MaskSpec, n: int = 20) -> float:
    g = gen(7)
    fr = [sample_masks(1, GT, GH, GW, spec, g)[1].shape[1] / L for _ in range(n)]
    return sum(fr) / n


def test_target_fraction_grows_with_scale() -> None:
    fracs = [mean_target_fraction(MaskSpec(2, (s, s))) for s in (0.1, 0.3, 0.6)]
    assert fracs[0] < fracs[1] < fracs[2]
    assert 0.1 <= fracs[0] <= 0.22  # two blocks of ~10% each, some overlap
    long, short = mean_target_fraction(LONG_RANGE), mean_target_fraction(SHORT_RANGE)
    assert long > short > 0.3 and long < 1.0


def test_seeded_and_varied() -> None:
    a = sample_masks(4, GT, GH, GW, SHORT_RANGE, gen(1))
    b = sample_masks(4, GT, GH, GW, SHORT_RANGE, gen(1))
    c = sample_masks(4, GT, GH, GW, SHORT_RANGE, gen(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (a[1].shape == c[1].shape and torch.equal(a[1], c[1]))
    assert not all(torch.equal(a[1][0], r) for r in a[1][1:])  # rows differ within a batch


def test_invalid_specs() -> None:
    with pytest.raises(ValueError, match="scale"):
        MaskSpec(1, (0.0, 0.5))
    with pytest.raises(ValueError, match="num_blocks"):
        MaskSpec(0, (0.1, 0.1))
    with pytest.raises(ValueError, match="whole"):
        sample_masks(2, GT, GH, GW, MaskSpec(1, (1.0, 1.0), (1.0, 1.0)), gen())
