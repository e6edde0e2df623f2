"""Shared 3-D arm for the wmplan/Arm* tasks: MJCF model, IK controller, task base class.

The arm stands at the origin of a table (top at z = 0) with a 4 cm cube on it.
Five revolute joints -- base yaw, shoulder pitch, elbow pitch, wrist pitch, wrist
roll -- carry a palm with two parallel fingers on slide joints. Arm bodies are
gravity-compensated; each arm joint is driven by an integrated-velocity servo
whose activation (the joint *target*) is part of the physics state, so a
commanded pose persists across ``get_state``/``set_state``.

Action ``(dx, dy, dz, g) in [-1, 1]^4``:
  * ``dx, dy, dz`` move the commanded end-effector point by ``MAX_DELTA * d`` per step
    (kept within ``MAX_LEAD`` of the actual end effector, and inside the workspace);
    the commanded orientation is fixed (fingers pointing down, closing along world y).
    The controller solves damped least-squares IK on the end-effector site Jacobian
    (``mujoco.mj_jacSite``) for the new joint targets and sets the servo velocities so
    that the targets arrive at them over the step.
  * ``g`` is an absolute gripper command: -1 fully open (8 cm), +1 fully closed.
One env step = 0.05 s (25 physics steps of 2 ms).

Proprio: end-effector position (3), gripper opening (1, metres between the fingers),
the five arm joint angles (5).
"""
from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from .base import GoalTask

MAX_DELTA = 0.03  # m of commanded end-effector motion per step at |d| = 1
MAX_LEAD = 0.06  # the commanded point stays within this of the actual end effector
FINGER_MAX = 0.04  # per-finger opening (m); the gap between the fingers is twice this
CUBE_HALF = 0.025
L_UPPER, L_FORE = 0.33, 0.33
SHOULDER_Z = 0.15
WORK_LO = np.array([0.15, -0.4, 0.02])  # workspace box for the commanded point (z: fingertips 5 mm above the table)
WORK_HI = np.array([0.65, 0.4, 0.45])  # (the commanded point; physics may deviate briefly)
HOME_EE = np.array([0.25, 0.0, 0.2])
FRONT_POS = (1.2, -0.55, 0.8)  # third-person camera position
# closer third-person view of the cube's workspace: the 5 cm cube covers ~4x the pixels of "front"
WORKSPACE_POS, WORKSPACE_TARGET = (0.85, -0.42, 0.5), (0.42, 0.0, 0.06)
ARM_JOINTS = ("yaw", "shoulder", "elbow", "wrist", "roll")


def look_at(pos: np.ndarray, target: np.ndarray) -> str:
    """MJCF ``xyaxes`` for a camera at ``pos`` looking at ``target`` (world z up)."""
    f = np.asarray(target, float) - np.asarray(pos, float)
    f /= np.linalg.norm(f)
    x = np.cross(f, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(x, f)
    return " ".join(f"{v:.5f}" for v in (*x, *y))


def arm_xml(lamp: bool = True) -> str:
    """The arm + table + cube scene (cameras: ``front`` third-person, ``overhead``, ``workspace``
    (third-person, close to the cube's area)).

    ``lamp``: a dimmer room and a downward spotlight in the hand. Its pool of light on the
    table shows where the gripper is (and, by its size, how high) across much of the frame,
    which a 64x64 encoder picks up far better than the small gripper itself.
    """
    front = look_at(FRONT_POS, [0.36, 0.0, 0.16])
    workspace = look_at(WORKSPACE_POS, WORKSPACE_TARGET)
    if lamp:
        headlight = '<headlight ambient="0.35 0.35 0.35" diffuse="0.25 0.25 0.25"/>'
        hand_lamp = ('<light name="lamp" pos="0 0 0" dir="0 0 -1" cutoff="45" exponent="3" diffuse="0.9 0.85 0.6" '
                     'specular="0 0 0" attenuation="1 0 0" castshadow="false"/>')
    else:
        headlight, hand_lamp = '<headlight ambient="0.55 0.55 0.55" diffuse="0.45 0.45 0.45"/>', ""
    return f"""
<mujoco model="arm">
  <compiler angle="radian"/>
  <option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <default>
    <geom contype="0" conaffinity="0" density="400"/>
    <joint type="hinge" damping="0.5" armature="0.01"/>
    <default class="touch"><geom contype="1" conaffinity="1" condim="4" friction="1.2 0.02 0.001"/></default>
  </default>
  <visual><global offwidth="512" offheight="512"/><quality numslices="12" numstacks="6"/>{headlight}</visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.82 0.78 0.7" rgb2="0.76 0.72 0.64" width="64" height="64"/>
    <material name="table" texture="grid" texrepeat="15 15"/>
  </asset>
  <worldbody>
    <geom name="table" type="plane" pos="0.3 0 0" size="1.5 1.5 0.05" material="table" class="touch" friction="0.5 0.01 0.001" priority="1"/>
    <geom name="pedestal" type="cylinder" pos="0 0 0.03" size="0.07 0.03" rgba="0.25 0.25 0.28 1"/>
    <body name="turret" pos="0 0 0.06" gravcomp="1">
      <joint name="yaw" axis="0 0 1" range="-2 2"/>
      <geom type="cylinder" pos="0 0 0.045" size="0.05 0.045" rgba="0.35 0.35 0.4 1"/>
      <body name="upper" pos="0 0 {SHOULDER_Z - 0.06}" gravcomp="1">
        <joint name="shoulder" axis="0 1 0" range="-0.6 1.9"/>
        <geom type="capsule" fromto="0 0 0 0 0 {L_UPPER}" size="0.032" rgba="0.95 0.55 0.15 1"/>
        <body name="fore" pos="0 0 {L_UPPER}" gravcomp="1">
          <joint name="elbow" axis="0 1 0" range="-1.5 2.4"/>
          <geom type="capsule" fromto="0 0 0 {L_FORE} 0 0" size="0.028" rgba="0.95 0.55 0.15 1"/>
          <body name="wrist" pos="{L_FORE} 0 0" gravcomp="1">
            <joint name="wrist" axis="0 1 0" range="-2.6 2.6"/>
            <geom type="capsule" fromto="0 0 0 0 0 -0.03" size="0.024" rgba="0.3 0.3 0.33 1"/>
            <body name="hand" pos="0 0 -0.03" gravcomp="1">
              <joint name="roll" axis="0 0 1" range="-2.8 2.8"/>
              <geom name="palm" class="touch" type="box" pos="0 0 -0.012" size="0.02 0.055 0.012" rgba="0.3 0.3 0.33 1"/>
              <site name="ee" pos="0 0 -0.065" size="0.005" rgba="0 0 0 0"/>
              {hand_lamp}
              <body name="finger_l" pos="0 0 -0.024" gravcomp="1">
                <joint name="finger_l" type="slide" axis="0 1 0" range="0 {FINGER_MAX}" damping="2" armature="0.01"/>
                <geom name="finger_l" class="touch" type="box" pos="0 0.008 -0.028" size="0.012 0.008 0.028" friction="1.5 0.03 0.001" rgba="0.15 0.15 0.18 1"/>
              </body>
              <body name="finger_r" pos="0 0 -0.024" gravcomp="1">
                <joint name="finger_r" type="slide" axis="0 -1 0" range="0 {FINGER_MAX}" damping="2" armature="0.01"/>
                <geom name="finger_r" class="touch" type="box" pos="0 -0.008 -0.028" size="0.012 0.008 0.028" friction="1.5 0.03 0.001" rgba="0.15 0.15 0.18 1"/>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
    <body name="cube" pos="0.4 0 {CUBE_HALF}">
      <freejoint name="cube"/>
      <geom name="cube" class="touch" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" mass="0.05" rgba="0.85 0.12 0.1 1"/>
    </body>
    <camera name="front" pos="{" ".join(map(str, FRONT_POS))}" xyaxes="{front}" fovy="38"/>
    <camera name="overhead" pos="0.38 0 1.3" xyaxes="1 0 0 0 1 0" fovy="45"/>
    <camera name="workspace" pos="{" ".join(map(str, WORKSPACE_POS))}" xyaxes="{workspace}" fovy="45"/>
  </worldbody>
  <contact><exclude body1="finger_l" body2="finger_r"/></contact>
  <actuator>
    {"".join(f'<intvelocity name="{j}" joint="{j}" kp="400" dampratio="1" ctrlrange="-4 4" forcerange="-15 15" inheritrange="1"/>' for j in ARM_JOINTS)}
    <position name="finger_l" joint="finger_l" kp="300" ctrlrange="0 {FINGER_MAX}" forcerange="-10 10"/>
    <position name="finger_r" joint="finger_r" kp="300" ctrlrange="0 {FINGER_MAX}" forcerange="-10 10"/>
  </actuator>
</mujoco>"""


class ArmTask(GoalTask):
    """Base class of the Arm tasks: model, controller, proprio and state helpers.

    Subclasses implement ``_reset_task``, ``_goal_distance`` and ``expert_action``.

    Args:
        image_size: rendered frame side in pixels.
        camera: ``"front"`` (third-person), ``"overhead"`` or ``"workspace"`` (closer third-person
            view of the cube's area).
        lamp: downward spotlight in the hand and a dimmer room (see :func:`arm_xml`).
    """

    proprio_dim = 9
    action_dim = 4
    substeps_default = 25

    def __init__(self, image_size: int = 64, camera: str = "front", lamp: bool = True,
                 render_mode: str | None = "rgb_array") -> None:
        self.lamp = bool(lamp)
        super().__init__(image_size=image_size, camera=camera, substeps=self.substeps_default, render_mode=render_mode)
        m = self.model

        def joint(name: str) -> int:
            return mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)

        jid = [joint(j) for j in ARM_JOINTS]
        self._arm_q = np.array([m.jnt_qposadr[j] for j in jid])
        self._arm_v = np.array([m.jnt_dofadr[j] for j in jid])
        self._arm_lo, self._arm_hi = m.jnt_range[jid, 0].copy(), m.jnt_range[jid, 1].copy()
        self._finger_q = np.array([m.jnt_qposadr[joint(f)] for f in ("finger_l", "finger_r")])
        self._cube_q = m.jnt_qposadr[joint("cube")]
        self._ee = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "ee")
        self._scratch = mujoco.MjData(m)
        self._jacp, self._jacr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        self._home_q = self.solve_ik(HOME_EE, np.array([0.0, 0.3, 0.3, -0.6, 0.0]), iters=60)

    def _model_xml(self) -> str:
        return arm_xml(self.lamp)

    # ---- kinematics / controller ------------------------------------------------------
    def forward_ee(self, q: np.ndarray) -> np.ndarray:
        """End-effector position for arm joint angles ``q`` (scratch kinematics)."""
        d = self._scratch
        d.qpos[self._arm_q] = q
        mujoco.mj_kinematics(self.model, d)
        return d.site_xpos[self._ee].copy()

    def solve_ik(
        self, target: np.ndarray, q0: np.ndarray, iters: int = 4, damping: float = 0.05, tol: float = 2e-4
    ) -> np.ndarray:
        """Damped least-squares IK: joint angles putting the ee site at ``target`` with the
        fingers pointing down and closing along world y (the home orientation, R = I),
        starting from ``q0``; stops early once the weighted error is below ``tol``."""
        m, d = self.model, self._scratch
        q = np.clip(np.asarray(q0, float).copy(), self._arm_lo, self._arm_hi)
        w = 0.3  # metres per radian of orientation error
        target = np.asarray(target, float)
        for _ in range(iters):
            d.qpos[self._arm_q] = q
            mujoco.mj_kinematics(m, d)
            R = d.site_xmat[self._ee]  # row-major 3x3
            # orientation error 0.5 * sum_i R[:, i] x e_i, for the identity target
            e_rot = 0.5 * np.array([R[5] - R[7], R[6] - R[2], R[1] - R[3]])
            err = np.concatenate([target - d.site_xpos[self._ee], w * e_rot])
            if err @ err < tol * tol:
                break
            mujoco.mj_comPos(m, d)
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self._ee)
            J = np.vstack([self._jacp[:, self._arm_v], w * self._jacr[:, self._arm_v]])
            dq = J.T @ np.linalg.solve(J @ J.T + damping**2 * np.eye(6), err)
            q = np.clip(q + dq, self._arm_lo, self._arm_hi)
        return q

    def _apply_action(self, action: np.ndarray) -> None:
        q_cmd = self.data.act[:5].copy()  # current joint targets (persist in the state)
        ee = self.ee_pos()
        cmd = self.forward_ee(q_cmd) + MAX_DELTA * action[:3]
        cmd = np.clip(np.clip(cmd, ee - MAX_LEAD, ee + MAX_LEAD), WORK_LO, WORK_HI)
        q_new = self.solve_ik(cmd, q_cmd)
        self.data.ctrl[:5] = (q_new - q_cmd) / (self.substeps * self.model.opt.timestep)
        self.data.ctrl[5:7] = FINGER_MAX * (1.0 - action[3]) / 2.0

    # ---- state helpers ------------------------------------------------------------------
    def ee_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._ee].copy()

    def gripper_opening(self) -> float:
        """Gap between the fingers (m)."""
        return float(self.data.qpos[self._finger_q].sum())

    def cube_pos(self) -> np.ndarray:
        return self.data.qpos[self._cube_q : self._cube_q + 3].copy()

    def arm_q(self) -> np.ndarray:
        return self.data.qpos[self._arm_q].copy()

    def _proprio(self) -> np.ndarray:
        return np.concatenate([self.ee_pos(), [self.gripper_opening()], self.arm_q()])

    def set_config(self, ee: np.ndarray, finger: float, cube: np.ndarray, cube_yaw: float = 0.0) -> None:
        """Place the arm (IK to ``ee``, at rest, servo targets = pose), fingers and cube.

        Raises ValueError when ``ee`` cannot be reached with the fingers pointing down."""
        q = self.solve_ik(ee, self._home_q, iters=60)
        reached = self.forward_ee(q)
        if np.linalg.norm(reached - ee) > 5e-3:
            raise ValueError(f"end-effector point {np.round(ee, 3).tolist()} is out of the arm's reach")
        d = self.data
        d.qpos[self._arm_q] = q
        d.act[:5] = q
        d.qpos[self._finger_q] = finger
        d.qpos[self._cube_q : self._cube_q + 7] = [*cube, np.cos(cube_yaw / 2), 0, 0, np.sin(cube_yaw / 2)]
        d.qvel[:] = 0.0
        d.ctrl[:] = 0.0
        d.ctrl[5:7] = finger
        mujoco.mj_forward(self.model, d)

    def config_state(self, ee: np.ndarray, finger: float, cube: np.ndarray, cube_yaw: float = 0.0) -> np.ndarray:
        """The full state of :meth:`set_config` without changing the current one."""
        saved = self.get_state()
        self.set_config(ee, finger, cube, cube_yaw)
        out = self.get_state()
        self.set_state(saved)
        return out

    @staticmethod
    def check_option(
        options: dict[str, Any], name: str, n: int, lo: np.ndarray | None = None, hi: np.ndarray | None = None
    ) -> np.ndarray | None:
        """The reset option ``name`` as a float array of ``n`` numbers (None when absent),
        checked to be finite and, when given, inside the box [lo, hi]."""
        v = options.get(name)
        if v is None:
            return None
        if np.shape(v) != (n,) or not np.all(np.isfinite(v)):
            raise ValueError(f"reset option {name}={v!r}: must be {n} finite numbers")
        v = np.asarray(v, float)
        if lo is not None and hi is not None and (np.any(v < lo[:n]) or np.any(v > hi[:n])):
            box = f"{np.asarray(lo[:n]).tolist()}..{np.asarray(hi[:n]).tolist()}"
            raise ValueError(f"reset option {name}={v.tolist()}: outside {box}")
        return v

    # ---- expert building blocks ---------------------------------------------------------
    def commanded_ee(self) -> np.ndarray:
        """The commanded end-effector point (forward kinematics of the servo targets)."""
        return self.forward_ee(self.data.act[:5])

    def goto(self, point: np.ndarray, grip: float, speed: float = MAX_DELTA) -> np.ndarray:
        """Action moving the commanded end-effector point towards ``point`` by at most
        ``speed`` metres this step (the controller adds deltas to the commanded point, so
        an expert aims from there rather than from the lagging actual end effector)."""
        delta = np.asarray(point, float) - self.commanded_ee()
        n = float(np.linalg.norm(delta))
        if n > speed:
            delta *= speed / n
        return np.array([*np.clip(delta / MAX_DELTA, -1.0, 1.0), grip], np.float32)
