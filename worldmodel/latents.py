"""Frames -> planning latents: the one code path shared by training, planning and the probe.

    latent = standardise(layer_norm(avg_pool_k(encoder.encode(frame))))

- the latent cache (:func:`~wmplan.worldmodel.latent_cache.build_latent_cache`) calls
  :func:`encode_latents` without statistics (they are computed from the cache afterwards)
  and the training sampler applies :func:`standardise` with the saved statistics;
- planning (:meth:`~wmplan.worldmodel.world_model.WorldModel.encode`) calls it with the
  world model's ``latent_mean``/``latent_std``;
- the probe (:func:`~wmplan.worldmodel.probe.encode_features`) calls it per frame.

Every frame is encoded on its own (as V-JEPA 2-AC does: the ViT repeats it into a full
tubelet), so how frames are grouped into encoder calls (``chunk_size``) never changes a
frame's latent beyond float rounding of batched matmuls. Pooling, layer norm and
standardisation run in fp32 whatever the encoder's dtype; the result is cast last.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .pooling import pool_latents

__all__ = ["encode_latents", "standardise", "module_device"]


def module_device(module: nn.Module) -> torch.device:
    """Device of a module's first parameter or buffer (CPU for a module without tensors)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def standardise(z: Tensor, mean: Tensor | None, std: Tensor | None) -> Tensor:
    """``(z - mean) / std`` with ``mean``/``std`` ``[N, D]`` broadcast over ``z [..., N, D]``;
    identity when ``mean`` is None (a model trained with ``latent_norm=none``)."""
    return z if mean is None else (z - mean) / std


@torch.no_grad()
def encode_latents(
    encoder: nn.Module,
    frames: Tensor,
    pool_k: int | None,
    latent_mean: Tensor | None = None,
    latent_std: Tensor | None = None,
    chunk_size: int | None = 256,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """uint8 frames ``[B, T, H, W, 3]`` -> latents ``[B, T, N, D]``.

    Args:
        encoder: a frozen registered encoder (``encode`` uint8 ``[b,1,H,W,3] -> [b,1,N0,D]``
            and ``grid``); frames are moved to its device.
        pool_k: pooled grid side (``N = k*k``); None keeps all ``N0`` patch tokens (layer norm only).
        latent_mean, latent_std: optional ``[N, D]`` standardisation (the world model's).
        chunk_size: frames per encoder call (bounds memory; None = all at once).
        device: where the result goes (default: the encoder's device).
        dtype: result dtype.
    """
    frames = torch.as_tensor(frames)
    if frames.dtype != torch.uint8 or frames.dim() != 5 or frames.shape[-1] != 3:
        raise ValueError(f"encode_latents: frames must be uint8 [B,T,H,W,3], got {frames.dtype} {tuple(frames.shape)}")
    B, T = frames.shape[:2]
    flat = frames.reshape(B * T, 1, *frames.shape[2:])  # each frame its own clip
    enc_dev = module_device(encoder)
    out_dev = enc_dev if device is None else torch.device(device)
    if latent_mean is not None:
        latent_mean, latent_std = latent_mean.to(enc_dev, torch.float32), latent_std.to(enc_dev, torch.float32)
    step = chunk_size or max(B * T, 1)
    outs = []
    for i in range(0, B * T, step):
        tok = encoder.encode(flat[i:i + step].to(enc_dev))  # [b, 1, N0, D]
        z = standardise(pool_latents(tok.float(), encoder.grid, pool_k), latent_mean, latent_std)
        outs.append(z[:, 0].to(out_dev, dtype))
    if not outs:
        raise ValueError("encode_latents: no frames")
    z = torch.cat(outs)
    return z.view(B, T, *z.shape[1:])
