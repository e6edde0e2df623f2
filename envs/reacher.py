"""wmplan/Reacher-v0: a two-link planar arm that must match a goal joint configuration.

The arm lies in the table plane (no gravity) and is seen from straight above by an
orthographic camera. Both joints are unlimited hinges driven by velocity servos,
so the action is a joint-velocity command: ``a in [-1, 1]^2`` asks for
``MAX_SPEED * a`` rad/s (servo time constant ~0.03 s, one env step = 0.1 s).
Links have distinct colours and lengths so that a configuration is identifiable
from pixels. With ``lamps`` (default) the room is dim and the elbow and the tip carry
orange and blue downward spotlights: their pools of light move much of the frame when
the arm moves, where the links alone cover ~5 % of the pixels (too little signal for
a 64x64 encoder's pooled latents; see .notes/task_results.md).

Proprio: ``(cos q1, sin q1, cos q2, sin q2, dq1, dq2)``.
distance: Euclidean norm of the wrapped joint errors (rad).
success: *every* wrapped joint error below ``success_threshold`` (default 0.05 rad).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import GoalTask

MAX_SPEED = 3.0  # rad/s at |a| = 1
L1, L2 = 0.45, 0.35  # link lengths
ARENA = 0.95  # half-size of the floor seen by the camera


def wrap(a: np.ndarray | float) -> np.ndarray:
    """Wrap angles to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


class ReacherEnv(GoalTask):
    """Goal-image joint-configuration reaching with a two-link planar arm.

    Args:
        image_size: rendered frame side in pixels (default 64).
        camera: ``"top"`` (orthographic, whole arm workspace).
        min_goal_dist: minimum max-abs wrapped joint difference between start and goal.
        success_threshold: per-joint tolerance in rad.
        lamps: coloured spotlights at the elbow and the tip (see module docstring).
    reset options: ``{"start": [q1, q2], "goal": [q1, q2]}`` (either may be omitted).
    """

    proprio_dim = 6
    action_dim = 2

    def __init__(
        self,
        image_size: int = 64,
        camera: str = "top",
        min_goal_dist: float = 0.5,
        success_threshold: float = 0.05,
        lamps: bool = True,
        render_mode: str | None = "rgb_array",
    ) -> None:
        if not 0.0 <= min_goal_dist < np.pi:
            raise ValueError(f"min_goal_dist={min_goal_dist}: must be in [0, pi)")
        self.min_goal_dist = float(min_goal_dist)
        self.success_threshold = float(success_threshold)
        self.lamps = bool(lamps)
        self._goal_q = np.zeros(2)
        super().__init__(image_size=image_size, camera=camera, substeps=10, render_mode=render_mode)

    def _model_xml(self) -> str:
        if self.lamps:  # dim room, coloured downward spotlights at the elbow and the tip
            headlight = '<headlight ambient="0.3 0.3 0.3" diffuse="0.1 0.1 0.1" specular="0 0 0"/>'
            lamp = ('<light name="lamp_{0}" pos="{1} 0 0.4" dir="0 0 -1" cutoff="60" exponent="3" '
                    'diffuse="{2}" specular="0 0 0" attenuation="1 0 0" castshadow="false"/>')
            elbow_lamp, tip_lamp = lamp.format("elbow", 0.0, "0.9 0.45 0.1"), lamp.format("tip", L2, "0.2 0.5 1.0")
        else:
            headlight = '<headlight ambient="0.6 0.6 0.6" diffuse="0.4 0.4 0.4"/>'
            elbow_lamp = tip_lamp = ""
        return f"""
<mujoco model="reacher">
  <option timestep="0.01" gravity="0 0 0" integrator="implicitfast"/>
  <default>
    <geom contype="0" conaffinity="0"/>
    <joint type="hinge" axis="0 0 1" limited="false" armature="0.02" damping="0.05"/>
    <velocity kv="20" ctrlrange="-{MAX_SPEED} {MAX_SPEED}" ctrllimited="true"/>
  </default>
  <visual><global offwidth="512" offheight="512"/><quality numslices="12" numstacks="6"/>{headlight}</visual>
  <worldbody>
    <geom name="floor" type="plane" size="{ARENA} {ARENA} 0.02" rgba="0.85 0.85 0.8 1"/>
    <geom name="base" type="cylinder" pos="0 0 0.02" size="0.07 0.02" rgba="0.2 0.2 0.2 1"/>
    <body name="link1" pos="0 0 0.05">
      <joint name="j1"/>
      <geom name="link1" type="capsule" fromto="0 0 0 {L1} 0 0" size="0.07" density="300" rgba="0.15 0.3 0.8 1"/>
      <body name="link2" pos="{L1} 0 0.01">
        <joint name="j2"/>
        {elbow_lamp}
        {tip_lamp}
        <geom name="link2" type="capsule" fromto="0 0 0 {L2} 0 0" size="0.06" density="300" rgba="0.1 0.65 0.25 1"/>
        <geom name="tip" type="sphere" pos="{L2} 0 0.01" size="0.07" density="100" rgba="0.9 0.15 0.1 1"/>
        <site name="tip" pos="{L2} 0 0"/>
      </body>
    </body>
    <camera name="top" pos="0 0 3" xyaxes="1 0 0 0 1 0" projection="orthographic" fovy="{2 * ARENA}"/>
  </worldbody>
  <actuator>
    <velocity name="j1" joint="j1"/>
    <velocity name="j2" joint="j2"/>
  </actuator>
</mujoco>"""

    # ---- hooks ------------------------------------------------------------------
    def _reset_task(self, rng: np.random.Generator, options: dict[str, Any]) -> np.ndarray:
        start, goal = options.get("start"), options.get("goal")
        for name, q in (("start", start), ("goal", goal)):
            if q is not None and (np.shape(q) != (2,) or not np.all(np.isfinite(q))):
                raise ValueError(f"reset option {name}={q!r}: must be finite joint angles [q1, q2]")
        for _ in range(10_000):
            s = np.asarray(start, float) if start is not None else rng.uniform(-np.pi, np.pi, 2)
            g = np.asarray(goal, float) if goal is not None else rng.uniform(-np.pi, np.pi, 2)
            if (start is not None and goal is not None) or np.abs(wrap(g - s)).max() >= self.min_goal_dist:
                break
        self._goal_q = wrap(g)
        goal_state = self._state_at(self._goal_q)
        self.data.qpos[:2] = s
        self.data.qvel[:2] = 0.0
        return goal_state

    def _state_at(self, q: np.ndarray) -> np.ndarray:
        saved = self.get_state()
        self.data.qpos[:2] = q
        self.data.qvel[:2] = 0.0
        out = self.get_state()
        self.set_state(saved)
        return out

    def _goal_from_state(self, goal_state: np.ndarray) -> None:
        self._goal_q = wrap(self._read_at(goal_state, lambda: self.data.qpos[:2].copy()))

    def _apply_action(self, action: np.ndarray) -> None:
        self.data.ctrl[:2] = MAX_SPEED * action

    def _proprio(self) -> np.ndarray:
        q = self.data.qpos[:2]
        return np.array([np.cos(q[0]), np.sin(q[0]), np.cos(q[1]), np.sin(q[1]), *self.data.qvel[:2]])

    def joint_error(self) -> np.ndarray:
        """Wrapped goal - current joint angles (rad), float64 [2]."""
        return wrap(self._goal_q - self.data.qpos[:2])

    def _goal_distance(self) -> float:
        return float(np.linalg.norm(self.joint_error()))

    def _success(self) -> bool:
        return bool(np.all(np.abs(self.joint_error()) < self.success_threshold))

    # ---- privileged helpers ---------------------------------------------------------
    def expert_action(self) -> np.ndarray:
        """Proportional joint-velocity command along the shortest wrapped path."""
        return np.clip(1.5 * self.joint_error(), -1.0, 1.0).astype(np.float32)

    @property
    def goal_q(self) -> np.ndarray:
        return self._goal_q.copy()
