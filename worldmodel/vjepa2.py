"""Released V-JEPA 2 / V-JEPA 2-AC checkpoints: load them, reproduce their outputs, plan with them.

Files (see ``.notes/vjepa2.md``): ``vitl.pt``, ``vith.pt``, ``vitg.pt``, ``vitg-384.pt`` (video
encoders + mask predictor) and ``vjepa2-ac-vitg.pt`` (ViT-g encoder + action-conditioned
predictor). Each is a dict ``{encoder, target_encoder, predictor, opt, scaler, epoch, ...}``
of state dicts whose keys start with ``module.backbone.`` (pretraining files) or ``module.``
(the AC file). Entry points:

- :func:`load_official_encoder` -> :class:`~wmplan.worldmodel.vjepa2_encoder.OfficialViT`
  (``forward``: clip features ``[B, T/2*H/16*W/16, D]``; ``encode``: raw per-frame
  features ``[B, T, N, D]``; a registered wmplan encoder, type ``vjepa2``);
- :func:`load_official_ac_predictor` -> :class:`~wmplan.worldmodel.vjepa2_predictor.OfficialACPredictor`;
- :func:`load_official_world_model` -> :class:`OfficialWorldModel` (what wmplan planners use);
- :func:`compute_new_pose`: the analytic pose update of the release's planning loop.

Sizes come from tensor shapes; head counts (not visible in the tensors) default from the
released widths (:data:`DEFAULT_HEADS`). Loading is strict: a missing or misshapen tensor
raises :class:`~wmplan.worldmodel.utils.CheckpointError` naming the key; only keys the
release itself ignores (:data:`IGNORED_KEYS`) may be left over. Files are read with
``torch.load(weights_only=True)`` (memory-mapped where the format allows, so the optimiser
state of a multi-GB file is never read).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import first_nonfinite
from ..protocols import Rollout
from .latents import encode_latents
from .utils import CheckpointError, resolve_device
from .vjepa2_encoder import OfficialViT, OfficialViTConfig
from .vjepa2_predictor import OfficialACConfig, OfficialACPredictor, StateFn

__all__ = ["load_official_encoder", "load_official_ac_predictor", "load_official_world_model", "compute_new_pose",
           "OfficialWorldModel", "official_action_box", "read_official_file", "DEFAULT_HEADS", "POSE_UPDATES"]

DEFAULT_HEADS = {1024: 16, 1280: 16, 1408: 22}  # ViT-L, ViT-H, ViT-g (and the AC predictor, 1024 wide)
IGNORED_KEYS = frozenset({"pos_embed"})  # in some files, unused by the RoPE models (the release loads non-strictly)
_PREFIXES = ("module.", "backbone.")
POSE_UPDATES = ("auto", "pose7", "additive", "constant")


# ---------------------------------------------------------------------- reading files
def read_official_file(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, read with ``weights_only=True`` on CPU (memory-mapped when possible).

    Raises CheckpointError naming the file when it is missing, unreadable or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
        ckpt = None
    except Exception as e:  # torch raises several types for torn/foreign files
        raise CheckpointError(f"could not read checkpoint {path}: {type(e).__name__}: {e}") from e
    if ckpt is None:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # as above
            raise CheckpointError(f"could not read checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict, got {type(ckpt).__name__}")
    return ckpt


def _state_dict(ckpt: dict[str, Any], key: str | None, default: tuple[str, ...], where: str) -> tuple[str, dict[str, Tensor]]:
    """(field used, state dict with the release's key prefixes stripped).

    ``key`` None takes the first of ``default`` present; a file that is itself a flat state
    dict (all values tensors) is used as it is.
    """
    if key is None:
        key = next((k for k in default if k in ckpt), None)
        if key is None and ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
            key, sd = "<state dict>", ckpt
        elif key is None:
            raise CheckpointError(f"{where}: none of the fields {list(default)} is in the file "
                                  f"(fields: {sorted(map(str, ckpt))[:12]})")
    if key != "<state dict>":
        if key not in ckpt:
            raise CheckpointError(f"{where}: no field {key!r} (fields: {sorted(map(str, ckpt))[:12]})")
        sd = ckpt[key]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{where}: field {key!r} must be a state dict, got {type(sd).__name__}")
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        name = str(k)
        while name.startswith(_PREFIXES):
            name = name[len(next(p for p in _PREFIXES if name.startswith(p))):]
        if name in out:
            raise CheckpointError(f"{where}: keys {k!r} and another both map to {name!r} after stripping prefixes")
        out[name] = v
    return key, out


def _need(sd: dict[str, Tensor], key: str, ndim: int, where: str) -> Tensor:
    """The tensor ``key`` with ``ndim`` dims, or CheckpointError naming it."""
    t = sd.get(key)
    if not isinstance(t, Tensor):
        near = sorted(sd)[:6]
        raise CheckpointError(f"{where}: missing tensor {key!r} (keys start {near}); "
                              "is this the right file and field (prefixes 'module.'/'backbone.' are stripped)?")
    if t.dim() != ndim:
        raise CheckpointError(f"{where}: tensor {key!r} has shape {tuple(t.shape)}, expected {ndim} dims")
    return t


def _depth(sd: dict[str, Tensor], prefix: str, where: str) -> int:
    ids = {int(m.group(1)) for k in sd if (m := re.match(rf"{re.escape(prefix)}\.(\d+)\.", k))}
    if not ids:
        raise CheckpointError(f"{where}: no '{prefix}.<i>.*' tensors (keys start {sorted(sd)[:6]})")
    if ids != set(range(len(ids))):
        missing = sorted(set(range(max(ids) + 1)) - ids)
        raise CheckpointError(f"{where}: '{prefix}' blocks {missing} are missing")
    return len(ids)


def _heads(width: int, given: int | None, what: str, where: str) -> int:
    if given is not None:
        return int(given)
    if width not in DEFAULT_HEADS:
        raise CheckpointError(f"{where}: {what} width {width} is not a released size {sorted(DEFAULT_HEADS)}; "
                              f"pass its number of attention heads ({what}_num_heads / num_heads)")
    return DEFAULT_HEADS[width]


def _load_strict(module: nn.Module, sd: dict[str, Tensor], where: str) -> None:
    """Copy every weight of ``module`` from ``sd``; any missing, misshapen, non-finite or
    unexpected tensor (beyond :data:`IGNORED_KEYS`) raises CheckpointError naming the key."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise CheckpointError(f"{where}: missing tensor(s) {missing[:4]}{' ...' if len(missing) > 4 else ''} "
                              f"({len(missing)} in all)")
    unexpected = [k for k in sd if k not in own and k not in IGNORED_KEYS]
    if unexpected:
        raise CheckpointError(f"{where}: unexpected tensor(s) {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''} "
                              f"({len(unexpected)} in all) for the sizes read from the file")
    for k, ref in own.items():
        t = sd[k]
        if not isinstance(t, Tensor) or t.shape != ref.shape:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise CheckpointError(f"{where}: tensor {k!r} is {got}, expected {tuple(ref.shape)}")
        if t.is_floating_point() and (idx := first_nonfinite(t)) is not None:
            raise CheckpointError(f"{where}: tensor {k!r} is not finite at index {list(idx)}")
    module.load_state_dict({k: sd[k] for k in own}, strict=True)


# ---------------------------------------------------------------------- building modules
def _encoder_from(sd: dict[str, Tensor], num_heads: int | None, img_size: int | None, where: str) -> OfficialViT:
    w = _need(sd, "patch_embed.proj.weight", 5, where)  # [D, C, t, p, p]
    D, C, t, p, p2 = w.shape
    if p != p2:
        raise CheckpointError(f"{where}: non-square patches {tuple(w.shape)} in 'patch_embed.proj.weight'")
    cfg = OfficialViTConfig(embed_dim=D, depth=_depth(sd, "blocks", where), num_heads=_heads(D, num_heads, "encoder", where),
                            mlp_hidden=_need(sd, "blocks.0.mlp.fc1.weight", 2, where).shape[0],
                            img_size=int(img_size or 256), patch_size=p, tubelet=t, in_chans=C)
    enc = OfficialViT(cfg)
    _load_strict(enc, sd, where)
    return enc.eval().requires_grad_(False)


def _predictor_from(sd: dict[str, Tensor], num_heads: int | None, grid: tuple[int, int], where: str) -> OfficialACPredictor:
    if "action_encoder.weight" not in sd and any(k.startswith("mask_tokens") for k in sd):
        raise CheckpointError(f"{where}: this is a mask-denoising predictor (pretraining file), not a V-JEPA 2-AC "
                              "action-conditioned predictor; use vjepa2-ac-vitg.pt")
    emb = _need(sd, "predictor_embed.weight", 2, where)  # [E, D]
    E, D = emb.shape
    ext = sd.get("extrinsics_encoder.weight")
    cfg = OfficialACConfig(
        latent_dim=D, embed_dim=E, depth=_depth(sd, "predictor_blocks", where),
        num_heads=_heads(E, num_heads, "predictor", where),
        mlp_hidden=_need(sd, "predictor_blocks.0.mlp.fc1.weight", 2, where).shape[0],
        action_dim=_need(sd, "action_encoder.weight", 2, where).shape[1],
        state_dim=_need(sd, "state_encoder.weight", 2, where).shape[1],
        grid=grid, extrinsics_dim=None if not isinstance(ext, Tensor) else int(ext.shape[1]))
    pred = OfficialACPredictor(cfg)
    _load_strict(pred, sd, where)
    return pred.eval().requires_grad_(False)


def load_official_encoder(
    path: str | Path, *, checkpoint_key: str | None = None, num_heads: int | None = None,
    img_size: int | None = None, device: str | torch.device = "cpu",
) -> OfficialViT:
    """The V-JEPA 2 encoder of an official file, frozen, in eval mode.

    Args:
        path: ``vitl.pt`` ... ``vjepa2-ac-vitg.pt`` or any file in that layout.
        checkpoint_key: the field holding the encoder; default ``target_encoder`` when present
            (the EMA encoder the release evaluates), else ``encoder``.
        num_heads: attention heads; default from the width (1024 -> 16, 1280 -> 16, 1408 -> 22),
            required for any other width.
        img_size: frame side in pixels (default 256; 384 for ``vitg-384.pt``).
    Returns:
        :class:`OfficialViT`: ``forward(x [B,3,T,H,W] ImageNet-normalised) -> [B, T/2*H/16*W/16, D]``,
        ``encode(frames uint8 [B,T,H,W,3]) -> [B,T,N,D]`` (raw per-frame features).
    """
    ckpt = read_official_file(path)
    key, sd = _state_dict(ckpt, checkpoint_key, ("target_encoder", "encoder"), f"checkpoint {path}")
    return _encoder_from(sd, num_heads, img_size, f"checkpoint {path}: {key}").to(resolve_device(device))


def load_official_ac_predictor(
    path: str | Path, *, num_heads: int | None = None, img_size: int | None = None, device: str | torch.device = "cpu",
) -> OfficialACPredictor:
    """The V-JEPA 2-AC predictor (field ``predictor``) of ``vjepa2-ac-vitg.pt`` or a file in its layout.

    ``num_heads`` defaults from the width (1024 -> 16); the frame grid is ``img_size`` (default
    256) over the patch size of the file's encoder (16 when the file has none).
    Returns :class:`OfficialACPredictor`, frozen: ``forward(x [B,T*N,D], actions [B,T,A],
    states [B,T,S]) -> [B,T*N,D]`` (block t predicts frame t+1).
    """
    ckpt = read_official_file(path)
    return _predictor_in(ckpt, num_heads, img_size, path).to(resolve_device(device))


def _predictor_in(ckpt: dict[str, Any], num_heads: int | None, img_size: int | None, path: str | Path,
                  patch: int | None = None) -> OfficialACPredictor:
    if patch is None:
        enc = next((ckpt[k] for k in ("target_encoder", "encoder") if isinstance(ckpt.get(k), dict)), {})
        w = next((v for k, v in enc.items() if str(k).endswith("patch_embed.proj.weight")), None)
        patch = int(w.shape[-1]) if isinstance(w, Tensor) else 16
    side = int(img_size or 256)
    if side % patch:
        raise CheckpointError(f"checkpoint {path}: img_size={side} is not a multiple of the patch size {patch}")
    key, sd = _state_dict(ckpt, "predictor", ("predictor",), f"checkpoint {path}")
    return _predictor_from(sd, num_heads, (side // patch, side // patch), f"checkpoint {path}: {key}")


def load_official_world_model(
    path: str | Path, *, encoder_num_heads: int | None = None, predictor_num_heads: int | None = None,
    img_size: int | None = None, device: str | torch.device = "cpu",
) -> "OfficialWorldModel":
    """Encoder (``target_encoder``) + AC predictor of one file as a wmplan world model (see
    :class:`OfficialWorldModel`); the file is read once."""
    ckpt = read_official_file(path)
    key, sd = _state_dict(ckpt, None, ("target_encoder", "encoder"), f"checkpoint {path}")
    enc = _encoder_from(sd, encoder_num_heads, img_size, f"checkpoint {path}: {key}")
    pred = _predictor_in(ckpt, predictor_num_heads, enc.image_size, path, patch=enc.cfg.patch_size)
    if pred.config.latent_dim != enc.embed_dim:
        raise CheckpointError(f"checkpoint {path}: predictor reads {pred.config.latent_dim}-wide features, "
                              f"the encoder gives {enc.embed_dim}")
    meta = {"source": str(path), "format": "vjepa2", "epoch": ckpt.get("epoch") if isinstance(ckpt.get("epoch"), int) else None}
    return OfficialWorldModel(enc, pred, meta=meta).to(resolve_device(device))


# ---------------------------------------------------------------------- pose update
def _euler_xyz_to_matrix(a: Tensor) -> Tensor:
    """Extrinsic x-y-z Euler angles ``[..., 3]`` -> rotation ``Rz(c) Ry(b) Rx(a)`` ``[..., 3, 3]``."""
    cx, cy, cz = a.cos().unbind(-1)
    sx, sy, sz = a.sin().unbind(-1)
    rows = [
        [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx],
        [sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx],
        [-sy, cy * sx, cy * cx],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def _matrix_to_euler_xyz(m: Tensor) -> Tensor:
    """Rotation ``[..., 3, 3]`` -> extrinsic x-y-z Euler angles ``[..., 3]`` in [-pi, pi), y in
    [-pi/2, pi/2], with scipy's conventions (``Rotation.as_euler("xyz")``, which the release
    uses): within 1e-7 rad of gimbal lock z is set to 0 and x carries the remaining angle."""
    y = torch.atan2(-m[..., 2, 0], torch.hypot(m[..., 0, 0], m[..., 1, 0]))
    lock = (torch.pi / 2 - y.abs()) <= 1e-7
    x = torch.where(lock, torch.atan2(-m[..., 1, 2], m[..., 1, 1]), torch.atan2(m[..., 2, 1], m[..., 2, 2]))
    z = torch.where(lock, torch.zeros_like(y), torch.atan2(m[..., 1, 0], m[..., 0, 0]))
    return torch.remainder(torch.stack([x, y, z], dim=-1) + torch.pi, 2 * torch.pi) - torch.pi


def compute_new_pose(pose: Tensor, action: Tensor) -> Tensor:
    """The release's analytic end-effector update, batched in torch.

    pose ``[M, 1, 7]`` (xyz, extrinsic xyz Euler angles, gripper closedness), action
    ``[M, 1, 7]`` (delta xyz, delta Euler angles, delta gripper) -> ``[M, 1, 7]``: xyz added;
    rotation ``R(delta) @ R(theta)`` turned back into Euler angles; gripper added then
    clipped to [0, 1]. Computed in float64, returned in ``pose``'s dtype and device.
    """
    if pose.shape[-1] != 7 or action.shape[-1] != 7 or pose.shape != action.shape:
        raise ValueError(f"compute_new_pose: pose and action must both be [M,1,7], got {tuple(pose.shape)} / {tuple(action.shape)}")
    p, a = pose.double(), action.double()
    xyz = p[..., :3] + a[..., :3]
    rot = _euler_xyz_to_matrix(a[..., 3:6]) @ _euler_xyz_to_matrix(p[..., 3:6])
    grip = (p[..., 6:] + a[..., 6:]).clamp(0.0, 1.0)
    return torch.cat([xyz, _matrix_to_euler_xyz(rot), grip], dim=-1).to(pose.dtype)


def official_action_box(maxnorm: float = 0.075, gripper: float = 0.75) -> tuple[Tensor, Tensor]:
    """The release's CEM search box for 7-D actions: delta xyz in ``+-maxnorm``, no rotation
    (low = high = 0), gripper delta in ``+-gripper`` -> (low [7], high [7])."""
    high = torch.tensor([maxnorm] * 3 + [0.0] * 3 + [gripper])
    return -high, high


# ---------------------------------------------------------------------- the world model
class OfficialWorldModel(nn.Module):
    """Frozen V-JEPA 2 encoder + V-JEPA 2-AC predictor behind wmplan's world-model protocol.

    - ``encode(frames uint8 [B,T,H,W,3]) -> [B,T,N,D]``: per-frame features, layer-normed
      (no affine), as the release's planning wrapper (``encode_latents`` with ``pool_k=None``).
    - ``rollout(ctx_latents [B,Tc,N,D], ctx_proprio [B,Tc,S], actions [M,H,A], ctx_actions=None)
      -> Rollout(latents [M,H,N,D], proprio [M,H,S])``: the release's planning rollout
      (:meth:`OfficialACPredictor.rollout`), KV-cached unless ``use_cache`` is False.
    - ``action_low``/``action_high`` ``[A]``: :func:`official_action_box` for 7-D actions, else
      ``[-1, 1]``; replace them with :meth:`set_action_bounds` (``scripts/plan.py`` uses the env's).
    - ``pose_update`` (how the state advances in a rollout; the predictor predicts none):
      ``"pose7"`` :func:`compute_new_pose` (7-D states and actions: the release),
      ``"additive"`` state + action (equal dims), ``"constant"`` the state is held;
      ``"auto"`` picks the first that fits, in that order.
    """

    def __init__(self, encoder: OfficialViT, predictor: OfficialACPredictor, meta: dict[str, Any] | None = None,
                 pose_update: str = "auto", use_cache: bool = True):
        super().__init__()
        self.encoder, self.predictor = encoder, predictor
        self.meta = dict(meta or {})
        pc = predictor.config
        self.action_dim, self.proprio_dim = pc.action_dim, pc.state_dim
        self.frameskip = 1
        self.image_size = encoder.image_size
        self.use_cache = use_cache
        self.pose_update = "auto"
        self.set_pose_update(pose_update)
        low, high = official_action_box() if pc.action_dim == 7 else (-torch.ones(pc.action_dim), torch.ones(pc.action_dim))
        self.register_buffer("action_low", low.float(), persistent=False)
        self.register_buffer("action_high", high.float(), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def set_pose_update(self, mode: str) -> None:
        """Choose how rollouts advance the state (see the class docstring); raises ValueError
        naming the dims when ``mode`` does not fit them."""
        if mode not in POSE_UPDATES:
            raise ValueError(f"pose_update={mode!r}; use one of {POSE_UPDATES}")
        a, s = self.action_dim, self.proprio_dim
        fits = {"pose7": a == s == 7, "additive": a == s, "constant": True}
        if mode == "auto":
            mode = next(m for m in ("pose7", "additive", "constant") if fits[m])
        if not fits[mode]:
            raise ValueError(f"pose_update={mode!r} does not fit actions of {a} and states of {s} dims")
        self.pose_update = mode

    @property
    def grid(self) -> tuple[int, int]:
        return self.predictor.config.grid

    def num_params(self) -> int:
        """Predictor parameters (as ``WorldModel.num_params``)."""
        return self.predictor.num_params()

    def set_action_bounds(self, low: Tensor | Any, high: Tensor | Any) -> None:
        """Replace the planner's search box: low, high ``[A]`` (finite, low <= high)."""
        lo = torch.as_tensor(low, dtype=torch.float32).reshape(-1)
        hi = torch.as_tensor(high, dtype=torch.float32).reshape(-1)
        if lo.shape != (self.action_dim,) or hi.shape != (self.action_dim,):
            raise ValueError(f"action bounds must be [{self.action_dim}], got {tuple(lo.shape)} / {tuple(hi.shape)}")
        if not bool(torch.isfinite(lo).all() and torch.isfinite(hi).all() and (lo <= hi).all()):
            raise ValueError(f"action bounds must be finite with low <= high, got {lo.tolist()} / {hi.tolist()}")
        self.action_low = lo.to(self.action_low.device)
        self.action_high = hi.to(self.action_high.device)

    def next_state(self, state: Tensor, action: Tensor) -> Tensor:
        """state ``[M, S]``, action ``[M, A]`` -> ``[M, S]`` by ``pose_update``."""
        if self.pose_update == "pose7":
            return compute_new_pose(state[:, None], action[:, None].to(state.dtype))[:, 0]
        if self.pose_update == "additive":
            return state + action.to(state.dtype)
        return state

    @torch.no_grad()
    def encode(self, frames: Tensor, chunk_size: int | None = 64) -> Tensor:
        """uint8 ``[B, T, H, W, 3]`` (``image_size`` square) -> layer-normed features ``[B, T, N, D]``."""
        return encode_latents(self.encoder, frames, None, chunk_size=chunk_size)

    def rollout(self, ctx_latents: Tensor, ctx_proprio: Tensor | None, actions: Tensor,
                ctx_actions: Tensor | None = None) -> Rollout:
        """[B,Tc,N,D], [B,Tc,S], [M,H,A] (M = B*S) -> Rollout(latents [M,H,N,D], proprio [M,H,S])."""
        if ctx_proprio is None:
            raise ValueError("OfficialWorldModel.rollout: the V-JEPA 2-AC predictor needs the state (ctx_proprio [B,Tc,S])")
        fn: StateFn = self.next_state
        return self.predictor.rollout(ctx_latents, ctx_proprio.to(ctx_latents.dtype), actions.to(ctx_latents.dtype), fn,
                                      ctx_actions=None if ctx_actions is None else ctx_actions.to(ctx_latents.dtype),
                                      use_cache=self.use_cache)

