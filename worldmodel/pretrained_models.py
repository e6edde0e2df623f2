"""Bundled world models and goal policies, found with ``importlib.resources`` (works from a
checkout, an editable install and a wheel alike)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

PREFIX = "pretrained:"
_MODELS = ("pretrained",)  # folder of the world models, inside this package
_POLICIES = ("pretrained", "policies")  # folder of the goal policies (each named after its world model)


def _names(folder: tuple[str, ...]) -> list[str]:
    root = resources.files(__package__).joinpath(*folder)
    return sorted(p.name[: -len(".pt")] for p in root.iterdir() if p.name.endswith(".pt"))


def _resolve(spec: str | Path, folder: tuple[str, ...], option: str, what: tuple[str, str]) -> Path:
    """``pretrained:<name>`` -> the bundled file in ``folder``; anything else is taken as a path.
    Raises FileNotFoundError naming the option, the spec and the bundled names (``what``: singular, plural)."""
    spec = str(spec)
    if spec.startswith(PREFIX):
        name = spec[len(PREFIX):]
        path = Path(str(resources.files(__package__).joinpath(*folder, f"{name}.pt")))
        if not path.is_file():
            raise FileNotFoundError(f"{option}={spec!r}: no bundled {what[0]} {name!r}; bundled {what[1]}: {_names(folder)}")
        return path
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"{option}={spec!r}: no such file (bundled {what[1]}: "
                                f"{[PREFIX + n for n in _names(folder)]})")
    return path


def bundled_models() -> list[str]:
    """Names of the world models shipped in ``wmplan/worldmodel/pretrained/``."""
    return _names(_MODELS)


def bundled_policies() -> list[str]:
    """Names of the goal policies shipped in ``wmplan/worldmodel/pretrained/policies/`` (one per task
    that plans with one; each was trained on the latents of the bundled world model of its name)."""
    return _names(_POLICIES)


def resolve_model_path(spec: str | Path) -> Path:
    """``world_model=pretrained:<name>`` -> the bundled file; anything else is taken as a path."""
    return _resolve(spec, _MODELS, "world_model", ("model", "models"))


def resolve_policy_path(spec: str | Path) -> Path:
    """``prior=pretrained:<name>`` -> the bundled goal policy; anything else is taken as a path."""
    return _resolve(spec, _POLICIES, "prior", ("goal policy", "goal policies"))
