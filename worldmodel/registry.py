"""Encoder and predictor registries: the seam that lets a world model use any frozen encoder.

A component is saved as a type tag plus its config and weights, in world-model files and in
encoder files alike::

    "encoder":   {"type": "vit", "config": {...ViTConfig fields...},  "state_dict": {...}}
    "predictor": {"type": "ac",  "config": {...ACPredictorConfig...}, "state_dict": {...}}

``WorldModel.load`` and :func:`load_encoder` build the component with
``build_encoder(type, config)`` / ``build_predictor(type, config)`` and load the weights.
Files without a ``type`` (every bundled model, written before the tags existed) load as the
default types, ``"vit"`` and ``"ac"``, exactly as before.

Adding an encoder takes one new file and one config:

1. ``worldmodel/<tag>.py`` defines the encoder and registers it under its tag::

       @dataclass
       class MyConfig:                 # plain fields; from_dict(d) / to_dict()
           img_size: int = 64
           ...
       @register_encoder("<tag>")
       class MyEncoder(nn.Module):
           config_class = MyConfig
           def __init__(self, config: MyConfig): ...
           config: MyConfig            # saved in checkpoints (config.to_dict())
           grid: tuple[int, int]       # (h, w) token grid of one frame, N = h * w
           embed_dim: int              # D
           image_size: int             # frames are image_size x image_size
           def encode(self, frames):   # uint8 [B,T,H,W,3] -> [B,T,N,D], frozen, per frame

   A tag that is not registered yet is looked up as the module ``wmplan.worldmodel.<tag>``
   (imported on first use), so the file needs no other registration.
2. ``configs/encoder/<tag>.yaml`` with ``type: <tag>`` and the config fields; train a
   predictor on it with ``python scripts/train_predictor.py encoder=<tag> data_dir=... ...``
   (or save one with :func:`save_encoder` and pass ``encoder_path``). The world model then
   saves the encoder's tag, config and weights, and planning loads it with no further change.

Predictors register the same way (``@register_predictor("<tag>")``, ``config_class``,
``config`` with ``action_dim``/``proprio_dim``/``tokens_per_frame``/``latent_dim``, and the
``forward``/``rollout`` of :class:`~wmplan.worldmodel.predictor.ACPredictor`).
Only modules inside ``wmplan.worldmodel`` are ever imported by tag; configs never run code.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

from ..protocols import EncoderLike
from .utils import FORMAT_VERSION, CheckpointError, atomic_save, cpu_fp32, load_checkpoint, resolve_device

ENCODER_KIND = "wmplan-encoder"
DEFAULT_ENCODER, DEFAULT_PREDICTOR = "vit", "ac"
# Built-in tags whose module is not named after the tag (``vit`` lives in vit.py: found by name).
_MODULES = {"encoder": {}, "predictor": {"ac": "predictor"}}
_REGISTRY: dict[str, dict[str, type]] = {"encoder": {}, "predictor": {}}
_TAG = re.compile(r"^[a-z][a-z0-9_]*$")

C = TypeVar("C", bound=type)

__all__ = ["FrameEncoder", "register_encoder", "register_predictor", "build_encoder", "build_predictor",
           "component_type", "component_class", "registered", "component_record", "save_encoder", "load_encoder", "encoder_fingerprint",
           "ENCODER_KIND"]


@runtime_checkable
class FrameEncoder(EncoderLike, Protocol):
    """What a world model needs from a frozen encoder, beyond ``encode`` (see module docstring)."""

    grid: tuple[int, int]
    embed_dim: int
    image_size: int


def _register(kind: str, tag: str) -> Callable[[C], C]:
    if not _TAG.match(tag):
        raise ValueError(f"{kind} type {tag!r}: tags are lower-case identifiers ([a-z][a-z0-9_]*)")

    def deco(cls: C) -> C:
        if not hasattr(cls, "config_class"):
            raise TypeError(f"{cls.__name__}: a registered {kind} needs a config_class (from_dict/to_dict)")
        old = _REGISTRY[kind].get(tag)
        if old is not None and old.__qualname__ != cls.__qualname__:
            raise ValueError(f"{kind} type {tag!r} is already registered to {old.__module__}.{old.__qualname__}")
        _REGISTRY[kind][tag] = cls
        cls.type_tag = tag
        return cls

    return deco


def register_encoder(tag: str) -> Callable[[C], C]:
    """Class decorator: make an encoder buildable (and loadable from checkpoints) as ``tag``."""
    return _register("encoder", tag)


def register_predictor(tag: str) -> Callable[[C], C]:
    """Class decorator: make a predictor buildable (and loadable from checkpoints) as ``tag``."""
    return _register("predictor", tag)


def registered(kind: str) -> list[str]:
    """Known tags of ``kind`` ("encoder" | "predictor"): registered plus built-in."""
    default = DEFAULT_ENCODER if kind == "encoder" else DEFAULT_PREDICTOR
    return sorted(set(_REGISTRY[kind]) | set(_MODULES[kind]) | {default})


def component_class(kind: str, tag: Any) -> type:
    """The class registered as ``tag`` for ``kind`` ("encoder" | "predictor"), importing
    ``worldmodel/<tag>.py`` first when the tag is not registered yet."""
    return _lookup(kind, tag)


def _lookup(kind: str, tag: Any) -> type:
    if not isinstance(tag, str) or not _TAG.match(tag):
        raise ValueError(f"{kind} type {tag!r} is not a valid tag; known {kind} types: {registered(kind)}")
    if tag not in _REGISTRY[kind]:
        module = _MODULES[kind].get(tag, tag)
        if importlib.util.find_spec(f"{__package__}.{module}") is not None:
            importlib.import_module(f".{module}", __package__)  # registers itself on import
    if tag not in _REGISTRY[kind]:
        raise ValueError(f"unknown {kind} type {tag!r}; known {kind} types: {registered(kind)} "
                         f"(a new one registers itself with @register_{kind}({tag!r}) in worldmodel/{tag}.py)")
    return _REGISTRY[kind][tag]


def _build(kind: str, tag: str, config: dict[str, Any]) -> nn.Module:
    cls = _lookup(kind, tag)
    return cls(cls.config_class.from_dict(dict(config)))


def build_encoder(tag: str, config: dict[str, Any]) -> nn.Module:
    """A fresh encoder of type ``tag`` from its config dict (weights as the class initialises them)."""
    return _build("encoder", tag, config)


def build_predictor(tag: str, config: dict[str, Any]) -> nn.Module:
    """A fresh predictor of type ``tag`` from its config dict."""
    return _build("predictor", tag, config)


def component_type(module: nn.Module) -> str:
    """The registered tag of an encoder/predictor instance."""
    tag = getattr(type(module), "type_tag", None)
    if tag is None:
        raise TypeError(f"{type(module).__name__} is not a registered encoder/predictor class")
    return tag


def component_record(module: nn.Module) -> dict[str, Any]:
    """``{"type", "config", "state_dict"}`` with CPU fp32 tensors (the checkpoint layout)."""
    return {"type": component_type(module), "config": module.config.to_dict(),
            "state_dict": {k: cpu_fp32(v) for k, v in module.state_dict().items()}}


def load_component(kind: str, record: Any, where: str) -> nn.Module:
    """Build and load one component from a checkpoint record; errors name ``where`` (file + field)."""
    for f in ("config", "state_dict"):
        if not isinstance(record, dict) or f not in record:
            raise CheckpointError(f"{where}: missing field {f!r}")
    tag = record.get("type", DEFAULT_ENCODER if kind == "encoder" else DEFAULT_PREDICTOR)
    try:
        module = _build(kind, tag, record["config"])
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{where} is incompatible: {e}") from e
    _check_weights(module, record["state_dict"], where, tag)
    try:
        module.load_state_dict(record["state_dict"])
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{where} is incompatible: {e}") from e
    return module


def _check_weights(module: nn.Module, state: Any, where: str, tag: str) -> None:
    """Name the weights that do not fit the module the saved config builds (missing, unexpected,
    other shapes) instead of torch's bare shape-mismatch text."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: 'state_dict' must be a dict of tensors, got {type(state).__name__}")
    own = module.state_dict()

    def short(keys: list[str]) -> str:
        return ", ".join(keys[:4]) + (f", ... ({len(keys)} in all)" if len(keys) > 4 else "")

    problems = []
    if missing := [k for k in own if k not in state]:
        problems.append(f"missing weights {short(missing)}")
    if unexpected := [k for k in state if k not in own]:
        problems.append(f"unexpected weights {short(unexpected)}")
    if not_tensors := [k for k in state if k in own and not isinstance(state[k], torch.Tensor)]:
        problems.append(f"non-tensor entries {short(not_tensors)}")
    shapes = [f"'{k}' is {tuple(state[k].shape)} in the file but {tuple(own[k].shape)} for the saved config"
              for k in own if isinstance(state.get(k), torch.Tensor) and state[k].shape != own[k].shape]
    if shapes:
        problems.append("shape mismatch: " + "; ".join(shapes[:4]) + (f"; ... ({len(shapes)} in all)" if len(shapes) > 4 else ""))
    if problems:
        raise CheckpointError(f"{where}: the weights in 'state_dict' do not fit a {tag!r} built from the file's "
                              f"config ({'; '.join(problems)}); "
                              f"the file was probably written by an older or different version of this model")


def save_encoder(model: nn.Module, path: str | Path, meta: dict[str, Any] | None = None) -> None:
    """Atomically write a frozen-encoder file (``kind``, ``version``, ``type``, ``config``, ``state_dict``,
    ``meta``); refuses (NonFiniteError, nothing written) if a weight is NaN/inf."""
    atomic_save({"kind": ENCODER_KIND, "version": FORMAT_VERSION, **component_record(model),
                 "meta": dict(meta or {})}, path)


def load_encoder(path: str | Path, device: str | torch.device = "auto") -> nn.Module:
    """Load a file written by :func:`save_encoder` (any registered type; untagged = ``vit``).

    Returns the encoder frozen (``eval()``, no grad) with the file's ``meta`` as ``.meta``.
    Raises CheckpointError naming the file on a wrong kind, missing field or mismatch.
    """
    ckpt = load_checkpoint(path, kind=ENCODER_KIND)
    model = load_component("encoder", ckpt, f"checkpoint {path}: encoder")
    model.meta = dict(ckpt.get("meta", {}))
    return model.to(resolve_device(device)).eval().requires_grad_(False)


def encoder_fingerprint(encoder: nn.Module) -> str:
    """sha256 of an encoder's type, config and weights (keys a latent cache when there is no file)."""
    h = hashlib.sha256(json.dumps({"type": component_type(encoder), "config": encoder.config.to_dict()},
                                  sort_keys=True).encode())
    for k, v in sorted(encoder.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
