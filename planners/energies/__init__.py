"""Energy terms: ``term(rollout, goal, actions, extras) -> [M]`` and their weighted sum.

All terms see M rollout rows (M = B*S inside a planner); ``goal`` is already broadcast to M.
"""
from planners.energies.base import CompositeEnergy, Energy
from planners.energies.goal import GoalEnergy
from planners.energies.action import ActionMagnitude, ActionSmoothness
from planners.energies.world import EnsembleDisagreement, JEPAResidual

__all__ = [
    "Energy",
    "CompositeEnergy",
    "GoalEnergy",
    "ActionMagnitude",
    "ActionSmoothness",
    "EnsembleDisagreement",
    "JEPAResidual",
]
