"""Name -> class registries for planners and energy terms, and the config-dict factories.

A new planner (or energy term) is one file that decorates its class with
``@register_planner("name")`` (``@register_energy("name")``) plus one yaml in
configs/planner/ (configs/energy/); ``planners/__init__.py`` imports the file.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, TypeVar

T = TypeVar("T")

PLANNERS: dict[str, type] = {}
ENERGIES: dict[str, type] = {}


def register_planner(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator adding a Planner subclass under ``name``."""

    def deco(cls: type[T]) -> type[T]:
        if name in PLANNERS and PLANNERS[name] is not cls:
            raise ValueError(f"planner {name!r} registered twice")
        PLANNERS[name] = cls
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return deco


def register_energy(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator adding an Energy term under ``name``."""

    def deco(cls: type[T]) -> type[T]:
        if name in ENERGIES and ENERGIES[name] is not cls:
            raise ValueError(f"energy {name!r} registered twice")
        ENERGIES[name] = cls
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return deco


def build_energy(cfg: Any) -> Any:
    """Energy from a config mapping of terms, e.g.
    ``{"goal": {"weight": 1.0, "metric": "l1", "steps": "last"}, "action_smoothness": {"weight": 0.1}}``.

    Each key names a registered term (or carries ``type: <registered name>`` so one class
    can appear twice). Terms with weight 0 are dropped (they would only cost compute).
    An Energy instance is returned unchanged; None gives the default L1 last-step goal energy.
    """
    from .. import planners  # noqa: F401  (populates the registries)
    from .base import to_plain
    from .energies import CompositeEnergy, Energy, GoalEnergy

    if cfg is None:
        return GoalEnergy()
    if isinstance(cfg, Energy):
        return cfg
    cfg = to_plain(cfg)
    if not isinstance(cfg, Mapping):
        raise TypeError(f"energy config must be a mapping of terms, got {type(cfg).__name__}")
    terms = []
    for key, spec in cfg.items():
        spec = dict(spec or {})
        kind = spec.pop("type", key)
        weight = float(spec.pop("weight", 1.0))
        if kind not in ENERGIES:
            raise ValueError(f"unknown energy term {kind!r} (key {key!r}); known: {sorted(ENERGIES)}")
        if weight == 0.0:
            continue
        try:
            term = ENERGIES[kind](**spec)
        except TypeError as e:
            raise ValueError(f"energy term {key!r}: {e}") from e
        terms.append((weight, term, key))
    if not terms:
        raise ValueError("energy config has no term with non-zero weight")
    return CompositeEnergy(terms)


def build_planner(cfg: Any, energy: Any = None) -> Any:
    """Planner from a config mapping with a ``name`` field plus that planner's config fields.

    ``energy``: an Energy or an energy config mapping; when None the planner config's own
    ``energy`` entry is used, else the default goal energy. Unknown fields raise ValueError.
    """
    from .. import planners  # noqa: F401
    from .base import dataclass_from_dict, to_plain

    cfg = dict(to_plain(cfg))
    name = cfg.pop("name", None)
    if name not in PLANNERS:
        raise ValueError(f"unknown planner {name!r}; known: {sorted(PLANNERS)}")
    own_energy = cfg.pop("energy", None)
    cls = PLANNERS[name]
    config = dataclass_from_dict(cls.config_cls, cfg, f"planner {name!r}")
    return cls(config, build_energy(energy if energy is not None else own_energy))
