"""The object-projection file, shared by the layer that writes it (``worldmodel/object_subspace.py``,
``scripts/fit_object_energy.py``) and the one that reads it (``planners/energies/object.py``).

File (loads with ``weights_only=True``)::

    kind "wmplan-object-projection", version 1, projection [N*D, k] float32, tokens N, dim D,
    eigenvalues [k], explained_by_proprio (fraction of latent variance), world_model_sha256, fit {...}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .checks import ConfigError, check_finite

KIND, FORMAT_VERSION = "wmplan-object-projection", 1


def load_object_projection(path: str | Path) -> dict[str, Any]:
    """Read and check a projection file; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"object projection {path}: no such file (make one with scripts/fit_object_energy.py)")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("kind") != KIND:
        raise ConfigError(f"object projection {path}: field 'kind' must be {KIND!r}, got "
                          f"{obj.get('kind') if isinstance(obj, dict) else type(obj).__name__!r}")
    if obj.get("version") != FORMAT_VERSION:
        raise ConfigError(f"object projection {path}: field 'version' must be {FORMAT_VERSION}, got {obj.get('version')!r}")
    v = obj.get("projection")
    if not isinstance(v, Tensor) or v.ndim != 2 or v.shape[0] != obj["tokens"] * obj["dim"]:
        raise ConfigError(f"object projection {path}: field 'projection' must be [tokens*dim, k] = "
                          f"[{obj.get('tokens')}*{obj.get('dim')}, k], got {getattr(v, 'shape', None)}")
    check_finite(v, "projection", f"object projection {path}")
    return obj
