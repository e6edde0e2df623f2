"""The released V-JEPA 2 video ViT, reimplemented on wmplan's modules (registered encoder ``vjepa2``).

Same parameter names and shapes as the release after its ``module.``/``backbone.`` key
prefixes are stripped: ``patch_embed.proj`` (Conv3d, tubelet x patch x patch),
``blocks.{i}.(norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2)``, ``norm``. Pre-norm
blocks, LayerNorm eps 1e-6 with affine, exact GELU, no cls token, no position table: 3D RoPE
in the release's layout (:mod:`~wmplan.worldmodel.rope_official`) on queries and keys.

The blocks (:class:`OfficialBlock`) are shared with the V-JEPA 2-AC predictor
(``worldmodel/vjepa2_predictor.py``), whose blocks have the same names and maths.
Frames are handled as by wmplan's ``vit`` encoder (ImageNet mean/std, per-frame encoding
with each frame repeated into one tubelet), which this class inherits.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register_encoder
from .rope_official import apply_official_rope, official_chunk, official_rope_tables
from .utils import config_from_dict
from .vit import IMAGENET_MEAN, IMAGENET_STD, Mlp, PatchEmbed3D, VisionTransformer, token_positions

__all__ = ["OfficialViTConfig", "OfficialViT", "OfficialAttention", "OfficialBlock"]


@dataclass
class OfficialViTConfig:
    """Sizes of :class:`OfficialViT` (read from a checkpoint's tensor shapes, except
    ``num_heads`` and ``img_size``, which the tensors do not determine)."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int  # fc1 width, int(D * mlp_ratio) in the release (ViT-g: 6144)
    img_size: int = 256
    patch_size: int = 16
    tubelet: int = 2
    in_chans: int = 3

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(f"OfficialViTConfig: img_size={self.img_size} not divisible by patch_size={self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"OfficialViTConfig: embed_dim={self.embed_dim} not divisible by num_heads={self.num_heads}")
        official_chunk(self.embed_dim // self.num_heads)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OfficialViTConfig":
        """Build from a plain dict; unknown keys are an error naming them."""
        return config_from_dict(cls, d)


class OfficialAttention(nn.Module):
    """Multi-head attention, fused ``qkv`` (with bias), RoPE (release layout) on q and k."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def qkv_rotated(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x ``[B, L, D]``, cos/sin broadcastable to ``[B, heads, L, dh]`` -> q, k, v ``[B, heads, L, dh]``."""
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return apply_official_rope(q, cos, sin), apply_official_rope(k, cos, sin), v

    def merge(self, o: Tensor) -> Tensor:
        """Attention output ``[B, heads, L, dh]`` -> projected ``[B, L, D]``."""
        B, _, L, _ = o.shape
        return self.proj(o.transpose(1, 2).reshape(B, L, self.num_heads * self.head_dim))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """x ``[B, L, D]``; attn_mask bool ``[L, L]`` (True = may attend) or None."""
        q, k, v = self.qkv_rotated(x, cos, sin)
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask))


class OfficialBlock(nn.Module):
    """Pre-norm block ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``; LayerNorm eps 1e-6."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = OfficialAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, attn_mask)
        return x + self.mlp(self.norm2(x))


@register_encoder("vjepa2")
class OfficialViT(VisionTransformer):
    """The V-JEPA 2 encoder: ``forward`` gives clip features, ``encode`` per-frame features.

    A frozen wmplan encoder (``encode``, ``grid``, ``embed_dim``, ``image_size``, ``config``):
    ``encode_latents``, latent caches and ``WorldModel`` accept it like the ``vit`` encoder.
    Only ``forward`` differs from the inherited ``vit`` encoder (its RoPE layout, blocks and
    the absence of token selection); ``frames_to_input`` and ``encode`` are inherited.
    """

    config_class = OfficialViTConfig

    def __init__(self, cfg: OfficialViTConfig):
        nn.Module.__init__(self)  # not VisionTransformer.__init__: that builds wmplan-RoPE blocks
        self.cfg = cfg
        self.patch_embed = PatchEmbed3D(cfg)  # reads tubelet, patch_size, in_chans, embed_dim
        self.blocks = nn.ModuleList(OfficialBlock(cfg.embed_dim, cfg.num_heads, cfg.mlp_hidden) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1), persistent=False)

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """ImageNet-normalised clip ``[B, 3, T, H, W]`` -> features ``[B, T/t * H/p * W/p, D]``
        (tokens in (t, h, w) order, after the final ``norm``), as the release's encoder."""
        if keep is not None:
            raise ValueError("OfficialViT.forward: token selection (keep=) is not supported")
        grid = self.grid_for(x)
        tok = self.patch_embed(x)
        cos, sin = official_rope_tables(token_positions(*grid, device=x.device), self.cfg.embed_dim // self.cfg.num_heads)
        for blk in self.blocks:
            tok = blk(tok, cos, sin)
        return self.norm(tok)
