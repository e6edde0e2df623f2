"""wmplan/PointMaze-v0: a point mass in a walled arena, seen from above.

Arena interior is [-1, 1]^2. A wall along y = 0 spans x in [-WALL_HALF, WALL_HALF],
so start/goal pairs on opposite sides of it need a detour around one of its ends.
Action: 2-D force in [-1, 1]^2 (heavily damped, so it acts like a velocity
command: top speed ~1 unit/s, one env step = 0.1 s). Proprio: (x, y, vx, vy).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import GoalTask

WALL_HALF = 0.4  # half-length of the central wall (gaps of 0.6 on either side)
WALL_THICK = 0.05  # half-thickness
AGENT_R = 0.09
LIMIT = 0.85  # start/goal positions are sampled in [-LIMIT, LIMIT]^2


def segment_crosses_wall(a: np.ndarray, b: np.ndarray) -> bool:
    """True when the straight segment a -> b (xy) passes through the central wall."""
    if np.sign(a[1]) == np.sign(b[1]):
        return False
    t = a[1] / (a[1] - b[1])
    x = a[0] + t * (b[0] - a[0])
    return bool(abs(x) <= WALL_HALF + AGENT_R)


def is_free(p: np.ndarray) -> bool:
    """True when a ball of radius AGENT_R at xy ``p`` (plus a margin) is clear of the wall."""
    margin = 0.03
    in_x = abs(p[0]) < WALL_HALF + AGENT_R + margin
    in_y = abs(p[1]) < WALL_THICK + AGENT_R + margin
    return bool(np.all(np.abs(p) <= LIMIT) and not (in_x and in_y))


class PointMazeEnv(GoalTask):
    """Goal-image navigation of a damped point mass around a wall.

    Args:
        image_size: rendered frame side in pixels (default 64).
        camera: ``"top"`` (orthographic, whole arena).
        cross_wall_prob: probability that a sampled start/goal pair is forced to
            have its straight line cross the wall (otherwise uniform).
        min_goal_dist: minimum start-goal distance when sampling.
        success_threshold: success when ||xy - goal_xy|| is below this.
        lamp: the agent carries a downward spotlight (dimmer ambient light). Its pool of
            light makes the agent's position visible across the whole frame, so distances
            between frame latents stay informative far from the goal, not only when the
            ball itself overlaps its goal position. ``False`` gives the flat-lit variant.
    reset options: ``{"start": [x, y], "goal": [x, y]}`` (either may be omitted).
    """

    metadata = {**GoalTask.metadata, "info_metrics": {"crosses_wall": "reset"}}

    proprio_dim = 4
    action_dim = 2

    def __init__(
        self,
        image_size: int = 64,
        camera: str = "top",
        cross_wall_prob: float = 0.5,
        min_goal_dist: float = 0.6,
        success_threshold: float = 0.15,
        lamp: bool = True,
        render_mode: str | None = "rgb_array",
    ) -> None:
        self.lamp = bool(lamp)
        if not 0.0 <= cross_wall_prob <= 1.0:
            raise ValueError(f"cross_wall_prob={cross_wall_prob}: must be in [0, 1]")
        self.cross_wall_prob = float(cross_wall_prob)
        self.min_goal_dist = float(min_goal_dist)
        self.success_threshold = float(success_threshold)
        self._goal_xy = np.zeros(2)
        self._crosses = False
        super().__init__(image_size=image_size, camera=camera, substeps=10, render_mode=render_mode)

    def _model_xml(self) -> str:
        wall = (
            f'<geom name="wall_mid" type="box" pos="0 0 0.05" size="{WALL_HALF} {WALL_THICK} 0.05" '
            'rgba="0.15 0.2 0.55 1"/>'
        )
        outer = "".join(
            f'<geom type="box" pos="{x} {y} 0.05" size="{sx} {sy} 0.05" rgba="0.15 0.2 0.55 1"/>'
            for x, y, sx, sy in [(0, 1.05, 1.1, 0.05), (0, -1.05, 1.1, 0.05), (1.05, 0, 0.05, 1.1), (-1.05, 0, 0.05, 1.1)]
        )
        if self.lamp:
            headlight = '<headlight ambient="0.25 0.25 0.25" diffuse="0.1 0.1 0.1" specular="0 0 0"/>'
            lamp = ('<light name="lamp" pos="0 0 0.6" dir="0 0 -1" cutoff="80" exponent="1" '
                    'diffuse="1 1 1" attenuation="1 0 0" castshadow="false"/>')
        else:
            headlight, lamp = '<headlight ambient="0.6 0.6 0.6" diffuse="0.4 0.4 0.4"/>', ""
        return f"""
<mujoco model="point_maze">
  <option timestep="0.01" gravity="0 0 0"/>
  <default><geom condim="1"/></default>
  <visual><global offwidth="512" offheight="512"/>{headlight}</visual>
  <worldbody>
    <geom name="floor" type="plane" size="1.1 1.1 0.1" rgba="0.85 0.85 0.8 1" contype="0" conaffinity="0"/>
    {wall}{outer}
    <body name="agent" pos="0 0 {AGENT_R}">
      <joint name="x" type="slide" axis="1 0 0" damping="10" limited="false"/>
      <joint name="y" type="slide" axis="0 1 0" damping="10" limited="false"/>
      {lamp}
      <geom name="agent" type="sphere" size="{AGENT_R}" mass="1" condim="1" rgba="0.9 0.15 0.1 1"/>
    </body>
    <camera name="top" pos="0 0 3" xyaxes="1 0 0 0 1 0" projection="orthographic" fovy="2.2"/>
  </worldbody>
  <actuator>
    <motor joint="x" gear="10" ctrlrange="-1 1" ctrllimited="true"/>
    <motor joint="y" gear="10" ctrlrange="-1 1" ctrllimited="true"/>
  </actuator>
</mujoco>"""

    # ---- hooks ------------------------------------------------------------------
    def _sample_free(self, rng: np.random.Generator) -> np.ndarray:
        while True:
            p = rng.uniform(-LIMIT, LIMIT, size=2)
            if is_free(p):
                return p

    def _reset_task(self, rng: np.random.Generator, options: dict[str, Any]) -> np.ndarray:
        start = options.get("start")
        goal = options.get("goal")
        for name, p in (("start", start), ("goal", goal)):
            if p is not None and (np.shape(p) != (2,) or not is_free(np.asarray(p, float))):
                raise ValueError(f"reset option {name}={p!r}: must be a free [x, y] inside the arena")
        force_cross = rng.random() < self.cross_wall_prob
        for _ in range(10_000):
            s = np.asarray(start, float) if start is not None else self._sample_free(rng)
            g = np.asarray(goal, float) if goal is not None else self._sample_free(rng)
            if start is not None and goal is not None:
                break
            if np.linalg.norm(s - g) < self.min_goal_dist:
                continue
            if force_cross and not segment_crosses_wall(s, g):
                continue
            break
        self._goal_xy, self._crosses = g, segment_crosses_wall(s, g)
        goal_state = self._state_at(g)
        self.data.qpos[:2] = s
        self.data.qvel[:2] = 0.0
        return goal_state

    def _state_at(self, xy: np.ndarray) -> np.ndarray:
        saved = self.get_state()
        self.data.qpos[:2] = xy
        self.data.qvel[:2] = 0.0
        self.data.ctrl[:] = 0.0
        out = self.get_state()
        self.set_state(saved)
        return out

    def _goal_from_state(self, goal_state: np.ndarray) -> None:
        self._goal_xy = self._read_at(goal_state, lambda: self.data.qpos[:2].copy())
        self._crosses = segment_crosses_wall(self.data.qpos[:2].copy(), self._goal_xy)

    def _apply_action(self, action: np.ndarray) -> None:
        self.data.ctrl[:2] = action

    def _proprio(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[:2], self.data.qvel[:2]])

    def _goal_distance(self) -> float:
        return float(np.linalg.norm(self.data.qpos[:2] - self._goal_xy))

    def _extra_info(self) -> dict[str, Any]:
        return {"crosses_wall": self._crosses}

    # ---- privileged helpers (scripted expert, tests) ------------------------------
    def expert_action(self) -> np.ndarray:
        """Go straight to the goal, or via the nearer end of the wall when it is in the way."""
        pos, vel = self.data.qpos[:2].copy(), self.data.qvel[:2].copy()
        target = self._goal_xy
        if segment_crosses_wall(pos, target):
            side = np.sign(pos[0] + target[0]) or 1.0
            ex = side * (WALL_HALF + AGENT_R + 0.12)
            # aim for the corner on our side of the wall, then the one past it
            corner_y = np.sign(pos[1]) * (WALL_THICK + AGENT_R + 0.05)
            target = np.array([ex, corner_y]) if abs(pos[0] - ex) > 0.08 else np.array([ex, -corner_y])
        return np.clip(4.0 * (target - pos) - 0.3 * vel, -1.0, 1.0).astype(np.float32)

    @property
    def goal_xy(self) -> np.ndarray:
        return self._goal_xy.copy()
