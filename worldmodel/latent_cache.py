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

**On-disk layout** (``ram_budget_mb`` set; datasets larger than RAM): the latents are not in
``latent_cache.pt`` but in a raw C-order file beside it, ``latent_cache.latents.<token>.bin``
(``latents_file``, ``latents_shape`` [F, N, D], ``latents_dtype`` in the ``.pt``; a fresh token
per build, so a killed rebuild never pairs an old ``.pt`` with new bytes). Episodes are encoded
and appended one at a time (never all latents in RAM). Loading keeps them in RAM when their
bytes fit ``ram_budget_mb`` and memory-maps them otherwise (:attr:`LatentCache.memmapped`;
:class:`~wmplan.worldmodel.ac_training.WindowSampler` then gathers windows from the map).
An on-disk cache is reused under any budget; an in-file one only with ``ram_budget_mb=None``.

It is reused when the encoder key (the sha256 of the encoder file, or of the encoder's
type/config/weights when it has no file), ``pool_k``, the storage dtype, the episode ids and
the dataset fingerprint match; otherwise it is recomputed, and the message says why (data
re-collected at the same path, or another task's data there, counts as changed).
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .data import DatasetError, EpisodeDataset
from .fingerprint import dataset_fingerprint, describe_change, file_sha256
from .latents import encode_latents
from .pooling import pooled_grid
from .registry import encoder_fingerprint
from ..checks import check_finite
from ..io import atomic_write_bytes
from .utils import FORMAT_VERSION, CheckpointError, ProgressBar, atomic_save, load_checkpoint

CACHE_KIND = "wmplan-latent-cache"
CACHE_NAME = "latent_cache.pt"
LATENTS_GLOB = "latent_cache.latents.*.bin"  # the on-disk layout's latents files
_DTYPES = {"float16": (torch.float16, np.float16), "float32": (torch.float32, np.float32)}


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
    latents_file: str | None = None  # on-disk layout: the latents file's name (beside the .pt)
    memmapped: bool = False  # latents is a read-only view of a memory map (not held in RAM)

    def index_of(self, episode_id: int) -> int:
        return self.episode_ids.index(episode_id)

    def episode_length(self, e: int) -> int:
        """Number of actions T of the e-th cached episode (by position, not id)."""
        return int(self.action_offsets[e + 1] - self.action_offsets[e])

    @property
    def latent_bytes(self) -> int:
        """Bytes of all latents ``[F, N, D]`` (held in RAM unless :attr:`memmapped`)."""
        return self.latents.numel() * self.latents.element_size()

    def to_dict(self) -> dict:
        d = {"kind": CACHE_KIND, "version": FORMAT_VERSION, "encoder_sha256": self.encoder_sha256,
             "pool_k": self.pool_k, "dataset_fingerprint": self.fingerprint,
             "num_episodes": len(self.episode_ids), "episode_ids": list(self.episode_ids),
             "latents": self.latents, "frame_offsets": self.frame_offsets, "actions": self.actions,
             "action_offsets": self.action_offsets, "proprio": self.proprio, "grid": list(self.grid)}
        if self.latents_file is not None:  # on-disk layout: the .pt holds the latents' shape/dtype, not them
            del d["latents"]
            d.update(latents_file=self.latents_file, latents_shape=list(self.latents.shape),
                     latents_dtype=str(self.latents.dtype).removeprefix("torch."))
        return d

    @classmethod
    def from_dict(cls, d: dict, path: str | Path, ram_budget_mb: float | None = None) -> "LatentCache":
        """The cache of a loaded ``.pt`` dict; on-disk latents are read into RAM when their bytes
        fit ``ram_budget_mb`` (or it is None) and memory-mapped read-only otherwise."""
        memmapped, name = False, d.get("latents_file")
        if name is not None:
            d = {**d, "latents": None}
            lat, memmapped = _open_latents(Path(path).parent, d, ram_budget_mb)
            d["latents"] = lat
        keys = ("latents", "frame_offsets", "actions", "action_offsets", "proprio", "episode_ids",
                "grid", "pool_k", "encoder_sha256")
        for k in keys:
            if k not in d:
                raise CheckpointError(f"latent cache {path}: missing field {k!r}")
        return cls(d["latents"], d["frame_offsets"], d["actions"], d["action_offsets"], d["proprio"],
                   list(d["episode_ids"]), tuple(d["grid"]), d["pool_k"], d["encoder_sha256"],
                   d.get("dataset_fingerprint"), name, memmapped)


def _latents_spec(d: dict) -> tuple[tuple[int, ...], str]:
    """``(shape, dtype name)`` of an on-disk cache's latents (CheckpointError if malformed)."""
    shape, dt = d.get("latents_shape"), d.get("latents_dtype")
    if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(isinstance(x, int) and x >= 0 for x in shape)) \
            or dt not in _DTYPES:
        raise CheckpointError(f"latent cache: fields 'latents_shape' {shape!r} / 'latents_dtype' {dt!r} are malformed")
    return tuple(shape), dt


def _latents_path_problem(folder: Path, d: dict) -> str | None:
    """Why the latents file of an on-disk cache dict is unusable (missing, wrong size), or None."""
    shape, dt = _latents_spec(d)
    f = folder / str(d["latents_file"])
    want = int(np.prod(shape)) * np.dtype(_DTYPES[dt][1]).itemsize
    if not f.is_file():
        return f"its latents file {f.name} is missing"
    if f.stat().st_size != want:
        return f"its latents file {f.name} has {f.stat().st_size} bytes, expected {want} (torn?)"
    return None


def _open_latents(folder: Path, d: dict, ram_budget_mb: float | None) -> tuple[Tensor, bool]:
    """The latents ``[F, N, D]`` of an on-disk cache: in RAM if they fit the budget, else a
    copy-on-write memory map (pages are read on access; nothing is written back)."""
    problem = _latents_path_problem(folder, d)
    if problem is not None:
        raise CheckpointError(f"latent cache in {folder}: {problem}")
    shape, dt = _latents_spec(d)
    return open_raw(folder / str(d["latents_file"]), shape, _DTYPES[dt][1], ram_budget_mb)


def open_raw(path: str | Path, shape: tuple[int, ...], dtype: np.dtype | type, ram_budget_mb: float | None
             ) -> tuple[Tensor, bool]:
    """A raw C-order array file of ``shape``/``dtype`` as a tensor: read into RAM when its bytes
    fit ``ram_budget_mb`` (or it is None), else a copy-on-write memory map (pages are read on
    access; nothing is ever written back). Returns ``(tensor, memmapped)``."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if ram_budget_mb is None or nbytes <= ram_budget_mb * 2**20 or nbytes == 0:
        return torch.from_numpy(np.fromfile(path, dtype=dtype).reshape(shape)), False
    return torch.from_numpy(np.memmap(path, dtype=dtype, mode="c", shape=tuple(shape))), True


def _stale_reason(d: dict, sha: str, pool_k: int | None, ds: EpisodeDataset, dtype: torch.dtype,
                  fingerprint: dict, folder: Path, ram_budget_mb: float | None = None) -> str | None:
    """Why the cached dict ``d`` cannot be reused for this encoder/pooling/data/dtype/budget, or None."""
    if d.get("encoder_sha256") != sha:
        return "the encoder changed"
    if d.get("pool_k") != pool_k:
        return f"pool_k {d.get('pool_k')} -> {pool_k}"
    if d.get("latents_file") is not None:  # on-disk layout: usable under any budget
        try:
            problem = _latents_path_problem(folder, d)
        except CheckpointError as e:
            return str(e)
        if problem is not None:
            return problem
        if _DTYPES[d["latents_dtype"]][0] != dtype:
            return f"dtype torch.{d['latents_dtype']} -> {dtype}"
    elif ram_budget_mb is not None:
        return "it holds its latents in the file (in RAM), and ram_budget_mb is set (streaming to disk)"
    elif not isinstance(d.get("latents"), Tensor) or d["latents"].dtype != dtype:
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
    ram_budget_mb: float | None = None,
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
        ram_budget_mb: None keeps today's layout (all latents in ``latent_cache.pt``, in RAM);
            a number streams them to disk episode by episode (module docstring) and memory-maps
            them when their bytes exceed the budget.
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
            reason = _stale_reason(d, sha, pool_k, dataset, dtype, fingerprint, path.parent, ram_budget_mb)
            if reason is None:
                cache = LatentCache.from_dict(d, path, ram_budget_mb)
                if verbose:
                    print(f"reusing latent cache {path} ({len(dataset)} episodes{_where(cache)})")
                return cache
            if verbose:
                print(f"latent cache {path} is stale ({reason}); recomputing")
    if len(dataset) == 0:
        raise DatasetError(f"dataset {dataset.root}: no episodes to encode")
    encoder.eval()
    grid = pooled_grid(encoder.grid, pool_k)
    if ram_budget_mb is not None:
        return _encode_to_disk(dataset, encoder, pool_k, path, batch_size, dtype, verbose, fingerprint, sha, grid,
                               ram_budget_mb)
    lat: list[Tensor] = []
    acts, ao, prop, fo = _encode_each(dataset, encoder, pool_k, batch_size, dtype, verbose,
                                      lambda eid, z: lat.append(z), "encoding episodes")
    cache = LatentCache(
        latents=torch.cat(lat), frame_offsets=fo, actions=acts,
        action_offsets=ao, proprio=prop, episode_ids=list(dataset.episode_ids),
        grid=grid, pool_k=pool_k, encoder_sha256=sha, fingerprint=fingerprint,
    )
    atomic_save(cache.to_dict(), path)
    if verbose:
        print(f"wrote latent cache {path}: latents {tuple(cache.latents.shape)} {dtype}")
    return cache


def _encode_each(dataset: EpisodeDataset, encoder: torch.nn.Module, pool_k: int | None, batch_size: int,
                 dtype: torch.dtype, verbose: bool, sink: Callable[[int, Tensor], None],
                 desc: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Encode the episodes one at a time, handing each one's latents ``[T+1, N, D]`` to
    ``sink(episode_id, latents)``; returns ``(actions [F-E, A], action_offsets [E+1],
    proprio [F, P], frame_offsets [E+1])`` of all episodes."""
    acts, prop, fo, ao = [], [], [0], [0]
    bar = ProgressBar(None, total=len(dataset), desc=desc, disable=not verbose)
    for eid, ep in dataset.iter_episodes():
        frames = torch.from_numpy(ep.frames)  # [T+1, H, W, 3]
        sink(eid, encode_latents(encoder, frames[None], pool_k, chunk_size=batch_size, device="cpu", dtype=dtype)[0])
        acts.append(torch.from_numpy(np.asarray(ep.actions, dtype=np.float32)))
        prop.append(torch.from_numpy(np.asarray(ep.proprio, dtype=np.float32)))
        fo.append(fo[-1] + frames.shape[0])
        ao.append(ao[-1] + ep.length)
        bar.update(1)
    bar.close()
    return torch.cat(acts), torch.tensor(ao), torch.cat(prop), torch.tensor(fo)


def _where(cache: LatentCache) -> str:
    """Where the latents of a reused cache live, for the message ('' for the in-file layout)."""
    if cache.latents_file is None:
        return ""
    return f", memory-mapped from {cache.latents_file}" if cache.memmapped else f", read into RAM from {cache.latents_file}"


def _encode_to_disk(dataset: EpisodeDataset, encoder: torch.nn.Module, pool_k: int | None, path: Path,
                    batch_size: int, dtype: torch.dtype, verbose: bool, fingerprint: dict, sha: str,
                    grid: tuple[int, int], ram_budget_mb: float) -> LatentCache:
    """Encode episode by episode, appending each one's latents ``[T+1, N, D]`` to a new latents
    file (atomic: a temp file renamed into place), then write the ``.pt`` and drop older latents
    files. Peak RAM: one episode's frames and latents (plus actions/proprio of all episodes)."""
    name = f"latent_cache.latents.{uuid.uuid4().hex[:12]}.bin"
    nd: list[tuple[int, ...]] = [(0, 0)]
    rows: list[tuple[Tensor, ...]] = []

    def put(f, eid: int, z: Tensor) -> None:
        check_finite(z, "latents", f"latent cache: episode {eid} of {dataset.root}")
        nd[0] = tuple(z.shape[1:])
        f.write(z.contiguous().numpy().tobytes())

    atomic_write_bytes(path.parent / name, lambda f: rows.append(_encode_each(
        dataset, encoder, pool_k, batch_size, dtype, verbose, lambda eid, z: put(f, eid, z),
        "encoding episodes (to disk)")))
    acts, ao, prop, fo = rows[0]
    shape = (int(fo[-1]), *nd[0])
    d = {"latents_file": name, "latents_shape": list(shape), "latents_dtype": str(dtype).removeprefix("torch.")}
    lat, memmapped = _open_latents(path.parent, d, ram_budget_mb)
    cache = LatentCache(
        latents=lat, frame_offsets=fo, actions=acts, action_offsets=ao,
        proprio=prop, episode_ids=list(dataset.episode_ids), grid=grid, pool_k=pool_k,
        encoder_sha256=sha, fingerprint=fingerprint, latents_file=name, memmapped=memmapped,
    )
    atomic_save(cache.to_dict(), path)
    for old in path.parent.glob(LATENTS_GLOB):  # latents files of earlier builds
        if old.name != name:
            old.unlink(missing_ok=True)
    if verbose:
        print(f"wrote latent cache {path}: latents {shape} {dtype} ({cache.latent_bytes / 2**20:.1f} MiB) "
              f"in {name}{'; memory-mapped' if memmapped else '; in RAM'} (ram_budget_mb={ram_budget_mb:g})")
    return cache
