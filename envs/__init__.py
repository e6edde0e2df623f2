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

# gymnasium envs wmplan did not write, through envs/gym_adapter.py: id -> (max_episode_steps, adapter kwargs).
# wmplan/Gym-v0 takes any registered id: gym.make("wmplan/Gym-v0", inner="Pusher-v5", proprio="0:7")
GYM_REACHER = {"inner": "Reacher-v5", "task": "reacher", "proprio": [0, 1, 2, 3, 6, 7], "image_size": 64,
               "success_threshold": 0.02,
               "inner_kwargs": {"width": 128, "height": 128, "default_camera_config": {
                   "distance": 0.7, "elevation": -90.0, "azimuth": 90.0, "lookat": [0.0, 0.0, 0.0]}}}
GYM_TASKS: dict[str, tuple[int | None, dict]] = {"wmplan/Gym-v0": (None, {}),
                                                 "wmplan/Gym-Reacher-v5": (50, GYM_REACHER)}


def register_all() -> None:
    for env_id, (entry, steps) in TASKS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry, max_episode_steps=steps)
    for env_id, (steps, kwargs) in GYM_TASKS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="wmplan.envs.gym_adapter:GymAdapter", max_episode_steps=steps,
                         kwargs=kwargs)


register_all()

__all__ = ["GYM_TASKS", "GoalTask", "TASKS", "register_all"]
