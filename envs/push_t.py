"""wmplan/PushT-v0: push a T-shaped block to a goal pose with a round pusher.

Arena interior is [-1, 1]^2 (walled), seen from above by an orthographic camera.
The T is one body made of two boxes (bar + stem) whose origin is the T's area
centroid; it moves on planar joints (x, y, yaw) plus a vertical slide so that it
rests on the table under gravity and feels real Coulomb friction from the table
contacts (it stops within ~0.1 s once it is no longer pushed). The pusher is a
disc on two damped slide joints driven by velocity servos: the action
``a in [-1, 1]^2`` asks for a pusher velocity of ``MAX_SPEED * a`` (one env step =
0.1 s, so at most 0.1 arena units per step). The pusher floats just above the
table and only touches the block and the walls.

Proprio: ``(pusher x, pusher y, pusher vx, pusher vy)``.
distance: block *position* error (centroid, arena units). The angle enters only
through ``success`` and ``info["angle_error"]`` (wrapped, rad).
success: position error < 4% of the arena width (0.08) and angle error < pi/9.
Goal image: the block at the goal pose with the pusher parked at the arena corner
farthest from the goal block (so it never hides the T).
"""
from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from .base import GoalTask
from .push_t_expert import PushTExpert, t_boxes, wrap_angle

ARENA = 1.0  # interior half-width
MAX_SPEED = 1.0  # pusher speed at |a| = 1
PUSHER_R = 0.05
BLOCK_H = 0.03  # half-height of the T boxes
BLOCK_DENSITY = 89.0  # -> T mass ~0.5
BLOCK_LIMIT = 0.45  # start/goal block centroids are sampled in [-BLOCK_LIMIT, BLOCK_LIMIT]^2
PUSHER_LIMIT = 0.85


class PushTEnv(GoalTask):
    """Goal-image pushing of a T block with a velocity-controlled disc.

    Args:
        image_size: rendered frame side in pixels (default 64).
        camera: ``"top"`` (orthographic, whole arena).
        pos_tolerance: success radius as a fraction of the arena width (default 0.04).
        angle_tolerance: success angle tolerance in rad (default pi/9).
        min_goal_pos / min_goal_angle: a sampled goal differs from the start by at
            least one of these (position, wrapped angle).
        lamp: a dimmer room and a downward spotlight on the pusher. Visual only (physics,
            expert and goal sets unchanged): its pool of light shows the small pusher, and
            lights the part of the T it is about to push, over much of the 64x64 frame.
    reset options: ``{"start": [x, y, yaw], "goal": [x, y, yaw], "pusher": [x, y]}``
    (any may be omitted; block poses are for the T's centroid).
    """

    metadata = {**GoalTask.metadata, "info_metrics": {"angle_error": "final"}}

    proprio_dim = 4
    action_dim = 2

    def __init__(
        self,
        image_size: int = 64,
        camera: str = "top",
        pos_tolerance: float = 0.04,
        angle_tolerance: float = np.pi / 9,
        min_goal_pos: float = 0.3,
        min_goal_angle: float = np.pi / 3,
        lamp: bool = True,
        render_mode: str | None = "rgb_array",
    ) -> None:
        self.pos_threshold = float(pos_tolerance) * 2 * ARENA
        self.angle_threshold = float(angle_tolerance)
        self.min_goal_pos, self.min_goal_angle = float(min_goal_pos), float(min_goal_angle)
        self._goal_pose = np.zeros(3)
        self.lamp = bool(lamp)
        super().__init__(image_size=image_size, camera=camera, substeps=10, render_mode=render_mode)
        self._expert = PushTExpert(pusher_r=PUSHER_R, arena=ARENA, max_speed=MAX_SPEED)

    def _model_xml(self) -> str:
        boxes = "".join(
            f'<geom name="{n}" type="box" pos="{cx:.5f} {cy:.5f} 0" size="{hx} {hy} {BLOCK_H}" '
            f'density="{BLOCK_DENSITY}" rgba="0.25 0.35 0.75 1"/>'
            for n, (cx, cy, hx, hy) in zip(("bar", "stem"), t_boxes())
        )
        w, t = ARENA + 0.05, 0.05
        walls = "".join(
            f'<geom type="box" pos="{x} {y} 0.05" size="{sx} {sy} 0.05" rgba="0.3 0.3 0.3 1"/>'
            for x, y, sx, sy in [(0, w, w + t, t), (0, -w, w + t, t), (w, 0, t, w + t), (-w, 0, t, w + t)]
        )
        if self.lamp:  # the light sits above the pusher so its pool reaches past the T's edge
            headlight = '<headlight ambient="0.3 0.3 0.3" diffuse="0.2 0.2 0.2"/>'
            pusher_lamp = ('<light name="lamp" pos="0 0 0.6" dir="0 0 -1" cutoff="30" exponent="2" '
                           'diffuse="1.0 0.9 0.6" specular="0 0 0" castshadow="false"/>')
        else:
            headlight, pusher_lamp = '<headlight ambient="0.6 0.6 0.6" diffuse="0.4 0.4 0.4"/>', ""
        return f"""
<mujoco model="push_t">
  <option timestep="0.01" integrator="implicitfast" cone="elliptic"/>
  <default><geom condim="3" friction="0.5 0.005 0.0001"/></default>
  <visual><global offwidth="512" offheight="512"/><quality numslices="12" numstacks="6"/>{headlight}</visual>
  <worldbody>
    <geom name="floor" type="plane" size="{w + t} {w + t} 0.1" rgba="0.85 0.85 0.8 1"/>
    {walls}
    <body name="block" pos="0 0 {BLOCK_H}">
      <joint name="bx" type="slide" axis="1 0 0" damping="0.5"/>
      <joint name="by" type="slide" axis="0 1 0" damping="0.5"/>
      <joint name="bz" type="slide" axis="0 0 1"/>
      <joint name="byaw" type="hinge" axis="0 0 1" damping="0.05"/>
      {boxes}
    </body>
    <body name="pusher" pos="0 0 {BLOCK_H + 0.005}">
      <joint name="px" type="slide" axis="1 0 0" damping="1"/>
      <joint name="py" type="slide" axis="0 1 0" damping="1"/>
      <geom name="pusher" type="cylinder" size="{PUSHER_R} {BLOCK_H}" mass="1" friction="0.2 0.005 0.0001"
            rgba="0.9 0.15 0.1 1" contype="2" conaffinity="1"/>
      {pusher_lamp}
    </body>
    <camera name="top" pos="0 0 3" xyaxes="1 0 0 0 1 0" projection="orthographic" fovy="{2 * (w + t)}"/>
  </worldbody>
  <actuator>
    <velocity name="px" joint="px" kv="60" ctrlrange="-{MAX_SPEED} {MAX_SPEED}" ctrllimited="true"/>
    <velocity name="py" joint="py" kv="60" ctrlrange="-{MAX_SPEED} {MAX_SPEED}" ctrllimited="true"/>
  </actuator>
</mujoco>"""

    # ---- state helpers -------------------------------------------------------------
    def block_pose(self) -> np.ndarray:
        """(x, y, yaw) of the T centroid, yaw wrapped."""
        q = self.data.qpos
        return np.array([q[0], q[1], wrap_angle(q[3])])

    def pusher_xy(self) -> np.ndarray:
        return self.data.qpos[4:6].copy()

    def _place(self, block: np.ndarray, pusher: np.ndarray) -> None:
        self.data.qpos[:6] = [block[0], block[1], 0.0, block[2], pusher[0], pusher[1]]
        self.data.qvel[:] = 0.0
        self.data.ctrl[:] = 0.0

    def _pusher_free(self, p: np.ndarray, block: np.ndarray, margin: float = 0.03) -> bool:
        """True when a pusher at ``p`` lies in the arena and clear of a block at ``block``."""
        if np.any(np.abs(p) > PUSHER_LIMIT):
            return False
        c, s = np.cos(block[2]), np.sin(block[2])
        d = np.asarray(p) - block[:2]
        local = np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1]])
        for cx, cy, hx, hy in t_boxes():
            if abs(local[0] - cx) < hx + PUSHER_R + margin and abs(local[1] - cy) < hy + PUSHER_R + margin:
                return False
        return True

    # ---- hooks ------------------------------------------------------------------
    def _reset_task(self, rng: np.random.Generator, options: dict[str, Any]) -> np.ndarray:
        start, goal, pusher = options.get("start"), options.get("goal"), options.get("pusher")
        for name, v, n in (("start", start, 3), ("goal", goal, 3), ("pusher", pusher, 2)):
            if v is not None and (np.shape(v) != (n,) or not np.all(np.isfinite(v))):
                raise ValueError(f"reset option {name}={v!r}: must be {n} finite numbers")
        for k in ("start", "goal"):
            v = options.get(k)
            if v is not None and np.any(np.abs(np.asarray(v[:2])) > ARENA - 0.3):
                raise ValueError(f"reset option {k}={v!r}: block centroid must lie in [-0.7, 0.7]^2")

        def sample_pose() -> np.ndarray:
            return np.array([*rng.uniform(-BLOCK_LIMIT, BLOCK_LIMIT, 2), rng.uniform(-np.pi, np.pi)])

        for _ in range(10_000):
            s = np.asarray(start, float) if start is not None else sample_pose()
            g = np.asarray(goal, float) if goal is not None else sample_pose()
            if start is not None and goal is not None:
                break
            if np.linalg.norm(s[:2] - g[:2]) >= self.min_goal_pos or abs(wrap_angle(s[2] - g[2])) >= self.min_goal_angle:
                break
        if pusher is not None:
            p = np.asarray(pusher, float)
            if not self._pusher_free(p, s, margin=0.0):
                raise ValueError(f"reset option pusher={pusher!r}: overlaps the block or leaves the arena")
        else:
            p = rng.uniform(-PUSHER_LIMIT, PUSHER_LIMIT, 2)
            while not self._pusher_free(p, s):
                p = rng.uniform(-PUSHER_LIMIT, PUSHER_LIMIT, 2)
        g = np.array([g[0], g[1], wrap_angle(g[2])])
        self._goal_pose = g
        corners = np.array([[x, y] for x in (-PUSHER_LIMIT, PUSHER_LIMIT) for y in (-PUSHER_LIMIT, PUSHER_LIMIT)])
        park = corners[int(np.argmax(np.linalg.norm(corners - g[:2], axis=1)))]
        self._place(g, park)
        mujoco.mj_forward(self.model, self.data)
        goal_state = self.get_state()
        self._place(s, p)
        self._expert.reset()
        return goal_state

    def _goal_from_state(self, goal_state: np.ndarray) -> None:
        q = self._read_at(goal_state, lambda: self.data.qpos[:4].copy())
        self._goal_pose = np.array([q[0], q[1], wrap_angle(q[3])])
        self._expert.reset()

    def _apply_action(self, action: np.ndarray) -> None:
        self.data.ctrl[:2] = MAX_SPEED * action

    def _proprio(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[4:6], self.data.qvel[4:6]])

    def _goal_distance(self) -> float:
        return float(np.linalg.norm(self.data.qpos[:2] - self._goal_pose[:2]))

    def angle_error(self) -> float:
        return abs(wrap_angle(self._goal_pose[2] - self.data.qpos[3]))

    def _success(self) -> bool:
        return self._goal_distance() < self.pos_threshold and self.angle_error() < self.angle_threshold

    def _extra_info(self) -> dict[str, Any]:
        return {"angle_error": self.angle_error()}

    # ---- privileged helpers ---------------------------------------------------------
    def expert_action(self) -> np.ndarray:
        """Scripted pusher (see :class:`envs.push_t_expert.PushTExpert`)."""
        tight = 0.5  # keep pushing until well inside the success region
        if self._goal_distance() < tight * self.pos_threshold and self.angle_error() < tight * self.angle_threshold:
            return np.zeros(2, np.float32)
        a = self._expert.act(self.block_pose(), self._goal_pose, self.pusher_xy())
        return np.clip(a / MAX_SPEED, -1.0, 1.0).astype(np.float32)

    @property
    def goal_pose(self) -> np.ndarray:
        return self._goal_pose.copy()

