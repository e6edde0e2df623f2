"""GymAdapter: any registered gymnasium env that renders ``rgb_array``, seen as a wmplan task.

    gym.make("wmplan/Gym-v0", inner="Reacher-v5", proprio=[0, 1, 2, 3, 6, 7], task="reacher")
    gym.make("wmplan/Gym-Reacher-v5")          # the same, with the settings of configs/env/gym_reacher.yaml

The adapter exposes the interface wmplan's own tasks have (envs/base.py):

- observation ``{"pixels": uint8 [S, S, 3], "proprio": float32 [P]}``: pixels are the inner env's
  ``render()`` centre-cropped to a square and resized to ``image_size`` (area average when the
  side is a multiple of ``image_size``, else nearest); proprio is the inner observation's key
  ``proprio="<key>"`` (Dict observations), its indices ``proprio=[i, ...]`` or slice ``"a:b"``
  (Box observations), or nothing (``proprio=None``: P = 0).
- ``info``: ``success`` (bool), ``distance`` (float), ``goal_image`` (uint8 [S, S, 3]),
  ``goal_proprio`` (float32 [P]), ``state`` (float64 [Z], the full MuJoCo physics state, Z = 0
  for a non-MuJoCo env).
- ``get_state() / set_state(state) / render_state(state) -> (image, proprio)`` for MuJoCo-based
  envs (``env.unwrapped.model / .data``, via ``mujoco.mj_getState(mjSTATE_FULLPHYSICS)``).
- reset options ``state`` and ``goal_state`` (together: the dataset-goal protocol of
  ``plan.py goals=dataset``): start at the recorded state, goal = the recorded goal state, goal
  image rendered from it. Other options go to the inner env's ``reset``.

What "goal", success and distance mean is a *task hook* (``task=<name>``, :data:`TASK_HOOKS`):
``reacher`` (gymnasium Reacher-v5) makes a sampled goal from the env's own target (the arm
configuration that puts the fingertip on it, by two-link inverse kinematics), measures the
fingertip-to-goal distance (to the target, or to the fingertip of a recorded goal state) and has
a scripted expert (PD to that configuration). Without a task hook the goal of a plain reset is
the start state itself and distance is the qpos distance to the goal state: use dataset goals.
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from ..checks import check_finite  # noqa: E402
from .base import GoalTask  # noqa: E402

_STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS


def crop_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop uint8 [H, W, 3] to a square and resize it to uint8 [size, size, 3]."""
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s, :3]
    if s == size:
        return np.ascontiguousarray(img, np.uint8)
    if s % size == 0:  # area average
        f = s // size
        return img.reshape(size, f, size, f, 3).astype(np.float32).mean((1, 3)).round().astype(np.uint8)
    idx = ((np.arange(size) + 0.5) * s / size).astype(int)
    return np.ascontiguousarray(img[idx][:, idx], np.uint8)


class TaskHooks:
    """Generic goal semantics: a plain reset's goal is its start; distance = qpos L2 to the goal."""

    has_expert = False

    def goal_state(self, env: GymAdapter) -> np.ndarray:
        """Goal state (full physics state) for a plain reset; the start is in ``env`` already."""
        return env.get_state()

    def distance(self, env: GymAdapter) -> float:
        if env.state_dim == 0:
            return 0.0
        q = env.unwrapped_env.data.qpos.copy()
        gq = env.read_at(env.goal_state, lambda: env.unwrapped_env.data.qpos.copy())
        return float(np.linalg.norm(q - gq))

    def set_goal_from_state(self, env: GymAdapter, goal_state: np.ndarray) -> None:
        """Called when a recorded goal state is given (dataset goals)."""

    def expert_action(self, env: GymAdapter) -> np.ndarray:
        raise NotImplementedError(f"{env.inner_id}: no scripted expert (task hook {type(self).__name__})")


class ReacherHooks(TaskHooks):
    """gymnasium Reacher-v5: two links (0.1, 0.11 m), fingertip to the red target.

    Plain reset: goal = the arm configuration (inverse kinematics, qvel 0) whose fingertip is on the
    target; distance = fingertip-to-target (m). Recorded goal state: distance = fingertip now to the
    fingertip in the goal state.
    """

    has_expert = True
    L1, L2 = 0.1, 0.11

    def __init__(self) -> None:
        self._goal_tip: np.ndarray | None = None  # fingertip xy of a recorded goal state

    @staticmethod
    def tip(env: GymAdapter) -> np.ndarray:
        return env.unwrapped_env.data.body("fingertip").xpos[:2].copy()

    def _ik(self, env: GymAdapter, xy: np.ndarray) -> np.ndarray:
        """Joint angles [2] putting the fingertip at ``xy`` (the elbow branch nearest the current one)."""
        r2 = float(np.clip(xy @ xy, (self.L1 - self.L2) ** 2 + 1e-9, (self.L1 + self.L2) ** 2 - 1e-9))
        c2 = np.clip((r2 - self.L1 ** 2 - self.L2 ** 2) / (2 * self.L1 * self.L2), -1.0, 1.0)
        q_now = env.unwrapped_env.data.qpos[:2]
        best = None
        for q2 in (np.arccos(c2), -np.arccos(c2)):
            q1 = np.arctan2(xy[1], xy[0]) - np.arctan2(self.L2 * np.sin(q2), self.L1 + self.L2 * np.cos(q2))
            q = np.array([q1, q2])
            cost = np.abs((q - q_now + np.pi) % (2 * np.pi) - np.pi).sum()
            if best is None or cost < best[0]:
                best = (cost, q)
        return best[1]

    def _target(self, env: GymAdapter) -> np.ndarray:
        return env.unwrapped_env.data.body("target").xpos[:2].copy()

    def goal_state(self, env: GymAdapter) -> np.ndarray:
        self._goal_tip = None
        u = env.unwrapped_env
        q = self._ik(env, self._target(env))
        saved = env.get_state()
        u.data.qpos[:2], u.data.qvel[:] = q, 0.0
        mujoco.mj_forward(u.model, u.data)
        out = env.get_state()
        env.set_state(saved)
        return out

    def set_goal_from_state(self, env: GymAdapter, goal_state: np.ndarray) -> None:
        self._goal_tip = env.read_at(goal_state, lambda: self.tip(env))

    def goal_tip(self, env: GymAdapter) -> np.ndarray:
        return self._target(env) if self._goal_tip is None else self._goal_tip

    def distance(self, env: GymAdapter) -> float:
        return float(np.linalg.norm(self.tip(env) - self.goal_tip(env)))

    def expert_action(self, env: GymAdapter) -> np.ndarray:
        """PD torque towards the IK configuration of the goal fingertip, float32 [2] in [-1, 1]."""
        u = env.unwrapped_env
        q, dq = u.data.qpos[:2], u.data.qvel[:2]
        err = (self._ik(env, self.goal_tip(env)) - q + np.pi) % (2 * np.pi) - np.pi
        return np.clip(0.8 * err - 0.08 * dq, -1.0, 1.0).astype(np.float32)


TASK_HOOKS: dict[str, type[TaskHooks]] = {"generic": TaskHooks, "reacher": ReacherHooks}


class GymAdapter(gym.Env):
    """A registered gymnasium env (``inner``) with wmplan's pixel/proprio observation and goal info.

    Args:
        inner: the gymnasium id (e.g. ``"Reacher-v5"``), made with ``render_mode="rgb_array"``.
        inner_kwargs: passed to ``gym.make(inner, ...)`` (e.g. ``width``, ``height``,
            ``default_camera_config`` of MuJoCo envs).
        image_size: side S of the pixels (>= 8).
        proprio: ``None`` | observation key (str) | indices (list of int) | slice ``"a:b"``.
        task: a name in :data:`TASK_HOOKS` (goal, distance, expert).
        success_threshold: success when ``distance < success_threshold``.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10, "info_metrics": {}}

    def __init__(self, inner: str = "Reacher-v5", inner_kwargs: dict[str, Any] | None = None, image_size: int = 64,
                 proprio: str | Sequence[int] | None = None, task: str = "generic",
                 success_threshold: float = 0.02, render_mode: str | None = "rgb_array") -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}: only 'rgb_array' is supported")
        if int(image_size) < 8:
            raise ValueError(f"image_size={image_size}: must be >= 8")
        if task not in TASK_HOOKS:
            raise ValueError(f"task={task!r}: unknown task hook; known: {sorted(TASK_HOOKS)}")
        if not np.isfinite(success_threshold) or success_threshold <= 0:
            raise ValueError(f"success_threshold={success_threshold!r}: must be a positive number")
        self.render_mode, self.image_size, self.inner_id = render_mode, int(image_size), str(inner)
        self.success_threshold = float(success_threshold)
        kw = dict(inner_kwargs or {})
        if isinstance(kw.get("default_camera_config"), dict):  # YAML lists -> the arrays MuJoCo's camera wants
            kw["default_camera_config"] = {k: np.asarray(v, np.float64) if isinstance(v, (list, tuple)) else v
                                           for k, v in kw["default_camera_config"].items()}
        try:
            self._inner = gym.make(inner, render_mode="rgb_array", disable_env_checker=True, **kw)
        except gym.error.Error as e:
            raise ValueError(f"inner={inner!r} with inner_kwargs={inner_kwargs!r} does not build: {e}") from e
        self.unwrapped_env = self._inner.unwrapped
        self.hooks = TASK_HOOKS[task]()
        space = self._inner.action_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"inner={inner!r}: needs a 1-D Box action space, got {space}")
        self.action_space = gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32)
        self._select = self._proprio_selector(proprio, self._inner.observation_space)
        model = getattr(self.unwrapped_env, "model", None)
        self._mujoco = isinstance(model, mujoco.MjModel)
        self.state_dim = mujoco.mj_stateSize(model, _STATE_SPEC) if self._mujoco else 0
        self.proprio_dim = int(self._select(self._inner.observation_space.sample()).shape[0])
        self.action_dim = int(space.shape[0])
        self.observation_space = gym.spaces.Dict({
            "pixels": gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
            "proprio": gym.spaces.Box(-np.inf, np.inf, (self.proprio_dim,), np.float32)})
        self._last_obs: Any = None
        self._goal_state = np.zeros(self.state_dim)
        self._goal_image = np.zeros((self.image_size, self.image_size, 3), np.uint8)
        self._goal_proprio = np.zeros(self.proprio_dim, np.float32)

    # ---- proprio ------------------------------------------------------------------
    def _proprio_selector(self, proprio: Any, space: gym.Space):
        """A function inner observation -> float32 [P] for the ``proprio`` setting."""
        if proprio is None:
            return lambda obs: np.zeros(0, np.float32)
        if isinstance(proprio, str) and ":" not in proprio:
            if not isinstance(space, gym.spaces.Dict) or proprio not in space.spaces:
                keys = sorted(space.spaces) if isinstance(space, gym.spaces.Dict) else "none (a Box observation)"
                raise ValueError(f"proprio={proprio!r}: not a key of {self.inner_id}'s observation; keys: {keys}")
            return lambda obs: np.asarray(obs[proprio], np.float32).ravel()
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"proprio={proprio!r}: indices need a 1-D Box observation, {self.inner_id} has {space}")
        n = space.shape[0]
        if isinstance(proprio, str):
            try:
                a, b = (int(p) if p.strip() else None for p in proprio.split(":"))
            except ValueError as e:
                raise ValueError(f"proprio={proprio!r}: a slice must read 'a:b' with whole numbers") from e
            idx = np.arange(n)[slice(a, b)]
        else:
            idx = np.asarray(list(proprio), int)
        if idx.size == 0 or idx.min() < -n or idx.max() >= n:
            raise ValueError(f"proprio={proprio!r}: indices must select from the {n} observation entries")
        return lambda obs: np.asarray(obs, np.float32)[idx]

    def _inner_obs_now(self) -> Any:
        """The inner observation of the current physics state (MuJoCo envs' ``_get_obs``)."""
        get = getattr(self.unwrapped_env, "_get_obs", None)
        return get() if callable(get) else self._last_obs

    # ---- state ----------------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        """Full MuJoCo physics state float64 [Z] (Z = 0 for a non-MuJoCo env)."""
        if not self._mujoco:
            return np.zeros(0)
        s = np.empty(self.state_dim)
        mujoco.mj_getState(self.unwrapped_env.model, self.unwrapped_env.data, s, _STATE_SPEC)
        return s

    def set_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, np.float64)
        if not self._mujoco:
            raise ValueError(f"set_state: {self.inner_id} is not a MuJoCo env, its state cannot be set")
        if state.shape != (self.state_dim,):
            raise ValueError(f"state has shape {state.shape}, expected ({self.state_dim},) for {self.inner_id}")
        check_finite(state, "state", f"GymAdapter({self.inner_id}).set_state")
        u = self.unwrapped_env
        mujoco.mj_setState(u.model, u.data, state, _STATE_SPEC)
        mujoco.mj_forward(u.model, u.data)

    # ``read_at(state, read)``: ``read()`` evaluated with ``state`` loaded, the current state restored
    # after; GoalTask's, which needs only get_state / set_state
    read_at = GoalTask._read_at

    def render_state(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 [S, S, 3], float32 [P]) of ``state``, without disturbing the episode."""
        return self.read_at(state, lambda: (self._pixels(), self._select(self._inner_obs_now())))

    # ---- gymnasium API ------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        start, goal = options.pop("state", None), options.pop("goal_state", None)
        if (start is None) != (goal is None):
            raise ValueError("reset options 'state' and 'goal_state' go together (a recorded start and goal)")
        self._last_obs, _ = self._inner.reset(seed=seed, options=options or None)
        if start is None:
            self._goal_state = self.hooks.goal_state(self) if self._mujoco else np.zeros(0)
        else:
            goal = np.asarray(goal, np.float64)
            if goal.shape != (self.state_dim,) or not np.isfinite(goal).all():
                raise ValueError(f"reset option goal_state must be {self.state_dim} finite numbers, got shape {goal.shape}")
            self.set_state(start)
            self._last_obs = self._inner_obs_now()
            self._goal_state = goal.copy()
            self.hooks.set_goal_from_state(self, goal)
        if self._mujoco:
            self._goal_image, self._goal_proprio = self.render_state(self._goal_state)
        else:  # no state to render from: the first frame stands in (use dataset goals)
            self._goal_image, self._goal_proprio = self._pixels(), self._select(self._last_obs)
        return self._obs(), self._info()

    def step(self, action):
        action = np.asarray(action, np.float32)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action has shape {action.shape}, expected {self.action_space.shape}")
        # MuJoCo would zero a NaN control silently and the episode would go on as if planned
        check_finite(action, "action", f"GymAdapter({self.inner_id}).step (action={action.tolist()})")
        action = np.clip(action, self.action_space.low, self.action_space.high)
        # the unwrapped env: the adapter's own registration owns the time limit
        self._last_obs, _, terminated, _, _ = self.unwrapped_env.step(action)
        if self._mujoco:  # kinematics of the new state (mj_step leaves them at the old one): pixels == render_state
            mujoco.mj_forward(self.unwrapped_env.model, self.unwrapped_env.data)
        info = self._info()
        return self._obs(), -float(info["distance"]), bool(terminated), False, info

    def render(self):
        return self._pixels() if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        self._inner.close()

    def expert_action(self) -> np.ndarray:
        """The task hook's scripted expert (float32 [A]); the ``expert`` collection policy calls it."""
        return self.hooks.expert_action(self)

    # ---- internals ------------------------------------------------------------------------
    def _pixels(self) -> np.ndarray:
        img = self.unwrapped_env.render()
        if img is None or np.ndim(img) != 3:
            raise ValueError(f"{self.inner_id}.render() returned {type(img).__name__}, not an rgb_array frame")
        return crop_resize(np.asarray(img), self.image_size)

    def _obs(self) -> dict[str, np.ndarray]:
        return {"pixels": self._pixels(), "proprio": self._select(self._last_obs)}

    def _info(self) -> dict[str, Any]:
        dist = float(self.hooks.distance(self))
        return {"success": bool(dist < self.success_threshold), "distance": dist,
                "goal_image": self._goal_image.copy(), "goal_proprio": self._goal_proprio.copy(),
                "state": self.get_state()}

    @property
    def goal_state(self) -> np.ndarray:
        return self._goal_state.copy()
