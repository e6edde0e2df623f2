"""Goal sources: where evaluation episodes (a start and a goal) come from.

A goal source turns (episodes, seed) into a list of :class:`EpisodeSpec`; the evaluator
resets each env with the spec's seed and options. A new protocol (the field's dataset
goals, say: start at a recorded state, goal k steps later) is one class here plus one
entry in ``GOAL_SOURCES``; the evaluator does not change.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from .mpc import EpisodeSpec


class GoalSource(ABC):
    """Yields the episodes of one evaluation protocol."""

    protocol: ClassVar[str] = "base"

    @abstractmethod
    def episodes(self, count: int, seed: int) -> list[EpisodeSpec]:
        """``count`` episodes, reproducible from ``seed``."""

    def describe(self) -> dict[str, Any]:
        """What a result row records about the protocol."""
        return {"protocol": self.protocol}


class SampledGoals(GoalSource):
    """wmplan's own protocol: the task samples start and goal from the episode seed
    (seeds ``seed .. seed+count-1``) and renders the goal image."""

    protocol = "sampled"

    def episodes(self, count: int, seed: int) -> list[EpisodeSpec]:
        if count < 1:
            raise ValueError(f"episodes={count}: need at least 1")
        return [EpisodeSpec(seed=int(seed) + i) for i in range(int(count))]


GOAL_SOURCES: dict[str, type[GoalSource]] = {"sampled": SampledGoals}


def build_goal_source(name: str, **kwargs: Any) -> GoalSource:
    """Goal source by protocol name (``goals=<name>`` in configs/plan.yaml)."""
    if name not in GOAL_SOURCES:
        raise ValueError(f"goals={name!r}: unknown goal source; known: {sorted(GOAL_SOURCES)}")
    return GOAL_SOURCES[name](**kwargs)
