"""Energy terms: ``term(rollout, goal, actions, extras) -> [M]`` and their weighted sum.

All terms see M rollout rows (M = B*S inside a planner); ``goal`` is already broadcast to M.
"""
from ..energies.base import CompositeEnergy, Energy
from ..energies.goal import GoalEnergy
from ..energies.action import ActionMagnitude, ActionSmoothness
from ..energies.world import EnsembleDisagreement, JEPAResidual

__all__ = [
    "Energy",
    "CompositeEnergy",
    "GoalEnergy",
    "ActionMagnitude",
    "ActionSmoothness",
    "EnsembleDisagreement",
    "JEPAResidual",
]
