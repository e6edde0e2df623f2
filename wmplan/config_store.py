"""Structured configs in Hydra's ConfigStore: the dataclasses are the one source of every
default, and the YAML files in ``configs/`` hold only what differs from them.

Registered here (importing this module registers them, once):

- ``schema/planner/<name>``: one node per registered planner, its config dataclass plus the
  ``name`` tag that ``build_planner`` dispatches on. ``configs/planner/icem.yaml`` is
  ``defaults: [/schema/planner/cem@_here_]`` plus the fields iCEM changes.
- ``schema/encoder/<type>`` and ``schema/predictor/<type>``: one node per registered model
  component, its config dataclass's defaults plus the ``type`` tag (fields the training
  script derives from the data, such as the latent width, are left out).
  ``configs/predictor/ac_compact.yaml`` places ``/schema/predictor/ac@_here_``.
- ``schema/plan``: the ``scripts/plan.py`` job (:class:`PlanJobConfig`), which extends the
  evaluator's :class:`~wmplan.planners.evaluator.EvalConfig`.

- ``schema/energy/<name>``: one node per registered energy term, built from the keyword
  arguments of its class (so the class stays the one source) plus ``weight``.
  ``configs/energy/goal_l2_all.yaml`` places ``/schema/energy/goal@goal`` and changes
  ``metric``, ``steps`` and ``step_weights``.
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from .planners import ENERGIES, PLANNERS
from .planners.evaluator import EvalConfig
from .worldmodel import world_model as _world_model  # noqa: F401  (registers the built-in encoder and predictor types)
from .worldmodel.registry import component_class, registered


@dataclass
class PlanJobConfig(EvalConfig):
    """``scripts/plan.py``: the evaluation settings plus what the job wires together."""

    world_model: str = "pretrained:pointmaze"  # a checkpoint path, pretrained:<name> (bundled), ensemble:<a>+<b>+... or vjepa2:<path>
    goals: str = "sampled"  # goal source (planners/goals.py): sampled | dataset
    goal_set: str | None = None  # goals=dataset: a goal-set file, or bundled:<task> (set by the task)
    goal_budget: int | None = None  # goals=dataset: env steps per episode (None: 2 x the goal set's offset)
    waypoint_bank: str | None = None  # planner=subgoal: a waypoint-bank file, or bundled:<task> (set by the task)
    prior: str | None = None  # a goal-policy file (scripts/train_policy.py): its plan seeds the search; planner=policy plans with it alone
    device: str = "auto"  # auto | cpu | cuda | cuda:<i> | mps
    threads: int | None = None  # torch CPU threads (None: torch's default)
    video_scale: int = 3  # nearest-neighbour upscaling of the views in the GIFs
    resume: bool = True  # rerun into the same out_dir: keep its finished waves of episodes, run the rest
    record_dataset: str | None = None  # a folder: also store every planned episode there as a dataset (wmplan/experience.py)
    out_dir: str = "runs/plan/${now:%Y%m%d-%H%M%S}"  # single runs; sweeps use hydra.sweep.dir
    env: Any = MISSING  # configs/env/<name>.yaml (set by the task)
    planner: Any = MISSING  # configs/planner/<name>.yaml
    energy: Any = MISSING  # configs/energy/<name>.yaml (set by the task)


def planner_schema(name: str, config_cls: type) -> type:
    """The planner's config dataclass with the ``name`` tag added (typed, closed to typos)."""
    return dataclasses.make_dataclass(f"{config_cls.__name__}Node", [("name", str, dataclasses.field(default=name))],
                                      bases=(config_cls,))


_SCALARS = (bool, int, float, str)


def energy_schema(name: str, term_cls: type) -> type:
    """A dataclass of the term's keyword arguments (defaults and scalar types from its
    ``__init__``; other annotations are left untyped) plus ``weight: float = 1.0``."""
    specs: list[tuple[str, Any, dataclasses.Field]] = [("weight", float, dataclasses.field(default=1.0))]
    for p in inspect.signature(term_cls.__init__).parameters.values():
        if p.name == "self" or p.default is inspect.Parameter.empty:
            continue
        typ = type(p.default) if isinstance(p.default, _SCALARS) else Any
        specs.append((p.name, typ, dataclasses.field(default=p.default)))
    return dataclasses.make_dataclass(f"{term_cls.__name__}Node", specs)


# predictor fields that train_predictor fills in from the dataset and the latent cache
_DATA_FIELDS = frozenset({"proprio_dim"})


def component_schema(tag: str, config_cls: type, skip: frozenset[str] = frozenset()) -> type:
    """The component's config dataclass, fields with defaults only (minus ``skip``), plus
    ``type: str = tag`` for the registry to dispatch on."""
    hints = typing.get_type_hints(config_cls)
    specs: list[tuple[str, Any, dataclasses.Field]] = [("type", str, dataclasses.field(default=tag))]
    for f in dataclasses.fields(config_cls):
        if f.name in skip or f.default is dataclasses.MISSING:
            continue
        specs.append((f.name, hints[f.name], dataclasses.field(default=f.default)))
    return dataclasses.make_dataclass(f"{config_cls.__name__}Node", specs)


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    for name, cls in sorted(PLANNERS.items()):
        cs.store(group="schema/planner", name=name, node=planner_schema(name, cls.config_cls))
    for name, cls in sorted(ENERGIES.items()):
        cs.store(group="schema/energy", name=name, node=energy_schema(name, cls))
    for kind in ("encoder", "predictor"):
        for tag in registered(kind):
            cls = component_class(kind, tag)
            skip = _DATA_FIELDS if kind == "predictor" else frozenset()
            cs.store(group=f"schema/{kind}", name=tag, node=component_schema(tag, cls.config_class, skip))
    cs.store(group="schema", name="plan", node=PlanJobConfig)


register_configs()
