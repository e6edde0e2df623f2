"""The released V-JEPA 2-AC action-conditioned predictor, reimplemented, plus its planning rollout.

Parameter names follow the release (after stripping its ``module.`` key prefix):
``predictor_embed`` (D -> E), ``action_encoder`` (A -> E), ``state_encoder`` (S -> E),
``extrinsics_encoder`` (unused by the released model), ``predictor_blocks.{i}`` (the same
blocks as the encoder, :class:`~wmplan.worldmodel.vjepa2_encoder.OfficialBlock`),
``predictor_norm``, ``predictor_proj`` (E -> D).

Sequence: per step ``t`` one group ``[action_t, state_t, N frame tokens]`` (G = N + 2 tokens)
under a block-causal mask (a token of step ``t`` sees every token of steps ``<= t``); RoPE
positions ``(t, row, col)`` for frame tokens and ``(t, 0, 0)`` for the action and state
tokens (the release rotates them on the time chunk only: the same thing). The output is
absolute, ``predictor_proj(predictor_norm(frame tokens))``: block ``t`` predicts frame
``t + 1``. Actions and states enter raw (robot units for the released model).

:meth:`OfficialACPredictor.rollout` is the planning rollout of the release's notebooks
(predictions layer-normed and fed back, the state advanced by a given function), either
recomputing the whole sequence every step as the release does or with a KV cache: because
of the block-causal mask the cached keys/values of earlier steps are exactly what a full
recomputation would produce, so both agree to float rounding.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..protocols import Rollout
from .kv_cache import KV, KVCache, attend_cached
from .rope_official import official_chunk, official_rope_tables
from .utils import config_from_dict
from .vjepa2_encoder import OfficialBlock

__all__ = ["OfficialACConfig", "OfficialACPredictor", "StateFn"]

# (state [M, S], action [M, A]) -> next state [M, S]
StateFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class OfficialACConfig:
    """Sizes of :class:`OfficialACPredictor` (from tensor shapes, except ``num_heads`` and the grid)."""

    latent_dim: int  # D, encoder width
    embed_dim: int  # E, predictor width (1024 released)
    depth: int
    num_heads: int
    mlp_hidden: int
    action_dim: int  # 7 released
    state_dim: int  # 7 released
    grid: tuple[int, int] = (16, 16)  # frame token grid, img_size / patch_size
    extrinsics_dim: int | None = None  # width of extrinsics_encoder's input when the file has one
    use_extrinsics: bool = False  # the released model does not use it

    def __post_init__(self) -> None:
        self.grid = (int(self.grid[0]), int(self.grid[1]))
        if self.embed_dim % self.num_heads:
            raise ValueError(f"OfficialACConfig: embed_dim={self.embed_dim} not divisible by num_heads={self.num_heads}")
        official_chunk(self.embed_dim // self.num_heads)
        if self.use_extrinsics and self.extrinsics_dim is None:
            raise ValueError("OfficialACConfig: use_extrinsics needs extrinsics_dim")

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["grid"] = list(self.grid)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OfficialACConfig":
        """Build from a plain dict; unknown keys are an error naming them."""
        return config_from_dict(cls, d)


class OfficialACPredictor(nn.Module):
    """V-JEPA 2-AC predictor: ``forward(x [B,T*N,D], actions [B,T,A], states [B,T,S]) -> [B,T*N,D]``."""

    config_class = OfficialACConfig

    def __init__(self, config: OfficialACConfig):
        super().__init__()
        self.config = c = config
        E = c.embed_dim
        self.predictor_embed = nn.Linear(c.latent_dim, E)
        self.action_encoder = nn.Linear(c.action_dim, E)
        self.state_encoder = nn.Linear(c.state_dim, E)
        self.extrinsics_encoder = nn.Linear(c.extrinsics_dim, E) if c.extrinsics_dim is not None else None
        self.predictor_blocks = nn.ModuleList(OfficialBlock(E, c.num_heads, c.mlp_hidden) for _ in range(c.depth))
        self.predictor_norm = nn.LayerNorm(E, eps=1e-6)
        self.predictor_proj = nn.Linear(E, c.latent_dim)

    @property
    def cond_tokens(self) -> int:
        """Action/state (/extrinsics) tokens before the frame tokens of each step."""
        return 3 if self.config.use_extrinsics else 2

    @property
    def group(self) -> int:
        """Tokens per step G."""
        return self.cond_tokens + self.config.tokens_per_frame

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- pieces --------------------------------------------------------------------------
    def _positions(self, t0: int, T: int, device: torch.device) -> Tensor:
        """(t, h, w) of the tokens of steps ``t0 .. t0+T-1``: ``[T*G, 3]``."""
        gh, gw = self.config.grid
        rows = torch.arange(gh, device=device).repeat_interleave(gw)
        cols = torch.arange(gw, device=device).repeat(gh)
        hw = torch.cat([torch.zeros(self.cond_tokens, 2, dtype=torch.long, device=device),
                        torch.stack([rows, cols], dim=-1)])  # [G, 2]
        t = torch.arange(t0, t0 + T, device=device).repeat_interleave(self.group)
        return torch.cat([t[:, None], hw.repeat(T, 1)], dim=-1)

    def _mask(self, T: int, device: torch.device) -> Tensor:
        """Block-causal bool mask ``[T*G, T*G]`` (True = may attend)."""
        step = torch.arange(T, device=device).repeat_interleave(self.group)
        return step[:, None] >= step[None, :]

    def _group_tokens(self, frames: Tensor, actions: Tensor, states: Tensor, extrinsics: Tensor | None) -> Tensor:
        """frames ``[B,T,N,D]``, actions ``[B,T,A]``, states ``[B,T,S]`` -> ``[B, T, G, E]``."""
        parts = [self.action_encoder(actions).unsqueeze(2), self.state_encoder(states).unsqueeze(2)]
        if self.config.use_extrinsics:
            if extrinsics is None or self.extrinsics_encoder is None:
                raise ValueError("OfficialACPredictor: use_extrinsics needs extrinsics [B,T,X]")
            parts.append(self.extrinsics_encoder(extrinsics).unsqueeze(2))
        return torch.cat(parts + [self.predictor_embed(frames)], dim=2)

    def _head(self, frame_tokens: Tensor) -> Tensor:
        """Trunk outputs of frame tokens ``[..., E]`` -> predicted features ``[..., D]`` (absolute)."""
        return self.predictor_proj(self.predictor_norm(frame_tokens))

    # ---- the release's forward -------------------------------------------------------------
    def forward(self, x: Tensor, actions: Tensor, states: Tensor, extrinsics: Tensor | None = None) -> Tensor:
        """Teacher-forced predictions, as the release.

        Args:
            x: ``[B, T*N, D]`` features of frames ``0..T-1`` (layer-normed when planning).
            actions: ``[B, T, A]``, ``actions[:, t]`` taken at frame ``t``.
            states: ``[B, T, S]``.
            extrinsics: ``[B, T, X]``, only with ``use_extrinsics``.
        Returns:
            ``[B, T*N, D]``: block ``t`` predicts frame ``t + 1``.
        """
        c = self.config
        B, L, D = x.shape
        N = c.tokens_per_frame
        if L % N or D != c.latent_dim:
            raise ValueError(f"OfficialACPredictor: x must be [B, T*{N}, {c.latent_dim}], got {tuple(x.shape)}")
        T = L // N
        if actions.shape != (B, T, c.action_dim) or states.shape != (B, T, c.state_dim):
            raise ValueError(f"OfficialACPredictor: actions/states must be [B,T,{c.action_dim}]/[B,T,{c.state_dim}] with "
                             f"B={B}, T={T}, got {tuple(actions.shape)} / {tuple(states.shape)}")
        tok = self._group_tokens(x.view(B, T, N, D), actions, states, extrinsics).flatten(1, 2)
        head_dim = c.embed_dim // c.num_heads
        cos, sin = official_rope_tables(self._positions(0, T, x.device), head_dim)
        mask = self._mask(T, x.device)
        for blk in self.predictor_blocks:
            tok = blk(tok, cos, sin, mask)
        tok = tok.view(B, T, self.group, -1)[:, :, self.cond_tokens:]
        return self._head(tok).flatten(1, 2)

    # ---- planning rollout -------------------------------------------------------------------
    def rollout(
        self,
        ctx_latents: Tensor,
        ctx_states: Tensor,
        actions: Tensor,
        next_state: StateFn,
        ctx_actions: Tensor | None = None,
        use_cache: bool = True,
    ) -> Rollout:
        """Autoregressive rollout of the release's planning loop.

        Each step predicts the next frame from all frames so far, layer-norms it (no affine)
        and appends it; the state is advanced by ``next_state(state, action)``.

        Args:
            ctx_latents: ``[B, Tc, N, D]`` layer-normed context features.
            ctx_states: ``[B, Tc, S]``.
            actions: ``[M, H, A]``, ``M = B * S`` (rows ``b*S .. b*S+S-1`` belong to context ``b``);
                ``actions[:, 0]`` is taken at the last context frame.
            next_state: ``(state [M, S], action [M, A]) -> [M, S]``.
            ctx_actions: ``[B, Tc-1, A]`` actions between context frames (needed when Tc > 1).
            use_cache: False recomputes the whole sequence every step (the release's way).
        Returns:
            Rollout(latents ``[M, H, N, D]`` (layer-normed), proprio ``[M, H, S]``).
        """
        c = self.config
        B, Tc = ctx_latents.shape[:2]
        M, H = actions.shape[:2]
        if ctx_latents.shape[2:] != (c.tokens_per_frame, c.latent_dim) or ctx_states.shape != (B, Tc, c.state_dim):
            raise ValueError(f"OfficialACPredictor.rollout: ctx_latents/ctx_states must be [B,Tc,{c.tokens_per_frame},"
                             f"{c.latent_dim}]/[B,Tc,{c.state_dim}], got {tuple(ctx_latents.shape)} / {tuple(ctx_states.shape)}")
        if actions.dim() != 3 or actions.shape[-1] != c.action_dim or M % B:
            raise ValueError(f"OfficialACPredictor.rollout: actions must be [B*S,H,{c.action_dim}] for B={B}, got {tuple(actions.shape)}")
        if Tc > 1 and (ctx_actions is None or ctx_actions.shape != (B, Tc - 1, c.action_dim)):
            got = None if ctx_actions is None else tuple(ctx_actions.shape)
            raise ValueError(f"OfficialACPredictor.rollout: ctx_actions must be [{B},{Tc - 1},{c.action_dim}], got {got}")
        if c.use_extrinsics:
            raise ValueError("OfficialACPredictor.rollout: models with use_extrinsics are not supported")
        ctx_actions = actions.new_zeros(B, 0, c.action_dim) if ctx_actions is None else ctx_actions
        if use_cache:
            return self._rollout_cached(ctx_latents, ctx_states, actions, ctx_actions, next_state)
        return self._rollout_full(ctx_latents, ctx_states, actions, ctx_actions, next_state)

    def _rollout_full(self, ctx, states, actions, ctx_actions, next_state: StateFn) -> Rollout:
        """Reference: ``forward`` on the whole growing sequence at every step."""
        B, Tc, N, D = ctx.shape
        M, H = actions.shape[:2]
        S = M // B
        frames = ctx.repeat_interleave(S, dim=0)  # [M, Tc, N, D]
        st = states.repeat_interleave(S, dim=0)
        acts = ctx_actions.repeat_interleave(S, dim=0)
        lats, props = [], []
        for h in range(H):
            acts = torch.cat([acts, actions[:, h:h + 1]], dim=1)
            out = self(frames.flatten(1, 2), acts, st)[:, -N:]
            z = F.layer_norm(out, (D,))
            s = next_state(st[:, -1], actions[:, h])
            frames = torch.cat([frames, z[:, None]], dim=1)
            st = torch.cat([st, s[:, None]], dim=1)
            lats.append(z)
            props.append(s)
        return Rollout(torch.stack(lats, dim=1), torch.stack(props, dim=1))

    def _rollout_cached(self, ctx, states, actions, ctx_actions, next_state: StateFn) -> Rollout:
        """KV-cached: steps ``0..Tc-2`` once per context (shared by its samples), then one
        token group per step attending to the cache."""
        c = self.config
        B, Tc, N, D = ctx.shape
        M, H = actions.shape[:2]
        S = M // B
        head_dim = c.embed_dim // c.num_heads
        shared: list[KV | None] = [None] * c.depth
        if Tc > 1:  # context steps whose action is known: identical for every sample of an env
            tok = self._group_tokens(ctx[:, :-1], ctx_actions, states[:, :-1], None).flatten(1, 2)
            cos, sin = official_rope_tables(self._positions(0, Tc - 1, ctx.device), head_dim)
            mask = self._mask(Tc - 1, ctx.device)
            for i, blk in enumerate(self.predictor_blocks):
                y = blk.norm1(tok)
                q, k, v = blk.attn.qkv_rotated(y, cos, sin)
                shared[i] = (k, v)
                tok = tok + blk.attn.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
                tok = tok + blk.mlp(blk.norm2(tok))
        caches = [KVCache(H * self.group) for _ in range(c.depth)]
        z = ctx[:, -1].repeat_interleave(S, dim=0)  # [M, N, D]
        s = states[:, -1].repeat_interleave(S, dim=0)  # [M, S]
        lats, props = [], []
        for h in range(H):
            cos, sin = official_rope_tables(self._positions(Tc - 1 + h, 1, ctx.device), head_dim)  # [G, dh]
            tok = self._group_tokens(z[:, None], actions[:, h:h + 1], s[:, None], None)[:, 0]  # [M, G, E]
            for i, blk in enumerate(self.predictor_blocks):
                q, k, v = blk.attn.qkv_rotated(blk.norm1(tok), cos, sin)  # [M, heads, G, dh]
                k_all, v_all, _ = caches[i].append(k, v)
                o = attend_cached(q * blk.attn.scale, k_all, v_all, None, shared[i])
                tok = tok + blk.attn.merge(o)
                tok = tok + blk.mlp(blk.norm2(tok))
            z = F.layer_norm(self._head(tok[:, self.cond_tokens:]), (D,))
            s = next_state(s, actions[:, h])
            lats.append(z)
            props.append(s)
        return Rollout(torch.stack(lats, dim=1), torch.stack(props, dim=1))
