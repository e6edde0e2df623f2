"""3D RoPE: relative-position property per axis, and time-only positions."""
from __future__ import annotations

import pytest
import torch

from wmplan.worldmodel.rope import apply_rope, apply_rope_tables, rope_chunk, rope_cos_sin, rope_tables

HEAD_DIM = 32  # chunk 10 per axis, 2 unrotated channels


def rotate(x: torch.Tensor, pos: list[float]) -> torch.Tensor:
    """x [dh] at one position (t, h, w) -> rotated [dh]."""
    cos, sin = rope_cos_sin(torch.tensor([[pos]], dtype=torch.float32), x.shape[-1])  # [1, 1, r]
    return apply_rope(x.view(1, 1, 1, -1), cos, sin).view(-1)


def score(q: torch.Tensor, k: torch.Tensor, pq: list[float], pk: list[float]) -> float:
    return torch.dot(rotate(q, pq), rotate(k, pk)).item()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_score_depends_only_on_position_difference(axis: int) -> None:
    g = torch.Generator().manual_seed(axis)
    q, k = torch.randn(HEAD_DIM, generator=g), torch.randn(HEAD_DIM, generator=g)
    base_q, base_k = [1.0, 2.0, 3.0], [4.0, 0.0, 5.0]
    ref = score(q, k, base_q, base_k)
    for shift in (1.0, 3.0, 7.0, -2.0):
        pq, pk = list(base_q), list(base_k)
        pq[axis] += shift
        pk[axis] += shift
        assert score(q, k, pq, pk) == pytest.approx(ref, rel=1e-4, abs=1e-4)
    # ...and it does depend on the difference along that axis (so the check above can fail).
    pq = list(base_q)
    pq[axis] += 1.0
    assert abs(score(q, k, pq, base_k) - ref) > 1e-3


def test_joint_shift_on_all_axes_and_batched_tables() -> None:
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 5, HEAD_DIM, generator=g), torch.randn(2, 4, 5, HEAD_DIM, generator=g)
    pos = torch.randint(0, 8, (2, 5, 3), generator=g).float()
    shift = torch.tensor([3.0, -2.0, 5.0])

    def logits(p: torch.Tensor) -> torch.Tensor:
        cos, sin = rope_cos_sin(p, HEAD_DIM)
        return apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2)

    torch.testing.assert_close(logits(pos), logits(pos + shift), rtol=1e-4, atol=1e-4)


def test_time_only_position_rotates_only_time_chunk() -> None:
    d = rope_chunk(HEAD_DIM)
    x = torch.randn(HEAD_DIM, generator=torch.Generator().manual_seed(1))
    y = rotate(x, [5.0, 0.0, 0.0])
    assert not torch.allclose(y[:d], x[:d])  # time chunk rotated
    torch.testing.assert_close(y[d:], x[d:])  # h, w chunks and leftover channels untouched
    torch.testing.assert_close(rotate(x, [0.0, 0.0, 0.0]), x)  # origin is the identity
    assert y.norm().item() == pytest.approx(x.norm().item(), rel=1e-5)  # rotations keep norms


def test_spatial_position_rotates_only_its_chunk() -> None:
    d = rope_chunk(HEAD_DIM)
    x = torch.randn(HEAD_DIM, generator=torch.Generator().manual_seed(2))
    y = rotate(x, [0.0, 3.0, 0.0])
    torch.testing.assert_close(y[:d], x[:d])
    assert not torch.allclose(y[d : 2 * d], x[d : 2 * d])
    torch.testing.assert_close(y[2 * d :], x[2 * d :])


def test_too_small_head_dim_raises() -> None:
    with pytest.raises(ValueError, match="head_dim"):
        rope_chunk(4)


@pytest.mark.parametrize("head_dim", [16, 24, 32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_full_width_tables_match_apply_rope_exactly(head_dim: int, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(head_dim)
    pos = torch.randint(0, 9, (2, 5, 3), generator=g)
    x = torch.randn(2, 3, 5, head_dim, generator=g).to(dtype)
    cos, sin = rope_cos_sin(pos, head_dim)
    cf, sf = rope_tables(pos, head_dim)
    assert cf.shape == sf.shape == (2, 5, head_dim)
    assert torch.equal(apply_rope_tables(x, cf[:, None], sf[:, None]), apply_rope(x, cos, sin))
    # any strides (the predictor rotates transposed weight views)
    xt = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert torch.equal(apply_rope_tables(xt, cf[:, None], sf[:, None]), apply_rope(x, cos, sin))
