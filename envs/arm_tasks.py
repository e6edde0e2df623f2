"""The three Arm tasks on the shared arm (see :mod:`envs.arm_base` for model and action).

* ``wmplan/ArmReach-v0``: end effector to a target point (success within 0.04 m).
  Goal image: the arm at the target (gripper open), cube where it starts.
* ``wmplan/ArmPush-v0``: push the cube to a target on the table (cube centre within
  0.04 m). Goal image: cube at the target, arm parked at its home pose, gripper open.
* ``wmplan/ArmPickPlace-v0``: pick the cube and hold it at a target above the table
  (cube centre within 0.04 m). Goal image: the arm holding the cube at the target.

Shared reset options: ``{"start": [x, y, z] (end effector), "cube": [x, y] (on the
table), "goal": [x, y, z] (reach / pick-place) or [x, y] (push)}``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .arm_base import CUBE_HALF, FINGER_MAX, HOME_EE, WORK_HI, WORK_LO, ArmTask

EE_LO, EE_HI = np.array([0.25, -0.25, 0.08]), np.array([0.55, 0.25, 0.32])  # start / reach-goal box
CUBE_LO, CUBE_HI = np.array([0.3, -0.2]), np.array([0.55, 0.2])  # cube start / push-goal area
LIFT_LO, LIFT_HI = 0.08, 0.22  # pick-place goal height range (cube centre)


class _ArmGoalTask(ArmTask):
    """Common reset logic: sample/validate the end-effector start and the cube start."""

    min_goal_dist = 0.1

    def __init__(
        self,
        image_size: int = 64,
        camera: str = "front",
        success_threshold: float = 0.04,
        lamp: bool = True,
        render_mode: str | None = "rgb_array",
    ) -> None:
        self.success_threshold = float(success_threshold)
        self._goal = np.zeros(3)
        super().__init__(image_size=image_size, camera=camera, lamp=lamp, render_mode=render_mode)

    def _starts(self, rng: np.random.Generator, options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        ee = self.check_option(options, "start", 3, WORK_LO, WORK_HI)
        cube = self.check_option(options, "cube", 2, WORK_LO, WORK_HI)
        if ee is None:
            ee = rng.uniform(EE_LO, EE_HI)
        if cube is None:
            cube = rng.uniform(CUBE_LO, CUBE_HI)
        return ee, np.array([cube[0], cube[1], CUBE_HALF])

    def _sample_goal(
        self, rng: np.random.Generator, options: dict[str, Any], n: int, sample: Callable[[], np.ndarray], ref: np.ndarray
    ) -> np.ndarray:
        """The ``goal`` option, or a sample at least ``min_goal_dist`` from ``ref``."""
        g = self.check_option(options, "goal", n, WORK_LO, WORK_HI)
        if g is not None:
            return g
        for _ in range(10_000):
            g = sample()
            if np.linalg.norm(g[: len(ref)] - ref) >= self.min_goal_dist:
                break
        return g

    def _finish(self, ee: np.ndarray, cube: np.ndarray, goal_state: np.ndarray) -> np.ndarray:
        """Put the start configuration (gripper open) into the sim; pass the goal state through."""
        self.set_config(ee, FINGER_MAX, cube)
        return goal_state

    @property
    def goal(self) -> np.ndarray:
        return self._goal.copy()


class ArmReachEnv(_ArmGoalTask):
    """Move the end effector to a goal point (the cube is a distractor)."""

    def _reset_task(self, rng: np.random.Generator, options: dict[str, Any]) -> np.ndarray:
        ee, cube = self._starts(rng, options)
        self._goal = self._sample_goal(rng, options, 3, lambda: rng.uniform(EE_LO, EE_HI), ee)
        return self._finish(ee, cube, self.config_state(self._goal, FINGER_MAX, cube))

    def _goal_distance(self) -> float:
        return float(np.linalg.norm(self.ee_pos() - self._goal))

    def _goal_from_state(self, goal_state: np.ndarray) -> None:
        self._goal = self._read_at(goal_state, self.ee_pos)

    def expert_action(self) -> np.ndarray:
        """Straight line to the goal with the gripper open."""
        return self.goto(self._goal, grip=-1.0)


class ArmPushEnv(_ArmGoalTask):
    """Push the cube across the table to a goal point."""

    push_z = 0.02  # end-effector height while pushing (fingertips 5 mm above the table)
    travel_z = 0.09  # height for moving around the cube
    push_speed = 0.012  # m per step while in contact

    def _reset_task(self, rng: np.random.Generator, options: dict[str, Any]) -> np.ndarray:
        ee, cube = self._starts(rng, options)
        g = self._sample_goal(rng, options, 2, lambda: rng.uniform(CUBE_LO, CUBE_HI), cube[:2])
        self._goal = np.array([g[0], g[1], CUBE_HALF])
        return self._finish(ee, cube, self.config_state(HOME_EE, FINGER_MAX, self._goal))

    def _goal_distance(self) -> float:
        return float(np.linalg.norm(self.cube_pos() - self._goal))

    def _goal_from_state(self, goal_state: np.ndarray) -> None:
        c = self._read_at(goal_state, self.cube_pos)
        self._goal = np.array([c[0], c[1], CUBE_HALF])

    def expert_action(self) -> np.ndarray:
        """Close the gripper, go behind the cube (over it when needed), push along the line to the goal."""
        c, e = self.cube_pos(), self.ee_pos()
        to_goal = self._goal[:2] - c[:2]
        dist = float(np.linalg.norm(to_goal))
        if dist < 0.5 * self.success_threshold:  # done: back off, lift clear of the cube and wait
            return self._retreat(c, e)
        d = to_goal / dist
        perp = np.array([-d[1], d[0]])
        rel = e[:2] - c[:2]
        along, lat = rel @ d, rel @ perp
        behind = c[:2] - d * (CUBE_HALF + 0.04)
        in_line = -0.1 < along < -CUBE_HALF and abs(lat) < 0.015
        if in_line and e[2] < self.push_z + 0.008:  # in place: push, slowly enough not to flick it
            want = c[:2] - d * (CUBE_HALF + 0.02) + d * min(0.02, dist)
            return self.goto(np.array([*want, self.push_z]), grip=1.0, speed=self.push_speed)
        if in_line or np.linalg.norm(e[:2] - behind) < 0.015:  # above the pushing spot: descend
            return self.goto(np.array([*behind, self.push_z]), grip=1.0)
        if e[2] < self.travel_z - 0.03 and np.linalg.norm(rel) < 0.09:  # low next to the cube: rise first
            return self._retreat(c, e)
        return self.goto(np.array([*behind, self.travel_z]), grip=1.0)

    def _retreat(self, c: np.ndarray, e: np.ndarray) -> np.ndarray:
        """Rise to travel height, first backing away horizontally while close to the cube
        (rising while touching it would drag it up by friction)."""
        rel = e[:2] - c[:2]
        r = float(np.linalg.norm(rel))
        if r < 0.055 and e[2] < 0.06:
            return self.goto(np.array([*(e[:2] + rel / max(r, 1e-6) * 0.02), e[2]]), grip=1.0)
        return self.goto(np.array([e[0], e[1], self.travel_z]), grip=1.0)


class ArmPickPlaceEnv(_ArmGoalTask):
    """Grasp the cube and hold it at a goal point above the table."""

    hover = 0.07  # approach height above the cube centre

    def _reset_task(self, rng: np.random.Generator, options: dict[str, Any]) -> np.ndarray:
        ee, cube = self._starts(rng, options)

        def sample() -> np.ndarray:
            return np.array([*rng.uniform(CUBE_LO, CUBE_HI), rng.uniform(LIFT_LO, LIFT_HI)])

        self._goal = self._sample_goal(rng, options, 3, sample, cube[:2])
        if self._goal[2] < CUBE_HALF:
            raise ValueError(f"reset option goal={self._goal.tolist()}: cube centre below its resting height {CUBE_HALF}")
        return self._finish(ee, cube, self.config_state(self._goal, CUBE_HALF, self._goal))

    def _goal_distance(self) -> float:
        return float(np.linalg.norm(self.cube_pos() - self._goal))

    def _goal_from_state(self, goal_state: np.ndarray) -> None:
        self._goal = self._read_at(goal_state, self.cube_pos)

    def holding(self) -> bool:
        """True when the cube sits between the (closed) fingers."""
        gap = self.gripper_opening()
        near = np.linalg.norm(self.ee_pos() - self.cube_pos()) < 0.03
        return bool(near and 2 * CUBE_HALF - 0.012 < gap < 2 * CUBE_HALF + 0.008)

    def expert_action(self) -> np.ndarray:
        """Hover over the cube, descend open, close, then carry it to the goal and hold."""
        c, e = self.cube_pos(), self.ee_pos()
        if self.holding():
            return self.goto(self._goal + (e - c), grip=1.0)
        gap = self.gripper_opening()
        dxy = np.linalg.norm(c[:2] - e[:2])
        dz = e[2] - c[2]
        closing = gap < 2 * FINGER_MAX - 0.01
        if (dxy < 0.012 and abs(dz) < 0.012) or (closing and dxy < 0.02 and abs(dz) < 0.02 and gap > 2 * CUBE_HALF - 0.012):
            return self.goto(c, grip=1.0)  # at the cube: close
        if dxy < 0.012:  # above it: descend once the fingers are open
            if gap < 2 * CUBE_HALF + 0.015:
                return self.goto(self.commanded_ee(), grip=-1.0)
            return self.goto(c, grip=-1.0)
        if dz < self.hover - 0.03 and dxy < 0.06:  # low next to the cube: rise first
            return self.goto(np.array([e[0], e[1], c[2] + self.hover]), grip=-1.0)
        return self.goto(c + np.array([0.0, 0.0, self.hover]), grip=-1.0)
