"""Action energies: magnitude and smoothness penalties on the planned actions [M,H,A]."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from ...checks import check_number
from .base import Energy, register_energy


@register_energy("action_magnitude")
class ActionMagnitude(Energy):
    """mean over H,A of |a|^p (p=2 default: squared magnitude) -> [M]."""

    def __init__(self, p: float = 2.0):
        check_number(p, "p", "energy term 'action_magnitude'", low=0, low_open=True)
        self.p = float(p)

    def __call__(self, rollout: Any, goal: Any, actions: Tensor, extras: dict[str, Any]) -> Tensor:
        return actions.abs().pow(self.p).mean(dim=(-2, -1))


@register_energy("action_smoothness")
class ActionSmoothness(Energy):
    """mean over the H-1 step differences and A of |a_{t+1} - a_t|^p -> [M] (0 when H = 1)."""

    def __init__(self, p: float = 2.0):
        check_number(p, "p", "energy term 'action_smoothness'", low=0, low_open=True)
        self.p = float(p)

    def __call__(self, rollout: Any, goal: Any, actions: Tensor, extras: dict[str, Any]) -> Tensor:
        if actions.shape[-2] < 2:
            return actions.new_zeros(actions.shape[0])
        return (actions[:, 1:] - actions[:, :-1]).abs().pow(self.p).mean(dim=(-2, -1))
