"""wmplan planners: batched CEM / MPPI / gradient / random-shooting planners over a latent
world model, composable energies, and the MPC runner.

Public API::

    from planners import build_planner, build_energy, PlanContext, Goal, run_mpc
    planner = build_planner({"name": "cem", "samples": 256, "horizon": 8},
                            energy={"goal": {"weight": 1.0, "metric": "l1"}})
    result = planner.plan(world_model, PlanContext(z_ctx), Goal(z_goal), generator=gens)
"""
from planners.base import (
    Goal,
    PlanContext,
    Planner,
    PlannerConfig,
    PlanResult,
    Rollout,
    TeacherForcedModel,
    WorldModelLike,
    shift_actions,
)
from planners.registry import ENERGIES, PLANNERS, build_energy, build_planner, register_energy, register_planner
from planners.energies import (
    ActionMagnitude,
    ActionSmoothness,
    CompositeEnergy,
    Energy,
    EnsembleDisagreement,
    GoalEnergy,
    JEPAResidual,
)
from planners.cem import CEMConfig, CEMPlanner
from planners.mppi import MPPIConfig, MPPIPlanner
from planners.gradient import GradientConfig, GradientPlanner
from planners.random_shooting import RandomShootingConfig, RandomShootingPlanner
from planners.mpc import EpisodeResult, run_mpc

__all__ = [
    "Goal", "PlanContext", "Planner", "PlannerConfig", "PlanResult", "Rollout", "TeacherForcedModel",
    "WorldModelLike", "shift_actions", "ENERGIES", "PLANNERS", "build_energy", "build_planner",
    "register_energy", "register_planner", "Energy", "CompositeEnergy", "GoalEnergy", "ActionMagnitude",
    "ActionSmoothness", "EnsembleDisagreement", "JEPAResidual", "CEMConfig", "CEMPlanner", "MPPIConfig", "MPPIPlanner",
    "GradientConfig", "GradientPlanner", "RandomShootingConfig", "RandomShootingPlanner",
    "EpisodeResult", "run_mpc",
]
