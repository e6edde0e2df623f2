"""KV cache and attention for the predictor's cached rollout (one new token group per step).

The rollout's per-step work is tiny per sample (G queries against at most H*G keys) and
repeated for thousands of samples, so what matters is memory traffic and kernel choice:
keys/values live in buffers preallocated for the whole rollout, context keys/values shared by
the samples of an env are never copied per sample, and a few CPU-specific sizes keep ATen on
its fast paths.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..protocols import row_chunks  # noqa: F401  (re-exported: the predictor's CPU chunks)

KV = tuple[Tensor, Tensor]

# ATen's CPU bmm switches to an unblocked loop, several times slower here, for matrix products
# under 400 multiply-adds; the first steps of few-token models (G * dh * L small) fall there.
CPU_BMM_MIN_MACS = 400


# Tokens per step (rows * G) of one CPU rollout chunk: a few thousand keep a chunk's activations
# cache-resident and out of fresh, page-faulting memory (ACPredictor.rollout).
CPU_CHUNK_TOKENS = 4096


class KVCache:
    """One layer's per-sample keys/values of the rollout steps, ``[M, heads, L, dh]``.

    Buffers for all ``capacity`` tokens are allocated at the first append and each step is
    written in place, instead of re-copying the whole cache with ``torch.cat`` every step.
    When autograd records through the rollout (training, gradient planner) in-place writes
    would invalidate tensors saved for backward, so it grows by ``cat`` then.
    ``min_len``: keys returned are padded (zeros, masked out) to at least this length.
    """

    def __init__(self, capacity: int, min_len: int = 0):
        self.capacity, self.min_len = capacity, min(min_len, capacity)
        self.len, self.inplace = 0, True
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Add ``[M, heads, G, dh]`` keys/values (any strides).

        Returns all so far ``[M, heads, L, dh]`` and None, or, when padded to ``min_len``, the
        padded keys/values and an additive mask ``[L]`` (0 on filled slots, -inf on padding).
        """
        n = self.len + k.shape[2]
        if self.len == 0:
            self.inplace = not (k.requires_grad or v.requires_grad)
            if self.inplace:
                M, nh, _, dh = k.shape
                alloc = torch.zeros if self.min_len > n else torch.empty  # padding must be finite
                self.k = alloc(M, nh, self.capacity, dh, dtype=k.dtype, device=k.device)
                self.v = alloc(M, nh, self.capacity, dh, dtype=v.dtype, device=v.device)
        if not self.inplace:
            self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
            self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
            self.len = n
            return self.k, self.v, None
        self.k[:, :, self.len:n] = k
        self.v[:, :, self.len:n] = v
        self.len = n
        if n >= self.min_len:
            return self.k[:, :, :n], self.v[:, :, :n], None
        L = self.min_len
        mask = torch.zeros(L, dtype=torch.float32, device=k.device)
        mask[n:] = float("-inf")
        return self.k[:, :, :L], self.v[:, :, :L], mask


def attend_cached(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, shared: KV | None) -> Tensor:
    """Softmax attention of new queries over cached keys/values (fp32 softmax, bf16-safe).

    Args:
        q: ``[M, heads, Gq, dh]`` queries, already multiplied by the softmax scale.
        k, v: ``[M, heads, L, dh]`` per-sample keys/values (any strides).
        mask: None or additive ``[L]`` (-inf on padded key slots).
        shared: ``[B, heads, Lc, dh]`` per-env context keys/values, ``M = B * S``; they are
            never copied per sample: the S samples' queries are regrouped per env instead, and
            the two parts are combined with one joint softmax (shared max, summed normalisers).
    Returns:
        ``[M, heads, Gq, dh]``.
    """
    if shared is None:
        if q.device.type != "cpu":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
        # On CPU the fused kernel is slower than bmm + softmax for these tiny [Gq x L] blocks.
        s = q @ k.transpose(-1, -2)
        s = s if mask is None else s + mask
        return s.softmax(dim=-1, dtype=torch.float32).to(q.dtype) @ v
    ks, vs = shared
    M, nh, G, dh = q.shape
    B = ks.shape[0]
    S = M // B

    def to_env(t: Tensor) -> Tensor:  # [M, h, G, c] -> [B, h, S*G, c]
        return t.reshape(B, S, nh, G, -1).transpose(1, 2).reshape(B, nh, S * G, -1)

    def to_sample(t: Tensor) -> Tensor:  # [B, h, S*G, c] -> [M, h, G, c]
        return t.reshape(B, nh, S, G, -1).transpose(1, 2).reshape(M, nh, G, -1)

    sc = (to_env(q) @ ks.transpose(-1, -2)).float()  # [B, h, S*G, Lc]
    so = (q @ k.transpose(-1, -2)).float()  # [M, h, G, L]
    so = so if mask is None else so + mask
    m = torch.maximum(to_sample(sc.amax(dim=-1, keepdim=True)), so.amax(dim=-1, keepdim=True))  # joint max
    pc = (sc - to_env(m)).exp()
    po = (so - m).exp()
    den = to_sample(pc.sum(dim=-1, keepdim=True)) + po.sum(dim=-1, keepdim=True)
    o = to_sample(pc.to(vs.dtype) @ vs).float() + (po.to(v.dtype) @ v).float()
    return (o / den).to(q.dtype)
