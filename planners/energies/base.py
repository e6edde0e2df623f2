"""Energy interface and the weighted-sum composite."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from torch import Tensor


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
