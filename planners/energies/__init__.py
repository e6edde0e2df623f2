"""Energy terms: ``term(rollout, goal, actions, extras) -> [M]`` and their weighted sum.

All terms see M rollout rows (M = B*S inside a planner); ``goal`` is already broadcast to M.
"""
from .base import ENERGIES, CompositeEnergy, Energy, register_energy
from .goal import GoalEnergy
from .action import ActionMagnitude, ActionSmoothness
from .world import EnsembleDisagreement, JEPAResidual
from .object import ObjectGoalEnergy

__all__ = [
    "Energy",
    "CompositeEnergy",
    "GoalEnergy",
    "ActionMagnitude",
    "ActionSmoothness",
    "EnsembleDisagreement",
    "JEPAResidual",
    "ObjectGoalEnergy",
    "ENERGIES",
    "register_energy",
]
