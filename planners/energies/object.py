"""Object goal energy: the goal distance measured in the latents' object subspace."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from ...checks import ConfigError
from ...object_projection import load_object_projection
from .base import register_energy
from .goal import GoalEnergy, latent_distance


@register_energy("object_goal")
class ObjectGoalEnergy(GoalEnergy):
    """Goal distance after projecting latents ``[.., N, D]`` onto the object subspace ``[N*D, k]``
    of ``worldmodel/object_subspace.py`` (directions the agent's proprio does not explain):
    the goal image's object counts, its agent pose hardly. Same ``metric`` / ``steps`` /
    ``step_weights`` as :class:`GoalEnergy`; ``projection`` is a file of
    ``scripts/fit_object_energy.py``.
    """

    def __init__(self, projection: str = "???", metric: str = "l2", steps: str = "all",
                 step_weights: str | Sequence[float] | None = "linear"):
        super().__init__(metric=metric, steps=steps, step_weights=step_weights)
        if projection in ("???", "", None):
            raise ConfigError("energy term 'object_goal': set 'projection' (a scripts/fit_object_energy.py file)")
        self.path = Path(projection)
        obj = load_object_projection(self.path)
        self.tokens, self.dim = int(obj["tokens"]), int(obj["dim"])
        self._v = obj["projection"]  # [N*D, k] on CPU; moved to the latents' device/dtype once

    def _project(self, z: Tensor) -> Tensor:
        """``[..., N, D]`` -> ``[..., 1, k]`` (one 'token' of k object coordinates)."""
        if tuple(z.shape[-2:]) != (self.tokens, self.dim):
            raise ValueError(f"energy term 'object_goal': {self.path} was fitted on latents [N={self.tokens}, "
                             f"D={self.dim}], the world model gives {list(z.shape[-2:])}")
        if self._v.device != z.device or self._v.dtype != z.dtype:
            self._v = self._v.to(device=z.device, dtype=z.dtype)
        return (z.flatten(-2) @ self._v).unsqueeze(-2)

    def __call__(self, rollout: Any, goal: Any, actions: Tensor, extras: dict[str, Any]) -> Tensor:
        pred = rollout.latents[:, -1:] if self.steps == "last" else rollout.latents
        return self._reduce(latent_distance(self._project(pred), self._project(goal.latents), self.metric))

    def __repr__(self) -> str:
        return f"ObjectGoalEnergy({self.path.name}, k={self._v.shape[1]}, {self.metric}, {self.steps})"
