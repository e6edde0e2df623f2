"""wmplan MuJoCo tasks. ``import wmplan.envs`` registers every ``wmplan/*`` gymnasium id."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless by default, before mujoco loads

import gymnasium as gym  # noqa: E402

from .base import GoalTask  # noqa: E402

# id -> (entry point, max_episode_steps)
TASKS: dict[str, tuple[str, int]] = {
    "wmplan/PointMaze-v0": ("wmplan.envs.point_maze:PointMazeEnv", 100),
    "wmplan/Reacher-v0": ("wmplan.envs.reacher:ReacherEnv", 50),
    "wmplan/PushT-v0": ("wmplan.envs.push_t:PushTEnv", 200),
    "wmplan/ArmReach-v0": ("wmplan.envs.arm_tasks:ArmReachEnv", 50),
    "wmplan/ArmPush-v0": ("wmplan.envs.arm_tasks:ArmPushEnv", 100),
    "wmplan/ArmPickPlace-v0": ("wmplan.envs.arm_tasks:ArmPickPlaceEnv", 100),
}


def register_all() -> None:
    for env_id, (entry, steps) in TASKS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry, max_episode_steps=steps)


register_all()

__all__ = ["GoalTask", "TASKS", "register_all"]
