"""Encode an episode dataset once with the frozen encoder (+ pooling) and cache the latents.

File ``<out_dir>/latent_cache.pt`` (atomic, loads with ``weights_only=True``)::

    kind "wmplan-latent-cache", version, encoder_sha256, pool_k, num_episodes, episode_ids [E],
    dataset_fingerprint (worldmodel/fingerprint.py: meta.json + every episode file)
    latents        [F, N, D] float16|float32   all frames of all episodes, concatenated
    frame_offsets  [E+1] long                  episode e's frames: latents[fo[e]:fo[e+1]]
    actions        [F-E, A_env] float32        episode e's actions: actions[ao[e]:ao[e+1]]
    action_offsets [E+1] long
    proprio        [F, P] float32
    grid           [2] (pooled token grid)

Latents are :func:`~wmplan.worldmodel.latents.encode_latents` of each episode's frames
without standardisation (the statistics are computed from the cache); training applies
:func:`~wmplan.worldmodel.latents.standardise` with the statistics the world model saves, so
training-time latents are planning-time latents (``tests/test_latents.py``).

It is reused when the encoder key (the sha256 of the encoder file, or of the encoder's
type/config/weights when it has no file), ``pool_k``, the storage dtype, the episode ids and
the dataset fingerprint match; otherwise it is recomputed, and the message says why (data
re-collected at the same path, or another task's data there, counts as changed).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .data import DatasetError, EpisodeDataset
from .fingerprint import dataset_fingerprint, describe_change
from .latents import encode_latents
from .pooling import pooled_grid
from .registry import encoder_fingerprint
from .utils import FORMAT_VERSION, CheckpointError, ProgressBar, atomic_save, load_checkpoint

CACHE_KIND = "wmplan-latent-cache"
CACHE_NAME = "latent_cache.pt"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class LatentCache:
    """In-memory latent cache (see module docstring for shapes)."""

    latents: Tensor
    frame_offsets: Tensor
    actions: Tensor
    action_offsets: Tensor
    proprio: Tensor
    episode_ids: list[int]
    grid: tuple[int, int]
    pool_k: int | None
    encoder_sha256: str
    fingerprint: dict | None = None  # dataset_fingerprint of the encoded data

    def index_of(self, episode_id: int) -> int:
        return self.episode_ids.index(episode_id)

    def episode_length(self, e: int) -> int:
        """Number of actions T of the e-th cached episode (by position, not id)."""
        return int(self.action_offsets[e + 1] - self.action_offsets[e])

    def to_dict(self) -> dict:
        return {"kind": CACHE_KIND, "version": FORMAT_VERSION, "encoder_sha256": self.encoder_sha256,
                "pool_k": self.pool_k, "dataset_fingerprint": self.fingerprint,
                "num_episodes": len(self.episode_ids), "episode_ids": list(self.episode_ids),
                "latents": self.latents, "frame_offsets": self.frame_offsets, "actions": self.actions,
                "action_offsets": self.action_offsets, "proprio": self.proprio, "grid": list(self.grid)}

    @classmethod
    def from_dict(cls, d: dict, path: str | Path) -> "LatentCache":
        keys = ("latents", "frame_offsets", "actions", "action_offsets", "proprio", "episode_ids",
                "grid", "pool_k", "encoder_sha256")
        for k in keys:
            if k not in d:
                raise CheckpointError(f"latent cache {path}: missing field {k!r}")
        return cls(d["latents"], d["frame_offsets"], d["actions"], d["action_offsets"], d["proprio"],
                   list(d["episode_ids"]), tuple(d["grid"]), d["pool_k"], d["encoder_sha256"],
                   d.get("dataset_fingerprint"))


def _stale_reason(d: dict, sha: str, pool_k: int | None, ds: EpisodeDataset, dtype: torch.dtype,
                  fingerprint: dict) -> str | None:
    """Why the cached dict ``d`` cannot be reused for this encoder/pooling/data/dtype, or None."""
    if d.get("encoder_sha256") != sha:
        return "the encoder changed"
    if d.get("pool_k") != pool_k:
        return f"pool_k {d.get('pool_k')} -> {pool_k}"
    if not isinstance(d.get("latents"), Tensor) or d["latents"].dtype != dtype:
        return f"dtype {getattr(d.get('latents'), 'dtype', None)} -> {dtype}"
    data = describe_change(d.get("dataset_fingerprint"), fingerprint)
    if data is not None:
        return f"the data changed ({data})"
    if d.get("num_episodes") != len(ds) or list(d.get("episode_ids", [])) != list(ds.episode_ids):
        return "the episode ids changed"
    return None


@torch.no_grad()
def build_latent_cache(
    dataset: EpisodeDataset,
    encoder: torch.nn.Module,
    encoder_path: str | Path | None,
    pool_k: int | None,
    out_dir: str | Path,
    batch_size: int = 128,
    dtype: torch.dtype = torch.float16,
    verbose: bool = True,
    fingerprint: dict | None = None,
) -> LatentCache:
    """Load ``<out_dir>/latent_cache.pt`` if it matches, else encode every episode and save.

    Args:
        dataset: the episodes to encode (all of them; splits are applied later).
        encoder: frozen encoder with ``encode(frames uint8 [B,T,H,W,3]) -> [B,T,N,D]`` and ``.grid``.
        encoder_path: the encoder file (its sha256 keys the cache); None keys it by
            :func:`~wmplan.worldmodel.registry.encoder_fingerprint` (type, config, weights).
        pool_k: pooled grid side, None keeps all tokens.
        batch_size: frames per encoder call.
        dtype: storage dtype of the latents (float16 halves memory; train casts to fp32).
        fingerprint: ``dataset_fingerprint(dataset.root)`` if the caller has it (else computed).
    """
    path = Path(out_dir) / CACHE_NAME
    fingerprint = dataset_fingerprint(dataset.root) if fingerprint is None else fingerprint
    sha = encoder_fingerprint(encoder) if encoder_path is None else file_sha256(encoder_path)
    if path.is_file():
        try:
            d = load_checkpoint(path, kind=CACHE_KIND)
        except CheckpointError as e:  # torn / foreign / non-finite / newer file: rebuild rather than fail
            if verbose:
                print(f"latent cache {path} is unusable ({e}); recomputing")
        else:
            reason = _stale_reason(d, sha, pool_k, dataset, dtype, fingerprint)
            if reason is None:
                if verbose:
                    print(f"reusing latent cache {path} ({len(dataset)} episodes)")
                return LatentCache.from_dict(d, path)
            if verbose:
                print(f"latent cache {path} is stale ({reason}); recomputing")
    if len(dataset) == 0:
        raise DatasetError(f"dataset {dataset.root}: no episodes to encode")
    encoder.eval()
    lat, acts, prop, fo, ao = [], [], [], [0], [0]
    bar = ProgressBar(None, total=len(dataset), desc="encoding episodes")
    for _, ep in dataset.iter_episodes():
        frames = torch.from_numpy(ep.frames)  # [T+1, H, W, 3]
        lat.append(encode_latents(encoder, frames[None], pool_k, chunk_size=batch_size, device="cpu", dtype=dtype)[0])
        acts.append(torch.from_numpy(np.asarray(ep.actions, dtype=np.float32)))
        prop.append(torch.from_numpy(np.asarray(ep.proprio, dtype=np.float32)))
        fo.append(fo[-1] + frames.shape[0])
        ao.append(ao[-1] + ep.length)
        bar.update(1)
    bar.close()
    cache = LatentCache(
        latents=torch.cat(lat), frame_offsets=torch.tensor(fo), actions=torch.cat(acts),
        action_offsets=torch.tensor(ao), proprio=torch.cat(prop), episode_ids=list(dataset.episode_ids),
        grid=pooled_grid(encoder.grid, pool_k), pool_k=pool_k, encoder_sha256=sha, fingerprint=fingerprint,
    )
    atomic_save(cache.to_dict(), path)
    if verbose:
        print(f"wrote latent cache {path}: latents {tuple(cache.latents.shape)} {dtype}")
    return cache
