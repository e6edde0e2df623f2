"""The world model planners see: frozen encoder + pooling + predictor + normalisation.

Saved and loaded as ONE file (``kind = "wmplan-world-model"``) holding only tensors and
plain Python types, so it loads with ``torch.load(weights_only=True)``::

    kind, version (FORMAT_VERSION), pool_k, frameskip, image_size, stats {action_mean, action_std,
    proprio_mean, proprio_std, latent_mean, latent_std}, action_low, action_high, meta,
    encoder   {"type": "vit", "config": {...}, "state_dict": {...}}
    predictor {"type": "ac",  "config": {...}, "state_dict": {...}}

The component ``type`` tags select the classes (``worldmodel/registry.py``); files without
them (all bundled models) load as ``vit`` + ``ac``. Loading checks every field a planner
relies on (finite weights and statistics, positive scales, shapes that fit the predictor) and
names the file and field; saving refuses non-finite tensors (``utils.atomic_save``).
Actions and proprio cross this API in env units; normalisation happens inside.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..checks import ConfigError, check_number, first_nonfinite
from .latents import encode_latents
from .pooling import pooled_grid
from .predictor import Rollout, head_disagreement
from .registry import FrameEncoder, component_record, load_component
from .utils import FORMAT_VERSION, CheckpointError, atomic_save, cpu_fp32, load_checkpoint, resolve_device

WORLD_MODEL_KIND = "wmplan-world-model"
_REQUIRED = ("encoder", "predictor", "pool_k", "frameskip", "stats", "action_low", "action_high", "meta")

__all__ = ["WorldModel", "Rollout", "WORLD_MODEL_KIND"]


def _as_tensor(x: Any, like: Tensor | None = None) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float32) if like is None else torch.as_tensor(x).to(like)


def stats_problem(stats: Any, action_dim: int, proprio_dim: int | None, tokens: int, dim: int) -> str | None:
    """What is wrong with normalisation statistics for a predictor of these sizes, in words
    naming the field (``stats.<name>``), or None. Scales must be positive: a zero std divides by zero."""
    if not isinstance(stats, dict):
        return f"field 'stats' must be a dict, got {type(stats).__name__}"
    want: dict[str, tuple[int, ...]] = {"action_mean": (action_dim,), "action_std": (action_dim,)}
    if proprio_dim is not None:
        want.update(proprio_mean=(proprio_dim,), proprio_std=(proprio_dim,))
    if (stats.get("latent_mean") is None) != (stats.get("latent_std") is None):
        have, lack = ("latent_mean", "latent_std") if stats.get("latent_std") is None else ("latent_std", "latent_mean")
        return f"field 'stats.{have}' is set but 'stats.{lack}' is missing (both or neither standardise latents)"
    if stats.get("latent_mean") is not None:
        want.update(latent_mean=(tokens, dim), latent_std=(tokens, dim))
    for k, shape in want.items():
        v = stats.get(k)
        if v is None:
            return f"missing field 'stats.{k}'"
        try:
            t = _as_tensor(v)
        except (TypeError, ValueError, RuntimeError) as e:
            return f"field 'stats.{k}' is not numeric ({type(v).__name__}: {e})"
        if t.numel() != math.prod(shape) or (len(shape) > 1 and tuple(t.shape) != shape):
            return f"field 'stats.{k}' has shape {tuple(t.shape)}, the predictor needs {shape}"
        if (idx := first_nonfinite(t)) is not None:
            return f"field 'stats.{k}' is not finite ({float(t[idx])} at index {list(idx)})"
        if k.endswith("_std") and not bool((t > 0).all()):
            i = int((t <= 0).flatten().nonzero()[0])
            return (f"field 'stats.{k}' must be > 0 everywhere (a zero scale divides by zero), "
                    f"got {float(t.flatten()[i])} at flat index {i}")
    return None


class WorldModel(nn.Module):
    """Encoder (frozen) + parameter-free pooling + action-conditioned predictor.

    Args:
        encoder: frozen registered encoder (:class:`~wmplan.worldmodel.registry.FrameEncoder`,
            e.g. the ``vit`` :class:`~wmplan.worldmodel.vit.VisionTransformer`).
        predictor: trained registered predictor, e.g. ``ac``
            :class:`~wmplan.worldmodel.predictor.ACPredictor` (its inputs are normalised
            actions/proprio).
        pool_k: pooled grid side (None keeps all patch tokens).
        frameskip: env actions per predictor step (the predictor's action is ``frameskip``
            consecutive env actions concatenated, ``A = frameskip * A_env``).
        action_low, action_high: env action bounds, ``[A_env]`` (tiled ``frameskip`` times
            here) or already ``[A]``.
        stats: ``action_mean``/``action_std`` ``[A]`` and, when proprio is used,
            ``proprio_mean``/``proprio_std`` ``[P]``; optional ``latent_mean``/``latent_std``
            ``[N, D]`` standardise the pooled latents (applied in :meth:`encode`, so the
            predictor, goal latents and energies all live in the standardised space).
        meta: free-form plain-Python info (seed, data dir, metrics...).

    Everything is frozen (``requires_grad=False``); gradients still flow to inputs such
    as actions, which is what gradient planners need.
    """

    def __init__(
        self,
        encoder: FrameEncoder,
        predictor: nn.Module,
        pool_k: int | None,
        frameskip: int,
        action_low: Tensor,
        action_high: Tensor,
        stats: dict[str, Tensor | None],
        meta: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor
        self.pool_k = None if pool_k is None else int(pool_k)
        self.frameskip = int(frameskip)
        self.meta = dict(meta or {})
        pc = predictor.config
        self.action_dim = pc.action_dim
        self.proprio_dim = pc.proprio_dim
        self.image_size = int(encoder.image_size)
        grid = pooled_grid(encoder.grid, self.pool_k)
        if grid[0] * grid[1] != pc.tokens_per_frame or encoder.embed_dim != pc.latent_dim:
            raise ValueError(f"WorldModel: pooled encoder tokens {grid} x {encoder.embed_dim} do not match predictor "
                             f"tokens_per_frame={pc.tokens_per_frame}, latent_dim={pc.latent_dim}")
        low, high = _as_tensor(action_low).flatten(), _as_tensor(action_high).flatten()
        if low.numel() * self.frameskip == self.action_dim:  # env bounds -> tile per sub-step
            low, high = low.repeat(self.frameskip), high.repeat(self.frameskip)
        if low.numel() != self.action_dim or high.numel() != self.action_dim:
            raise ValueError(f"WorldModel: action bounds have {low.numel()} entries, expected "
                             f"{self.action_dim} or {self.action_dim // self.frameskip} (env dim)")
        if not bool((low <= high).all()):
            raise ValueError(f"WorldModel: action_low > action_high at index {int((low > high).nonzero()[0])}")
        problem = stats_problem(stats, self.action_dim, self.proprio_dim, pc.tokens_per_frame, pc.latent_dim)
        if problem is not None:
            raise ValueError(f"WorldModel: {problem}")
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)
        self.register_buffer("action_mean", _as_tensor(stats["action_mean"]).flatten())
        self.register_buffer("action_std", _as_tensor(stats["action_std"]).flatten())
        if self.proprio_dim is not None:
            self.register_buffer("proprio_mean", _as_tensor(stats["proprio_mean"]).flatten())
            self.register_buffer("proprio_std", _as_tensor(stats["proprio_std"]).flatten())
        else:
            self.proprio_mean = self.proprio_std = None
        if stats.get("latent_mean") is not None:
            lm, lsd = _as_tensor(stats["latent_mean"]), _as_tensor(stats.get("latent_std"))
            self.register_buffer("latent_mean", lm)
            self.register_buffer("latent_std", lsd)
        else:
            self.latent_mean = self.latent_std = None
        self.requires_grad_(False)
        self.eval()

    # ---- properties ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.action_low.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the predictor weights (inputs are cast to it)."""
        return next(self.predictor.parameters()).dtype

    @property
    def grid(self) -> tuple[int, int]:
        """Latent token grid per frame."""
        return pooled_grid(self.encoder.grid, self.pool_k)

    def num_params(self) -> int:
        """Trainable size of the predictor (the encoder is frozen and shared)."""
        return self.predictor.num_params()

    # ---- encode / predict ----------------------------------------------------------------
    @torch.no_grad()
    def encode(self, frames: Tensor, chunk_size: int | None = 256) -> Tensor:
        """uint8 ``[B, T, H, W, 3]`` -> latents ``[B, T, N, D]`` (frozen encoder + pool + LN
        [+ standardisation when the model has latent stats]), by
        :func:`~wmplan.worldmodel.latents.encode_latents`, the function the latent cache
        that trained the predictor used too."""
        frames = torch.as_tensor(frames)
        if frames.dtype != torch.uint8:
            raise ValueError(f"WorldModel.encode: frames must be uint8 [B,T,H,W,3], got {frames.dtype}")
        self.encoder.eval()
        return encode_latents(self.encoder, frames, self.pool_k, self.latent_mean, self.latent_std,
                              chunk_size=chunk_size, dtype=self.dtype)

    def normalize_actions(self, actions: Tensor) -> Tensor:
        return (actions.to(self.action_mean) - self.action_mean) / self.action_std

    def normalize_proprio(self, proprio: Tensor | None) -> Tensor | None:
        if self.proprio_dim is None or proprio is None:
            return None
        return (proprio.to(self.proprio_mean) - self.proprio_mean) / self.proprio_std

    def denormalize_proprio(self, proprio: Tensor | None) -> Tensor | None:
        if proprio is None or self.proprio_dim is None:
            return None
        return proprio.to(self.proprio_mean) * self.proprio_std + self.proprio_mean

    def _check_proprio(self, proprio: Tensor | None, what: str) -> None:
        if self.proprio_dim is not None and proprio is None:
            raise ValueError(f"WorldModel.{what}: this model uses proprio (P={self.proprio_dim}); pass ctx_proprio")

    def rollout(
        self,
        ctx_latents: Tensor,
        ctx_proprio: Tensor | None,
        actions: Tensor,
        ctx_actions: Tensor | None = None,
        use_cache: bool = True,
    ) -> Rollout:
        """Predict ``H`` steps ahead.

        Args:
            ctx_latents: ``[B, Tc, N, D]`` (from :meth:`encode`).
            ctx_proprio: ``[B, Tc, P]`` env units, or None when ``proprio_dim`` is None
                (ignored then).
            actions: ``[M, H, A]`` env units, ``M = B * S``; ``actions[:, 0]`` is applied at
                the last context frame; row ``b*S + s`` uses context ``b``.
            ctx_actions: ``[B, Tc-1, A]`` env units, the actions between context frames
                (needed only when ``Tc > 1``).
        Returns:
            ``Rollout(latents [M,H,N,D], proprio [M,H,P] env units | None, disagreement [M,H] | None)``.
        """
        self._check_proprio(ctx_proprio, "rollout")
        dt = self.dtype
        out = self.predictor.rollout(
            ctx_latents.to(self.device, dt),
            None if self.proprio_dim is None else self.normalize_proprio(ctx_proprio).to(dt),
            self.normalize_actions(actions).to(dt),
            None if ctx_actions is None else self.normalize_actions(ctx_actions).to(dt),
            use_cache=use_cache,
        )
        return Rollout(out.latents, self.denormalize_proprio(out.proprio), out.disagreement)

    def rollout_bytes_per_row(self, horizon: int, ctx_len: int = 1) -> int:
        """Estimated peak bytes per action row of :meth:`rollout` (the predictor's estimate, or,
        for a predictor without one, its fp32 [H,N,D] output twice); used by planners'
        ``memory_budget_mb``."""
        estimate = getattr(self.predictor, "rollout_bytes_per_row", None)
        if estimate is not None:
            return int(estimate(horizon, ctx_len))
        return 2 * 4 * int(horizon) * self.predictor.config.tokens_per_frame * self.predictor.config.latent_dim

    def rollout_bytes_fixed(self, horizon: int, ctx_len: int = 1) -> int:
        """Estimated peak bytes of one :meth:`rollout` call independent of its rows (0 if the predictor has no estimate)."""
        estimate = getattr(self.predictor, "rollout_bytes_fixed", None)
        return 0 if estimate is None else int(estimate(horizon, ctx_len))

    def gradient_bytes_per_row(self, horizon: int, ctx_len: int = 1) -> int | None:
        """Peak bytes per row of a back-propagated rollout (the gradient planner's budget); None
        when the predictor has no estimate (planners then scale the no-grad one)."""
        estimate = getattr(self.predictor, "gradient_bytes_per_row", None)
        return None if estimate is None else int(estimate(horizon, ctx_len))

    def gradient_bytes_fixed(self, horizon: int, ctx_len: int = 1) -> int | None:
        """Per-call bytes of a back-propagated rollout; None when the predictor has no estimate."""
        estimate = getattr(self.predictor, "gradient_bytes_fixed", None)
        return None if estimate is None else int(estimate(horizon, ctx_len))

    def predict_next(self, latents: Tensor, proprio: Tensor | None, actions: Tensor) -> Rollout:
        """Teacher-forced one-step predictions (``TeacherForcedModel`` protocol).

        ``latents [M,T,N,D]``, ``proprio [M,T,P]|None`` and ``actions [M,T,A]`` (env units)
        -> ``Rollout`` whose ``latents[:, t]`` (head mean) predicts step ``t+1``.
        """
        self._check_proprio(proprio, "predict_next")
        dt = self.dtype
        pk, pp = self.predictor(
            latents.to(self.device, dt),
            None if self.proprio_dim is None else self.normalize_proprio(proprio).to(dt),
            self.normalize_actions(actions).to(dt),
        )
        mean = pk.mean(dim=2)
        dis = head_disagreement(pk, mean) if pk.shape[2] > 1 else None
        return Rollout(mean, self.denormalize_proprio(pp), dis)

    # ---- persistence -----------------------------------------------------------------------
    def state_for_save(self) -> dict[str, Any]:
        """The checkpoint dict (CPU fp32 tensors + plain Python types only)."""
        return {
            "kind": WORLD_MODEL_KIND,
            "version": FORMAT_VERSION,
            "encoder": component_record(self.encoder),
            "predictor": component_record(self.predictor),
            "pool_k": self.pool_k,
            "frameskip": self.frameskip,
            "image_size": int(self.image_size),
            "stats": {k: cpu_fp32(getattr(self, k)) for k in ("action_mean", "action_std", "proprio_mean",
                                                               "proprio_std", "latent_mean", "latent_std")},
            "action_low": cpu_fp32(self.action_low),
            "action_high": cpu_fp32(self.action_high),
            "meta": dict(self.meta),
        }

    def save(self, path: str | Path) -> None:
        """Atomically write the whole world model to one file; refuses (NonFiniteError, nothing
        written) if a weight or statistic is NaN/inf."""
        atomic_save(self.state_for_save(), path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> "WorldModel":
        """Load a file written by :meth:`save`; raises CheckpointError naming file and field."""
        ckpt = load_checkpoint(path, kind=WORLD_MODEL_KIND)  # also: version, finite tensors
        for f in _REQUIRED:
            if f not in ckpt:
                raise CheckpointError(f"checkpoint {path}: missing field {f!r}")
        try:
            check_number(ckpt["frameskip"], "frameskip", f"checkpoint {path}", low=1, integer=True)
            check_number(ckpt["pool_k"], "pool_k", f"checkpoint {path}", low=1, integer=True, allow_none=True)
        except ConfigError as e:
            raise CheckpointError(str(e)) from e
        for f in ("action_low", "action_high", "meta"):
            if ckpt[f] is None:
                raise CheckpointError(f"checkpoint {path}: field {f!r} is None")
        stats = ckpt["stats"]
        encoder = load_component("encoder", ckpt["encoder"], f"checkpoint {path}: field 'encoder'")
        predictor = load_component("predictor", ckpt["predictor"], f"checkpoint {path}: field 'predictor'")
        pc = predictor.config
        problem = stats_problem(stats, pc.action_dim, pc.proprio_dim, pc.tokens_per_frame, pc.latent_dim)
        if problem is not None:
            raise CheckpointError(f"checkpoint {path}: {problem} (predictor: action_dim={pc.action_dim}, "
                                  f"proprio_dim={pc.proprio_dim}, {pc.tokens_per_frame} tokens x {pc.latent_dim})")
        if ckpt.get("image_size") is not None and int(ckpt["image_size"]) != int(encoder.image_size):
            raise CheckpointError(f"checkpoint {path}: field 'image_size' is {ckpt['image_size']} but the encoder's "
                                  f"config makes {encoder.image_size}x{encoder.image_size} frames")
        try:
            wm = cls(encoder, predictor, ckpt["pool_k"], ckpt["frameskip"], ckpt["action_low"],
                     ckpt["action_high"], stats, ckpt["meta"])
        except (ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"checkpoint {path}: inconsistent fields: {e}") from e
        return wm.to(resolve_device(device))
