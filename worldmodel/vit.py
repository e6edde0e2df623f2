"""V-JEPA-style video Vision Transformer: tubelet patch embedding, pre-norm blocks, 3D RoPE.

Module names follow the V-JEPA 2 release (``patch_embed.proj``, ``blocks.i.attn.qkv``,
``blocks.i.mlp.fc1``, ``norm``) so official weights map onto it by stripping key prefixes.
There is no cls token and no learned position table: positions enter through 3D RoPE and,
optionally (``abs_pos_embed``), a fixed 2D sin-cos table of the (h, w) patch location.

Why the option: RoPE is relative, so a RoPE-only encoder is close to translation-equivariant
and the spatial MEAN of its tokens (the k=1 pooled latent) barely says where a small object
is. A fixed absolute table helps (PointMaze k=1 linear-probe R^2: random init 0.57 -> 0.90,
after pretraining 0.67 -> 0.73). It adds no parameters; state_dicts have the same keys, but
a model must run with the setting it was trained with (it is saved in the config).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import ENCODER_KIND, load_encoder, register_encoder, save_encoder  # noqa: F401 (re-exported)
from .rope import apply_rope, rope_chunk, rope_cos_sin
from .utils import config_from_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ViTConfig:
    """Hyper-parameters of :class:`VisionTransformer` (also stored in checkpoints)."""

    img_size: int = 64
    patch_size: int = 8
    tubelet: int = 2
    in_chans: int = 3
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    abs_pos_embed: bool = False  # add a fixed 2D sin-cos (h, w) table to the patch tokens

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size={self.img_size} not divisible by patch_size={self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} not divisible by num_heads={self.num_heads}")
        rope_chunk(self.embed_dim // self.num_heads)  # raises if heads are too narrow for 3D RoPE
        if self.abs_pos_embed and self.embed_dim % 4:
            raise ValueError(f"abs_pos_embed needs embed_dim divisible by 4, got {self.embed_dim}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ViTConfig":
        """Build from a plain dict; unknown keys are an error naming them."""
        return config_from_dict(cls, d)


def token_positions(grid_t: int, grid_h: int, grid_w: int, device: torch.device | str = "cpu") -> Tensor:
    """(t, h, w) integer positions of a token grid in flattened (t, h, w) order: ``[L, 3]``."""
    t, h, w = torch.meshgrid(
        torch.arange(grid_t, device=device),
        torch.arange(grid_h, device=device),
        torch.arange(grid_w, device=device),
        indexing="ij",
    )
    return torch.stack([t, h, w], dim=-1).reshape(-1, 3)


def sincos_pos_embed(pos_hw: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """Fixed 2D sin-cos embedding: pos_hw ``[..., 2]`` (h, w) -> ``[..., dim]`` (h half, w half)."""
    inv = base ** (-torch.arange(dim // 4, device=pos_hw.device, dtype=torch.float32) / (dim // 4))
    ang = pos_hw.to(torch.float32).unsqueeze(-1) * inv  # [..., 2, dim/4]
    return torch.cat([ang.sin(), ang.cos()], dim=-1).flatten(-2)  # [..., 2 * dim/2]


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """Select tokens per batch row: x ``[B, L, C]``, idx ``[B, K]`` -> ``[B, K, C]``."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection and 3D RoPE on q and k."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """x ``[B, L, D]``; cos/sin ``[B or 1, L, r]``; attn_mask broadcastable to ``[B, h, L, L]``."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # [B, h, L, dh]
        return self.proj(o.transpose(1, 2).reshape(B, L, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)); x + mlp(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, attn_mask)
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module) -> None:
    """Truncated-normal linear/conv weights, zero biases, unit LayerNorm (ViT convention)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv3d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class PatchEmbed3D(nn.Module):
    """Conv3d tubelet embedding: ``[B, C, T, H, W] -> [B, L, D]`` with L = T/t * H/p * W/p."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        k = (cfg.tubelet, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_chans, cfg.embed_dim, kernel_size=k, stride=k)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


@register_encoder("vit")
class VisionTransformer(nn.Module):
    """Video ViT encoder (V-JEPA style), registered encoder type ``"vit"``. See module docstring."""

    config_class = ViTConfig

    def __init__(self, cfg: ViTConfig | None = None):
        super().__init__()
        self.cfg = cfg or ViTConfig()
        c = self.cfg
        self.patch_embed = PatchEmbed3D(c)
        self.blocks = nn.ModuleList(Block(c.embed_dim, c.num_heads, c.mlp_ratio) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.embed_dim, eps=1e-6)
        # Non-persistent: pixel statistics are fixed, keep them out of the state_dict.
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1), persistent=False)
        init_weights(self)

    @property
    def config(self) -> ViTConfig:
        """The config (``cfg``), under the name every registered component uses."""
        return self.cfg

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    @property
    def image_size(self) -> int:
        """Frames are ``image_size x image_size``."""
        return self.cfg.img_size

    @property
    def grid(self) -> tuple[int, int]:
        """Spatial token grid (H/p, W/p) for ``img_size`` frames."""
        g = self.cfg.img_size // self.cfg.patch_size
        return g, g

    @property
    def num_patches(self) -> int:
        """Tokens per frame N = (H/p) * (W/p)."""
        gh, gw = self.grid
        return gh * gw

    def grid_for(self, x: Tensor) -> tuple[int, int, int]:
        """Token grid (T/tubelet, H/p, W/p) of a normalised input ``[B, 3, T, H, W]``."""
        if x.dim() != 5:
            raise ValueError(f"expected input [B,3,T,H,W], got shape {tuple(x.shape)}")
        _, _, T, H, W = x.shape
        p, t = self.cfg.patch_size, self.cfg.tubelet
        if T % t or H % p or W % p:
            raise ValueError(f"input T,H,W={T},{H},{W} must be divisible by tubelet={t}, patch={p}")
        return T // t, H // p, W // p

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """Encode a normalised clip.

        Args:
            x: float ``[B, 3, T, H, W]`` (see :meth:`frames_to_input`).
            keep: optional LongTensor ``[B, K]`` of token indices (flattened t,h,w order); only
                those tokens enter the blocks, at their true RoPE positions (context encoder).
        Returns:
            ``[B, L, D]`` (or ``[B, K, D]`` with ``keep``).
        """
        grid = self.grid_for(x)
        tok = self.patch_embed(x)  # [B, L, D]
        pos = token_positions(*grid, device=x.device).unsqueeze(0)  # [1, L, 3]
        if keep is not None:
            tok = gather_tokens(tok, keep)
            pos = pos[0][keep]  # [B, K, 3]
        if self.cfg.abs_pos_embed:
            tok = tok + sincos_pos_embed(pos[..., 1:], self.cfg.embed_dim).to(tok.dtype)
        cos, sin = rope_cos_sin(pos, self.cfg.embed_dim // self.cfg.num_heads)
        for blk in self.blocks:
            tok = blk(tok, cos, sin)
        return self.norm(tok)

    def frames_to_input(self, frames: Tensor) -> Tensor:
        """uint8 ``[B, T, H, W, 3]`` -> float ``[B, 3, T, H, W]`` on the model's device,
        scaled to [0, 1] then normalised with ImageNet mean/std."""
        if frames.dim() != 5 or frames.shape[-1] != 3:
            raise ValueError(f"expected frames uint8 [B,T,H,W,3], got shape {tuple(frames.shape)}")
        x = frames.to(self.pixel_mean.device).permute(0, 4, 1, 2, 3).float().div_(255.0)
        return (x - self.pixel_mean) / self.pixel_std

    def encode(self, frames: Tensor, chunk_size: int | None = None) -> Tensor:
        """Per-frame encoding, each frame repeated into a full tubelet (as V-JEPA 2-AC).

        Args:
            frames: uint8 ``[B, T, H, W, 3]``.
            chunk_size: optional max frames per forward pass (bounds memory; same result).
        Returns:
            ``[B, T, N, D]`` with N = (H/p) * (W/p).
        """
        B, T = frames.shape[:2]
        flat = frames.reshape(B * T, 1, *frames.shape[2:])  # every frame is its own clip
        step = chunk_size or B * T
        outs = []
        for i in range(0, B * T, step):
            x = self.frames_to_input(flat[i : i + step]).repeat(1, 1, self.cfg.tubelet, 1, 1)
            outs.append(self(x))  # [b, N, D] (grid_t = 1)
        z = torch.cat(outs, 0)
        return z.view(B, T, z.shape[1], z.shape[2])

