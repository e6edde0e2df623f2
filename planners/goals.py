"""Goal sources: where evaluation episodes (a start and a goal) come from.

A goal source turns (episodes, seed) into a list of :class:`EpisodeSpec`; the evaluator
resets each env with the spec's seed and options. A new protocol (the field's dataset
goals, say: start at a recorded state, goal k steps later) is one class here plus one
entry in ``GOAL_SOURCES``; the evaluator does not change.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..checks import ConfigError, check_finite, check_number
from .mpc import EpisodeSpec

GOAL_SET_KEYS = ("start_states", "goal_states", "episode_ids", "start_steps", "offset", "env_id")


class GoalSource(ABC):
    """Yields the episodes of one evaluation protocol."""

    protocol: ClassVar[str] = "base"

    @abstractmethod
    def episodes(self, count: int, seed: int) -> list[EpisodeSpec]:
        """``count`` episodes, reproducible from ``seed``."""

    def describe(self) -> dict[str, Any]:
        """What the summary records about the protocol."""
        return {"protocol": self.protocol}


class SampledGoals(GoalSource):
    """wmplan's own protocol: the task samples start and goal from the episode seed
    (seeds ``seed .. seed+count-1``) and renders the goal image."""

    protocol = "sampled"

    def episodes(self, count: int, seed: int) -> list[EpisodeSpec]:
        if count < 1:
            raise ValueError(f"episodes={count}: need at least 1")
        return [EpisodeSpec(seed=int(seed) + i) for i in range(int(count))]


class DatasetGoals(GoalSource):
    """The field's protocol (DINO-WM, JEPA-WMs): each episode starts at the recorded state of a
    held-out expert episode and its goal is the state recorded ``offset`` env steps later; the
    step budget is ``budget`` (default 2 x offset) and success is checked after every step.

    ``path``: a goal-set file (``scripts/make_goal_set.py`` writes one from any wmplan dataset)::

        start_states [E,S] float64   goal_states [E,S] float64   (full physics states)
        episode_ids [E] int          start_steps [E] int         offset int   env_id str

    Episode i of a run uses goal-set row ``(seed + i) % E``, so ``episodes <= E`` with seed 0
    visits each recorded episode at most once.
    """

    protocol = "dataset"

    def __init__(self, path: str | Path, budget: int | None = None, env_id: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"goals=dataset: goal set {self.path} not found (make one with scripts/make_goal_set.py)")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                missing = [k for k in GOAL_SET_KEYS if k not in z.files]
                if missing:
                    raise ConfigError(f"goal set {self.path}: missing field(s) {missing}")
                d = {k: z[k] for k in GOAL_SET_KEYS}
        except (OSError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"goal set {self.path}: unreadable ({type(e).__name__}: {e})") from e
        self.start, self.goal = np.asarray(d["start_states"], np.float64), np.asarray(d["goal_states"], np.float64)
        if self.start.ndim != 2 or self.start.shape != self.goal.shape or len(self.start) < 1:
            raise ConfigError(f"goal set {self.path}: start_states {self.start.shape} and goal_states "
                              f"{self.goal.shape} must both be [E>=1, S]")
        check_finite(self.start, "start_states", f"goal set {self.path}")
        check_finite(self.goal, "goal_states", f"goal set {self.path}")
        self.episode_ids, self.start_steps = d["episode_ids"].astype(int), d["start_steps"].astype(int)
        self.offset, self.env_id = int(d["offset"]), str(d["env_id"])
        if env_id is not None and env_id != self.env_id:
            raise ConfigError(f"goal set {self.path} was recorded in {self.env_id!r}, but env.id={env_id!r}")
        self.budget = int(budget) if budget is not None else 2 * self.offset
        check_number(self.budget, "goal_budget", "goals=dataset", low=1, integer=True)
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()

    def episodes(self, count: int, seed: int) -> list[EpisodeSpec]:
        if count < 1:
            raise ValueError(f"episodes={count}: need at least 1")
        rows = [(int(seed) + i) % len(self.start) for i in range(int(count))]
        # the episode's seed is its row index in the run (distinct per episode, as resume needs)
        return [EpisodeSpec(seed=int(seed) + i, options={"state": self.start[r], "goal_state": self.goal[r]},
                            max_steps=self.budget) for i, r in enumerate(rows)]

    def describe(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "goal_set": str(self.path), "goal_set_sha256": self.sha256,
                "goal_offset": self.offset, "goal_budget": self.budget, "goal_set_episodes": len(self.start)}


GOAL_SOURCES: dict[str, type[GoalSource]] = {"sampled": SampledGoals, "dataset": DatasetGoals}


def build_goal_source(name: str, **kwargs: Any) -> GoalSource:
    """Goal source by protocol name (``goals=<name>`` in configs/plan.yaml)."""
    if name not in GOAL_SOURCES:
        raise ValueError(f"goals={name!r}: unknown goal source; known: {sorted(GOAL_SOURCES)}")
    return GOAL_SOURCES[name](**kwargs)


def resolve_bundled(spec: str, folder: str, what: str) -> Path:
    """``bundled:<task>`` -> ``wmplan/planners/<folder>/<task>.npz`` (which must exist); else ``spec``
    as a path. ``what`` names the file kind in the error (``goal_set``, ``waypoint_bank``)."""
    if spec.startswith("bundled:"):
        name = spec.split(":", 1)[1]
        path = Path(str(resources.files(__package__) / folder / f"{name}.npz"))
        if not path.is_file():
            known = sorted(p.stem for p in path.parent.glob("*.npz"))
            raise ConfigError(f"{what}={spec!r}: no bundled {what.replace('_', ' ')} {name!r}; bundled: {known}")
        return path
    return Path(spec)


def resolve_goal_set(spec: str) -> Path:
    """``bundled:<task>`` -> the goal set shipped in ``wmplan/planners/goal_sets/``; else a path."""
    return resolve_bundled(spec, "goal_sets", "goal_set")
