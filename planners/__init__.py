"""wmplan planners: batched CEM / MPPI / gradient / random-shooting planners over a latent
world model, composable energies, and the MPC runner.

Public API::

    from wmplan.planners import build_planner, build_energy, PlanContext, Goal, run_mpc
    planner = build_planner({"name": "cem", "samples": 256, "horizon": 8},
                            energy={"goal": {"weight": 1.0, "metric": "l1"}})
    result = planner.plan(world_model, PlanContext(z_ctx), Goal(z_goal), generator=gens)
"""
from .base import (
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
from .registry import ENERGIES, PLANNERS, build_energy, build_planner, register_energy, register_planner
from .energies import (
    ActionMagnitude,
    ActionSmoothness,
    CompositeEnergy,
    Energy,
    EnsembleDisagreement,
    GoalEnergy,
    JEPAResidual,
)
from .cem import CEMConfig, CEMPlanner
from .mppi import MPPIConfig, MPPIPlanner
from .gradient import GradientConfig, GradientPlanner
from .random_shooting import RandomShootingConfig, RandomShootingPlanner
from .policy import PolicyConfig, PolicyPlanner
from .subgoal import SubgoalConfig, SubgoalPlanner
from .mpc import EpisodeResult, EpisodeSpec, run_mpc
from .goals import GOAL_SOURCES, GoalSource, SampledGoals, build_goal_source
from .sinks import EpisodeSink, JsonlSink, VideoSink
from .evaluator import EvalConfig, EvalResult, evaluate, make_vector_env

__all__ = [
    "Goal", "PlanContext", "Planner", "PlannerConfig", "PlanResult", "Rollout", "TeacherForcedModel",
    "WorldModelLike", "shift_actions", "ENERGIES", "PLANNERS", "build_energy", "build_planner",
    "register_energy", "register_planner", "Energy", "CompositeEnergy", "GoalEnergy", "ActionMagnitude",
    "ActionSmoothness", "EnsembleDisagreement", "JEPAResidual", "CEMConfig", "CEMPlanner", "MPPIConfig", "MPPIPlanner",
    "GradientConfig", "GradientPlanner", "RandomShootingConfig", "RandomShootingPlanner", "PolicyConfig", "PolicyPlanner", "SubgoalConfig", "SubgoalPlanner",
    "EpisodeResult", "EpisodeSpec", "run_mpc", "GOAL_SOURCES", "GoalSource", "SampledGoals", "build_goal_source",
    "EpisodeSink", "JsonlSink", "VideoSink", "EvalConfig", "EvalResult", "evaluate", "make_vector_env",
]
