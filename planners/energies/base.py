"""Energy interface, the weighted-sum composite, and the name -> class registries.

This module imports nothing else of wmplan, so every energy term, the planner base and the
config factories in ``planners/registry.py`` can import it without a cycle.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from torch import Tensor

T = TypeVar("T")

ENERGIES: dict[str, type] = {}


def class_registrar(table: dict[str, type], kind: str) -> Callable[[str], Callable[[type[T]], type[T]]]:
    """Decorator factory: ``register(name)(cls)`` adds ``cls`` to ``table`` and sets ``cls.name``.

    Shared by the energy and planner registries; registering another class under a taken
    name raises (re-registering the same class is allowed, e.g. on module reload).
    """

    def register(name: str) -> Callable[[type[T]], type[T]]:
        def deco(cls: type[T]) -> type[T]:
            if name in table and table[name] is not cls:
                raise ValueError(f"{kind} {name!r} registered twice")
            table[name] = cls
            cls.name = name  # type: ignore[attr-defined]
            return cls

        return deco

    return register


register_energy = class_registrar(ENERGIES, "energy")
register_energy.__doc__ = "Class decorator adding an Energy term under ``name``."


class Energy(ABC):
    """One named energy term. Lower is better; values are per rollout row.

    ``__call__(rollout, goal, actions [M,H,A], extras) -> [M]`` where ``rollout`` has
    ``latents`` [M,H,N,D], ``proprio`` [M,H,P]|None, ``disagreement`` [M,H]|None and
    ``goal`` has ``latents`` [M,N,D], ``proprio`` [M,P]|None. ``extras`` carries optional
    planner-provided tensors (e.g. collocation residuals), keyed by name.
    """

    name: ClassVar[str] = "energy"

    @abstractmethod
    def __call__(self, rollout: Any, goal: Any, actions: Tensor, extras: dict[str, Any]) -> Tensor:
        ...

    def evaluate(self, rollout: Any, goal: Any, actions: Tensor, extras: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """(total [M], {term key: unweighted value [M]})."""
        v = self(rollout, goal, actions, extras)
        return v, {self.name: v}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class CompositeEnergy(Energy):
    """Weighted sum of terms: E = sum_i w_i * E_i. ``terms``: [(weight, term, key), ...]
    (key defaults to the term's name)."""

    name = "composite"

    def __init__(self, terms: Sequence[tuple]):
        self.terms: list[tuple[float, Energy, str]] = []
        for t in terms:
            w, term = float(t[0]), t[1]
            key = t[2] if len(t) > 2 else term.name
            self.terms.append((w, term, key))
        if not self.terms:
            raise ValueError("CompositeEnergy needs at least one term")

    def __call__(self, rollout: Any, goal: Any, actions: Tensor, extras: dict[str, Any]) -> Tensor:
        return self.evaluate(rollout, goal, actions, extras)[0]

    def evaluate(self, rollout: Any, goal: Any, actions: Tensor, extras: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        parts: dict[str, Tensor] = {}
        total = None
        for w, term, key in self.terms:
            v = term(rollout, goal, actions, extras)
            parts[key] = v
            total = w * v if total is None else total + w * v
        return total, parts

    def __repr__(self) -> str:
        inner = ", ".join(f"{w}*{term!r}" for w, term, _ in self.terms)
        return f"CompositeEnergy({inner})"
