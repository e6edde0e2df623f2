"""Action-conditioned latent predictor (V-JEPA 2-AC style) with a KV-cached rollout.

Sequence layout: per predictor step ``t`` one token group
``[action_t, proprio_t (optional), frame tokens_t (N)]`` of ``G = 1 + [P] + N`` tokens,
each kind embedded by its own ``Linear``. Attention is block-causal over steps: every
token of step ``t`` sees all tokens of steps ``<= t``. Positions use 3D RoPE: frame
tokens at ``(t, row, col)`` of their grid cell, action/proprio tokens at ``(t, 0, 0)``.
The frame-token outputs of step ``t`` predict the latent tokens of step ``t + 1``
(residually, ``z_t + delta``), the proprio-token output predicts ``proprio_{t+1}``.

Conventions:
- ``forward`` (teacher forcing) always returns the ensemble axis:
  ``pred_latents [B, T, K, N, D]`` (``K = 1`` for a single head).
- ``rollout`` returns the head mean ``[B, H, N, D]`` (what is fed back autoregressively)
  plus the head disagreement ``[B, H]`` when ``K > 1``.
- All inputs are already normalised (the :class:`~worldmodel.world_model.WorldModel`
  owns the action/proprio statistics).
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..protocols import Rollout
from .kv_cache import CPU_BMM_MIN_MACS, CPU_CHUNK_TOKENS, KV, KVCache, attend_cached, row_chunks
from .registry import register_predictor
from .rope import apply_rope, apply_rope_tables, rope_chunk, rope_cos_sin, rope_tables


@dataclass
class ACPredictorConfig:
    """Predictor hyper-parameters; ``to_dict``/``from_dict`` round-trip through checkpoints."""

    latent_dim: int  # D, channels per latent token
    tokens_per_frame: int  # N, latent tokens per frame
    grid: tuple[int, int]  # (gh, gw) of those tokens, gh * gw == N
    action_dim: int  # A = frameskip * env action dim
    proprio_dim: int | None = None  # P, or None to ignore proprioception
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    ensemble: int = 1  # K latent output heads on a shared trunk
    predict_proprio: bool = True

    def __post_init__(self) -> None:
        self.grid = (int(self.grid[0]), int(self.grid[1]))
        if self.grid[0] * self.grid[1] != self.tokens_per_frame:
            raise ValueError(f"ACPredictorConfig: grid {self.grid} does not hold tokens_per_frame={self.tokens_per_frame}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"ACPredictorConfig: embed_dim={self.embed_dim} not divisible by num_heads={self.num_heads}")
        rope_chunk(self.embed_dim // self.num_heads)  # raises if the head is too small for 3D RoPE
        if self.ensemble < 1:
            raise ValueError(f"ACPredictorConfig: ensemble must be >= 1, got {self.ensemble}")
        if self.proprio_dim is not None and not self.predict_proprio:
            # A rollout must feed a next-step proprio back in; without a head there is none.
            raise ValueError("ACPredictorConfig: proprio_dim is set but predict_proprio=False; "
                             "rollouts need predicted proprio (set proprio_dim=None to ignore proprio)")

    @property
    def uses_proprio(self) -> bool:
        return self.proprio_dim is not None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grid"] = list(self.grid)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ACPredictorConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"ACPredictorConfig: unknown field(s) {unknown}; known: {sorted(names)}")
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(n for n in required if n not in d)
        if missing:
            raise ValueError(f"ACPredictorConfig: missing field(s) {missing}")
        return cls(**d)




def head_disagreement(heads: Tensor, mean: Tensor | None = None) -> Tensor:
    """Population variance across the head axis, averaged over tokens and channels.

    heads ``[M, H, K, N, D]`` (mean ``[M, H, N, D]`` if already computed) -> ``[M, H]``.
    """
    if mean is None:
        mean = heads.mean(dim=2)
    return (heads - mean.unsqueeze(2)).pow(2).mean(dim=(2, 3, 4))


class _Attention(nn.Module):
    """Multi-head self-attention with fused qkv and 3D RoPE on queries and keys."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x ``[B, L, E]`` -> q, k, v ``[B, heads, L, dh]`` (q, k rotated)."""
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def _out(self, o: Tensor) -> Tensor:
        B, _, L, _ = o.shape
        return self.proj(o.transpose(1, 2).reshape(B, L, self.heads * self.head_dim))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor) -> Tensor:
        """Full-sequence attention. x ``[B, L, E]``, mask bool ``[L, L]`` (True = may attend)."""
        q, k, v = self._qkv(x, cos, sin)
        return self._out(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))

    def prefill(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor) -> tuple[Tensor, KV]:
        """Like ``forward`` but also returns this layer's keys/values ``[B, heads, L, dh]``."""
        q, k, v = self._qkv(x, cos, sin)
        return self._out(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)), (k, v)

    def step_weights(self, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        """qkv weight and bias with one step's RoPE and the softmax scale folded in, per token.

        RoPE is a fixed linear map per token position, so ``R(Wx + b) = (RW)x + Rb``: rotating
        the ``[3E, E]`` weight once per step replaces rotating every sample's q and k.
        cos, sin: ``[G, dh]`` full-width tables (:func:`rope_tables`).
        Returns w ``[G, E, 3E]`` and b ``[G, 1, 3E]`` for ``baddbmm(b, x [G, M, E], w)``.
        """
        W, bias = self.qkv.weight, self.qkv.bias
        E, nh, dh = W.shape[1], self.heads, self.head_dim
        G = cos.shape[0]
        wqk = W[:2 * E].view(2, nh, dh, E).transpose(-1, -2)  # [2, nh, E, dh]: rotate along dh
        wqk = apply_rope_tables(wqk, cos[:, None, None, None], sin[:, None, None, None])  # [G, 2, nh, E, dh]
        bqk = apply_rope_tables(bias[:2 * E].view(2, nh, dh), cos[:, None, None], sin[:, None, None])
        wqk = torch.cat([wqk[:, :1] * self.scale, wqk[:, 1:]], dim=1)  # scale q only
        bqk = torch.cat([bqk[:, :1] * self.scale, bqk[:, 1:]], dim=1)  # [G, 2, nh, dh]
        w = torch.cat([wqk.permute(0, 3, 1, 2, 4).reshape(G, E, 2 * E), W[2 * E:].t().expand(G, E, E)], dim=2)
        b = torch.cat([bqk.reshape(G, 2 * E), bias[2 * E:].expand(G, E)], dim=1)
        return w, b[:, None]

    def step(self, x: Tensor, w: Tensor, b: Tensor, shared: KV | None, cache: KVCache, first: int = 0) -> Tensor:
        """One new token group attending to the shared context, earlier steps and itself.

        Token-major layout: token ``g`` of all samples is one contiguous ``[M, E]`` slab, so
        the per-token RoPE weights are one ``baddbmm`` and the last block's row drop is a slice.

        Args:
            x: ``[G, M, E]`` the new step's tokens, ``M = B * S`` (sample-major within env).
            w, b: this step's qkv weights from :meth:`step_weights`.
            shared: context keys/values ``[B, heads, Lc, dh]`` shared by the S samples of each
                env, or None.
            cache: this layer's per-sample keys/values of the rollout; this step's are appended.
            first: compute outputs only for tokens ``first..G-1`` (their keys/values are all cached).
        Returns:
            ``[G - first, M, E]`` attention output before ``proj`` (the block fuses it with the residual).
        """
        G, M, E = x.shape
        qkv = torch.baddbmm(b, x, w).view(G, M, 3, self.heads, self.head_dim)  # q (pre-scaled), k rotated
        q, k, v = (t.permute(1, 2, 0, 3) for t in qkv.unbind(2))  # [M, heads, G, dh] views
        k, v, mask = cache.append(k, v)
        # All G queries attend (equal bmm shapes in every block); dropped rows are sliced after.
        o = attend_cached(q, k, v, mask, shared)[:, :, first:]  # [M, heads, G - first, dh]
        return o.permute(2, 0, 1, 3).reshape(G - first, M, E)


class _Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, mask)
        return x + self.mlp(self.norm2(x))

    def prefill(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor) -> tuple[Tensor, KV]:
        h, kv = self.attn.prefill(self.norm1(x), cos, sin, mask)
        x = x + h
        return x + self.mlp(self.norm2(x)), kv

    def step(self, x: Tensor, cos: Tensor, sin: Tensor, shared: KV | None, cache: KVCache, first: int = 0) -> Tensor:
        """Token-major ``[G, M, E]`` -> ``[G - first, M, E]`` (see :meth:`_Attention.step`)."""
        w, b = self.attn.step_weights(cos, sin)
        o = self.attn.step(self.norm1(x), w, b, shared, cache, first)
        if o.requires_grad:  # autograd records: out of place
            x = x[first:] + self.attn.proj(o)
            return x + self.mlp(self.norm2(x))
        # Same maths accumulated into tensors that already exist: the residual stream (this
        # step's own, read by nothing else) takes both projections in place and GELU runs in
        # place. On CPU every fresh large tensor or extra pass costs page faults and traffic.
        fc1, act, fc2 = self.mlp
        x = _linear_into(x[first:], o, self.attn.proj)
        return _linear_into(x, torch.ops.aten.gelu_(fc1(self.norm2(x)), approximate=act.approximate), fc2)


def _linear_into(acc: Tensor, x: Tensor, lin: nn.Linear) -> Tensor:
    """``acc += lin(x)`` in place (contiguous ``acc [..., out]``, ``x [..., in]``); returns ``acc``."""
    a = acc.view(-1, acc.shape[-1])
    # addmm with out= rather than addmm_: same kernel, and FLOP counters (benchmarks) see it.
    torch.addmm(a, x.reshape(-1, x.shape[-1]), lin.weight.t(), out=a).add_(lin.bias)
    return acc


@register_predictor("ac")
class ACPredictor(nn.Module):
    """Block-causal action-conditioned transformer over latent token groups (predictor type ``"ac"``)."""

    config_class = ACPredictorConfig

    def __init__(self, config: ACPredictorConfig):
        super().__init__()
        self.config = c = config
        E = c.embed_dim
        self.n_extra = 1 + int(c.uses_proprio)  # action (+ proprio) tokens before the frame tokens
        self.group = self.n_extra + c.tokens_per_frame  # G tokens per step
        self.action_embed = nn.Linear(c.action_dim, E)
        self.proprio_embed = nn.Linear(c.proprio_dim, E) if c.uses_proprio else None
        self.frame_embed = nn.Linear(c.latent_dim, E)
        self.blocks = nn.ModuleList(_Block(E, c.num_heads, c.mlp_ratio) for _ in range(c.depth))
        self.norm = nn.LayerNorm(E)
        self.latent_head = nn.Linear(E, c.ensemble * c.latent_dim)  # K heads in one matmul
        self.proprio_head = nn.Linear(E, c.proprio_dim) if c.uses_proprio else None
        # (t, row, col) of each token of a step at t = 0; extra tokens sit at (t, 0, 0).
        gh, gw = c.grid
        rows = torch.arange(gh).repeat_interleave(gw)
        cols = torch.arange(gw).repeat(gh)
        frame_pos = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1)
        pos = torch.cat([torch.zeros(self.n_extra, 3, dtype=torch.long), frame_pos], dim=0)
        self.register_buffer("group_pos", pos, persistent=False)  # [G, 3]
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            # Distinct random init per head matters: identical heads would get identical
            # gradients and never disagree.
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    # ---- pieces -------------------------------------------------------------------------
    def _embed(self, latents: Tensor, proprio: Tensor | None, actions: Tensor) -> Tensor:
        """``[B,T,N,D]``, ``[B,T,P]|None``, ``[B,T,A]`` -> token groups ``[B, T, G, E]``."""
        parts = [self.action_embed(actions).unsqueeze(2)]
        if self.proprio_embed is not None:
            parts.append(self.proprio_embed(proprio).unsqueeze(2))
        parts.append(self.frame_embed(latents))
        return torch.cat(parts, dim=2)

    def _rope(self, t0: int, T: int) -> tuple[Tensor, Tensor]:
        """RoPE tables for steps ``t0 .. t0+T-1``: cos, sin ``[1, T*G, R]``."""
        t = torch.arange(t0, t0 + T, device=self.group_pos.device)
        pos = self.group_pos.unsqueeze(0).repeat(T, 1, 1)  # [T, G, 3]
        pos[..., 0] = t[:, None]
        cos, sin = rope_cos_sin(pos.reshape(1, T * self.group, 3), self.config.embed_dim // self.config.num_heads)
        return cos, sin

    def _rope_tables(self, t0: int, T: int) -> tuple[Tensor, Tensor]:
        """Full-width RoPE tables for single steps ``t0 .. t0+T-1``: cos, sin ``[T, G, dh]``."""
        pos = self.group_pos.unsqueeze(0).repeat(T, 1, 1)  # [T, G, 3]
        pos[..., 0] = torch.arange(t0, t0 + T, device=pos.device)[:, None]
        return rope_tables(pos, self.config.embed_dim // self.config.num_heads)

    def _mask(self, T: int, device: torch.device) -> Tensor:
        """Block-causal bool mask ``[T*G, T*G]``: query step >= key step."""
        step = torch.arange(T, device=device).repeat_interleave(self.group)
        return step[:, None] >= step[None, :]

    def _heads(self, out: Tensor, latents_in: Tensor, proprio_in: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Trunk outputs ``[B,T,G,E]`` -> next latents ``[B,T,K,N,D]``, next proprio ``[B,T,P]|None``.

        Residual parametrisation (``z_t + delta``): "nothing moves" is the zero output,
        so an untrained predictor starts near the copy-last baseline.
        """
        c = self.config
        B, T = out.shape[:2]
        o = self.norm(out)
        delta = self.latent_head(o[:, :, self.n_extra:])  # [B, T, N, K*D]
        delta = delta.view(B, T, c.tokens_per_frame, c.ensemble, c.latent_dim).transpose(2, 3)
        pred = latents_in.unsqueeze(2) + delta
        pred_p = None
        if self.proprio_head is not None:
            pred_p = proprio_in + self.proprio_head(o[:, :, 1])
        return pred, pred_p

    def _step_io(self, x: Tensor, z: Tensor, p: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Heads of one cached rollout step, token-major (same maths as :meth:`_heads`).

        x ``[G-1, M, E]`` trunk outputs of tokens ``1..G-1``, z ``[N, M, D]``, p ``[M, P]|None``
        -> next z ``[N, M, D]`` (head mean), next p ``[M, P]|None``, disagreement ``[M]|None``.
        """
        c = self.config
        N, M, D = z.shape
        o = self.norm(x)
        pk = z.unsqueeze(2) + self.latent_head(o[self.n_extra - 1:]).view(N, M, c.ensemble, D)  # [N, M, K, D]
        z = pk.mean(dim=2)
        dis = (pk - z.unsqueeze(2)).pow(2).mean(dim=(0, 2, 3)) if c.ensemble > 1 else None
        if self.proprio_head is not None:
            p = p + self.proprio_head(o[0])
        return z, p, dis

    def _check(self, latents: Tensor, proprio: Tensor | None, actions: Tensor | None, what: str) -> None:
        c = self.config
        if latents.dim() != 4 or latents.shape[2:] != (c.tokens_per_frame, c.latent_dim):
            raise ValueError(f"{what}: latents must be [B,T,{c.tokens_per_frame},{c.latent_dim}], got {tuple(latents.shape)}")
        if c.uses_proprio:
            if proprio is None or proprio.shape != (*latents.shape[:2], c.proprio_dim):
                got = None if proprio is None else tuple(proprio.shape)
                raise ValueError(f"{what}: proprio must be [B,T,{c.proprio_dim}] matching latents, got {got}")
        if actions is not None and (actions.dim() != 3 or actions.shape[-1] != c.action_dim):
            raise ValueError(f"{what}: actions must be [B,T,{c.action_dim}], got {tuple(actions.shape)}")

    # ---- teacher forcing ----------------------------------------------------------------
    def forward(self, latents: Tensor, proprio: Tensor | None, actions: Tensor) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced one-step predictions for every step at once.

        Args:
            latents: ``[B, T, N, D]`` latents of steps ``0..T-1``.
            proprio: ``[B, T, P]`` or None (must match ``config.proprio_dim``).
            actions: ``[B, T, A]``; ``actions[:, t]`` is applied at step ``t``.
        Returns:
            pred_latents ``[B, T, K, N, D]`` (entry ``t`` predicts latents of step ``t+1``),
            pred_proprio ``[B, T, P]`` or None.
        """
        self._check(latents, proprio, actions, "ACPredictor.forward")
        if actions.shape[:2] != latents.shape[:2]:
            raise ValueError(f"ACPredictor.forward: actions {tuple(actions.shape)} must share [B,T] with latents {tuple(latents.shape)}")
        B, T = latents.shape[:2]
        x = self._embed(latents, proprio, actions).flatten(1, 2)  # [B, T*G, E]
        cos, sin = self._rope(0, T)
        mask = self._mask(T, x.device)
        for blk in self.blocks:
            x = blk(x, cos, sin, mask)
        return self._heads(x.view(B, T, self.group, -1), latents, proprio)

    # ---- autoregressive rollout ---------------------------------------------------------
    def rollout(
        self,
        ctx_latents: Tensor,
        ctx_proprio: Tensor | None,
        actions: Tensor,
        ctx_actions: Tensor | None = None,
        use_cache: bool = True,
    ) -> Rollout:
        """Roll out ``H`` steps from a context, feeding predictions (head mean) back in.

        Args:
            ctx_latents: ``[B, Tc, N, D]`` context latents (steps ``0..Tc-1``).
            ctx_proprio: ``[B, Tc, P]`` or None.
            actions: ``[B*S, H, A]``; ``actions[:, 0]`` is applied at the LAST context frame.
                ``S = actions.shape[0] // B`` samples per context are inferred from the
                shapes; row ``b*S + s`` is sample ``s`` of context ``b`` (i.e. a planner's
                ``[B, S, H, A]`` reshaped). Context keys/values are computed once per
                context and shared by its samples, never recomputed or copied per sample.
            ctx_actions: ``[B, Tc-1, A]`` actions taken between the context frames
                (required when ``Tc > 1``).
            use_cache: False recomputes the whole sequence each step (reference path).
        Returns:
            :class:`Rollout` with latents ``[B*S, H, N, D]``, proprio ``[B*S, H, P]|None``,
            disagreement ``[B*S, H]|None``.
        """
        self._check(ctx_latents, ctx_proprio, actions, "ACPredictor.rollout")
        B, Tc = ctx_latents.shape[:2]
        M, H = actions.shape[:2]
        if M % B:
            raise ValueError(f"ACPredictor.rollout: actions batch {M} is not a multiple of context batch {B}")
        if Tc > 1:
            if ctx_actions is None or ctx_actions.shape != (B, Tc - 1, self.config.action_dim):
                got = None if ctx_actions is None else tuple(ctx_actions.shape)
                raise ValueError(f"ACPredictor.rollout: ctx_actions must be [B,Tc-1,A]=[{B},{Tc - 1},{self.config.action_dim}] "
                                 f"for Tc={Tc}, got {got}")
        if not use_cache:
            return self._rollout_uncached(ctx_latents, ctx_proprio, actions, ctx_actions)
        if actions.device.type != "cpu" or M * self.group <= CPU_CHUNK_TOKENS:
            return self._rollout_cached(ctx_latents, ctx_proprio, actions, ctx_actions)
        # On CPU, a few thousand tokens per step keep a chunk's activations cache-resident and
        # out of fresh (page-faulting) memory: ~5-10% faster at planning batch sizes, same values.
        S = M // B
        parts = []
        for b0, b1, r0, r1 in row_chunks(B, S, max(1, CPU_CHUNK_TOKENS // self.group)):
            parts.append(self._rollout_cached(
                ctx_latents[b0:b1], None if ctx_proprio is None else ctx_proprio[b0:b1], actions[r0:r1],
                None if ctx_actions is None else ctx_actions[b0:b1]))
        cat = lambda xs: None if xs[0] is None else torch.cat(xs)  # noqa: E731
        return Rollout(cat([r.latents for r in parts]), cat([r.proprio for r in parts]),
                       cat([r.disagreement for r in parts]))

    def _collect(self, preds: list[Tensor], props: list[Tensor | None]) -> Rollout:
        """Stack per-step head predictions ``[M, K, N, D]`` into a :class:`Rollout`."""
        allk = torch.stack(preds, dim=1)  # [M, H, K, N, D]
        mean = allk.mean(dim=2)
        dis = head_disagreement(allk, mean) if self.config.ensemble > 1 else None
        prop = torch.stack(props, dim=1) if props[0] is not None else None
        return Rollout(mean, prop, dis)

    def _rollout_cached(self, ctx_latents, ctx_proprio, actions, ctx_actions) -> Rollout:
        B, Tc = ctx_latents.shape[:2]
        M, H = actions.shape[:2]
        S = M // B
        # 1) Shared prefix: context steps 0..Tc-2 are identical for all samples of an env.
        #    The last context step already holds the per-sample action, so it is not shared.
        shared: list[KV | None] = [None] * len(self.blocks)
        if Tc > 1:
            x = self._embed(ctx_latents[:, :-1], None if ctx_proprio is None else ctx_proprio[:, :-1], ctx_actions)
            x = x.flatten(1, 2)
            cos, sin = self._rope(0, Tc - 1)
            mask = self._mask(Tc - 1, x.device)
            for i, blk in enumerate(self.blocks):
                x, shared[i] = blk.prefill(x, cos, sin, mask)
        # 2) Per-sample steps, each computing only its own token group, token-major [G, M, E].
        #    The last block skips the action token's output: nothing reads it.
        z = ctx_latents[:, -1].transpose(0, 1).repeat_interleave(S, dim=1)  # [N, M, D]
        p = None if ctx_proprio is None else ctx_proprio[:, -1].repeat_interleave(S, dim=0)  # [M, P]
        dh = self.config.embed_dim // self.config.num_heads
        # CPU: pad early steps' keys so each per-sample [G x L] product stays on bmm's fast path.
        min_len = -(-CPU_BMM_MIN_MACS // (self.group * dh)) if z.device.type == "cpu" else 0
        caches = [KVCache(H * self.group, min_len) for _ in self.blocks]
        cos, sin = self._rope_tables(Tc - 1, H)  # [H, G, dh]
        last = len(self.blocks) - 1
        lats, props, dis = [], [], []
        for h in range(H):
            parts = [self.action_embed(actions[:, h])[None]]
            if p is not None:
                parts.append(self.proprio_embed(p)[None])
            x = torch.cat(parts + [self.frame_embed(z)])  # [G, M, E]
            for i, blk in enumerate(self.blocks):
                x = blk.step(x, cos[h], sin[h], shared[i], caches[i], first=int(i == last))
            z, p, d = self._step_io(x, z, p)
            lats.append(z)
            props.append(p)
            dis.append(d)
        return Rollout(torch.stack(lats).permute(2, 0, 1, 3).contiguous(),  # [H, N, M, D] -> [M, H, N, D]
                       None if p is None else torch.stack(props, dim=1),
                       None if dis[0] is None else torch.stack(dis, dim=1))

    def _rollout_uncached(self, ctx_latents, ctx_proprio, actions, ctx_actions) -> Rollout:
        """Reference: re-run ``forward`` on the full growing sequence at every step."""
        B, Tc = ctx_latents.shape[:2]
        M, H = actions.shape[:2]
        S = M // B
        lat = ctx_latents.repeat_interleave(S, dim=0)
        prop = None if ctx_proprio is None else ctx_proprio.repeat_interleave(S, dim=0)
        acts_ctx = actions[:, :0] if Tc == 1 else ctx_actions.repeat_interleave(S, dim=0)
        preds, props = [], []
        for h in range(H):
            pk, pp = self.forward(lat, prop, torch.cat([acts_ctx, actions[:, :h + 1]], dim=1))
            preds.append(pk[:, -1])
            lat = torch.cat([lat, pk[:, -1].mean(dim=1, keepdim=True)], dim=1)
            if pp is not None:
                props.append(pp[:, -1])
                prop = torch.cat([prop, pp[:, -1:]], dim=1)
            else:
                props.append(None)
        return self._collect(preds, props)

    def rollout_bytes_per_row(self, horizon: int, ctx_len: int = 1, itemsize: int | None = None) -> int:
        """Estimated peak bytes one action row adds to a cached :meth:`rollout` of ``horizon`` steps
        (the planners' ``memory_budget_mb`` divides by it; an over- rather than under-estimate).

        With G tokens per step, E width, L blocks, K heads, N x D latents, per row:
        KV caches ``L * 2 * H*G * E`` (all blocks live for the whole rollout), one block's step
        activations ``G*E*(11 + 2*mlp_ratio)`` (tokens, qkv, attention outputs, MLP hidden),
        fp32 attention scores and their exponentials ``2 * heads * G * (H*G + (Tc-1)*G)``,
        the K head outputs per step ``(K+2)*N*D`` and the stacked outputs ``3*H*N*D``
        (the per-step list, the stack and its contiguous permute). ``itemsize``: bytes per
        element of the weights' dtype by default (fp32: 4).
        """
        c, G, H = self.config, self.group, int(horizon)
        it = itemsize or next(self.parameters()).element_size()
        E, N, D = c.embed_dim, c.tokens_per_frame, c.latent_dim
        elems = (c.depth * 2 * H * G * E + G * E * (11 + 2 * c.mlp_ratio)
                 + (c.ensemble + 2) * N * D + 3 * H * N * D + N * D)
        scores = 4 * 2 * c.num_heads * G * (H * G + max(0, ctx_len - 1) * G)
        return int(it * elems + scores)

    def rollout_bytes_fixed(self, horizon: int, ctx_len: int = 1, itemsize: int | None = None) -> int:
        """Estimated peak bytes one cached :meth:`rollout` call needs whatever its rows: one block's
        per-step RoPE-folded qkv weights and their temporaries, ``~3 * G*E*3E`` (see
        :meth:`_Attention.step_weights`), plus the RoPE tables ``H*G*dh`` (cos and sin)."""
        c, G = self.config, self.group
        it = itemsize or next(self.parameters()).element_size()
        E = c.embed_dim
        return int(it * (3 * G * E * 3 * E + 2 * int(horizon) * G * (E // c.num_heads)))

    def gradient_bytes_per_row(self, horizon: int, ctx_len: int = 1, itemsize: int | None = None) -> int:
        """Estimated peak bytes per action row of a :meth:`rollout` that is back-propagated (the
        gradient planner): the no-grad estimate plus what autograd keeps for the backward pass,
        every block's step activations ``L*H * G*E*(11 + 2*mlp_ratio)`` and attention scores
        ``L*H * 2*heads*G*(H*G + (Tc-1)*G)`` (fp32)."""
        c, G, H = self.config, self.group, int(horizon)
        it = itemsize or next(self.parameters()).element_size()
        kept = c.depth * H * G * c.embed_dim * (11 + 2 * c.mlp_ratio)
        scores = 4 * 2 * c.num_heads * G * (H * G + max(0, ctx_len - 1) * G) * c.depth * H
        return self.rollout_bytes_per_row(horizon, ctx_len, itemsize) + int(it * kept + scores)

    def gradient_bytes_fixed(self, horizon: int, ctx_len: int = 1, itemsize: int | None = None) -> int:
        """Per-call bytes of a back-propagated :meth:`rollout`: autograd keeps every block's
        per-step RoPE-folded qkv weights ``L*H * G*E*3E`` (the matmuls need them for the input
        gradient) on top of :meth:`rollout_bytes_fixed`."""
        c, G, E = self.config, self.group, self.config.embed_dim
        it = itemsize or next(self.parameters()).element_size()
        return self.rollout_bytes_fixed(horizon, ctx_len, itemsize) + int(it * c.depth * int(horizon) * G * E * 3 * E)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
