"""World-consistency energies: how far an imagined trajectory leaves plausible dynamics."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from .base import Energy, register_energy


@register_energy("ensemble_disagreement")
class EnsembleDisagreement(Energy):
    """Ensemble spread along the rollout: mean over H of ``rollout.disagreement`` [M,H] -> [M].

    The world model defines disagreement (e.g. mean per-element variance across predictor
    heads): zero when all heads agree and growing with their spread. ``steps="last"`` uses
    only the final step. Raises if the model provides no disagreement (no ensemble).
    """

    def __init__(self, steps: str = "all"):
        if steps not in ("all", "last"):
            raise ValueError(f"steps must be 'all' or 'last', got {steps!r}")
        self.steps = steps

    def __call__(self, rollout: Any, goal: Any, actions: Tensor, extras: dict[str, Any]) -> Tensor:
        d = getattr(rollout, "disagreement", None)
        if d is None:
            raise ValueError("EnsembleDisagreement needs a world model whose rollout returns disagreement "
                             "(an ensemble of predictor heads)")
        return d[:, -1] if self.steps == "last" else d.mean(-1)


@register_energy("jepa_residual")
class JEPAResidual(Energy):
    """JEPA energy for collocation: mean over steps of ||P(z_<=t, a_<=t) - z_{t+1}||.

    Reads ``extras["jepa_pred"]`` (predictions of z_{t+1}) and ``extras["jepa_target"]``
    (the decision latents z_{t+1}), both [M,T,N,D], filled by the collocation planner.
    metric "l1" = mean absolute error, "l2" = mean squared error over N,D, summed over
    steps (plus the same on proprio states when ``jepa_pred_proprio``/``jepa_target_proprio``
    [M,T,P] are given). For shooting planners the residual is zero by construction (no extras): returns 0.
    """

    def __init__(self, metric: str = "l1"):
        if metric not in ("l1", "l2"):
            raise ValueError(f"metric must be 'l1' or 'l2', got {metric!r}")
        self.metric = metric

    def __call__(self, rollout: Any, goal: Any, actions: Tensor, extras: dict[str, Any]) -> Tensor:
        pred, target = extras.get("jepa_pred"), extras.get("jepa_target")
        if pred is None or target is None:
            return actions.new_zeros(actions.shape[0])
        e = self._dist(pred - target).mean(dim=(-2, -1)).sum(-1)
        pp, tp = extras.get("jepa_pred_proprio"), extras.get("jepa_target_proprio")
        if pp is not None and tp is not None:
            e = e + self._dist(pp - tp).mean(-1).sum(-1)
        return e

    def _dist(self, r: Tensor) -> Tensor:
        return r.abs() if self.metric == "l1" else r.pow(2)
