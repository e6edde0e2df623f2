"""Bundled world models, found with ``importlib.resources`` (works from a checkout, an
editable install and a wheel alike)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

PREFIX = "pretrained:"


def bundled_models() -> list[str]:
    """Names of the world models shipped in ``wmplan/worldmodel/pretrained/``."""
    root = resources.files(__package__) / "pretrained"
    return sorted(p.name[: -len(".pt")] for p in root.iterdir() if p.name.endswith(".pt"))


def resolve_model_path(spec: str | Path) -> Path:
    """``pretrained:<name>`` -> the bundled file; anything else is taken as a path.

    Raises FileNotFoundError naming the spec and the bundled names when either is missing.
    """
    spec = str(spec)
    if spec.startswith(PREFIX):
        name = spec[len(PREFIX):]
        path = Path(str(resources.files(__package__) / "pretrained" / f"{name}.pt"))
        if not path.is_file():
            raise FileNotFoundError(f"world_model={spec!r}: no bundled model {name!r}; bundled models: {bundled_models()}")
        return path
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"world_model={spec!r}: no such file (bundled models: "
                                f"{[PREFIX + n for n in bundled_models()]})")
    return path
