"""Name -> class registries for planners and energy terms, and the config-dict factories.

A new planner (or energy term) is one file that decorates its class with
``@register_planner("name")`` (``@register_energy("name")``) plus one yaml in
configs/planner/ (configs/energy/); ``planners/__init__.py`` imports the file.

Import order: the energy registry lives in ``energies/base.py`` (energy terms must not import
this module, which imports them); importing this module imports the ``wmplan.planners``
package first, and its ``__init__`` imports every planner and energy module, so both
registries are full whenever the factories run.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..checks import check_number
from .base import Planner, dataclass_from_dict, to_plain
from .energies import ENERGIES, CompositeEnergy, Energy, GoalEnergy, register_energy
from .energies.base import class_registrar

__all__ = ["PLANNERS", "ENERGIES", "register_planner", "register_energy", "build_energy", "build_planner"]

PLANNERS: dict[str, type] = {}

register_planner = class_registrar(PLANNERS, "planner")
register_planner.__doc__ = "Class decorator adding a Planner subclass under ``name``."


def build_energy(cfg: Any) -> Energy:
    """Energy from a config mapping of terms, e.g.
    ``{"goal": {"weight": 1.0, "metric": "l1", "steps": "last"}, "action_smoothness": {"weight": 0.1}}``.

    Each key names a registered term (or carries ``type: <registered name>`` so one class
    can appear twice). Terms with weight 0 are dropped (they would only cost compute).
    An Energy instance is returned unchanged; None gives the default L1 last-step goal energy.
    """
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
        weight = spec.pop("weight", 1.0)
        check_number(weight, "weight", f"energy term {key!r}", low=0)
        weight = float(weight)
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


def build_planner(cfg: Any, energy: Any = None, prior: Any = None) -> Planner:
    """Planner from a config mapping with a ``name`` field plus that planner's config fields.

    ``energy``: an Energy or an energy config mapping; when None the planner config's own
    ``energy`` entry is used, else the default goal energy. ``prior``: an
    :class:`~wmplan.protocols.ActionPrior` whose proposal seeds the search (``planner=policy``
    needs one). Unknown fields raise ValueError.
    """
    cfg = dict(to_plain(cfg))
    name = cfg.pop("name", None)
    if name not in PLANNERS:
        raise ValueError(f"unknown planner {name!r}; known: {sorted(PLANNERS)}")
    own_energy = cfg.pop("energy", None)
    cls = PLANNERS[name]
    config = dataclass_from_dict(cls.config_cls, cfg, f"planner {name!r}")
    return cls(config, build_energy(energy if energy is not None else own_energy), prior=prior)
