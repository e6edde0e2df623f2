"""GoalTask: the one base class every wmplan MuJoCo task derives from.

A task is an MJCF model plus five small hooks (start/goal sampling, action
application, proprio, distance). The base class owns everything shared:
physics stepping, pixel rendering, full-state save/restore, goal images rendered
from a goal state, seeding, and the gymnasium spaces.

Observation: ``{"pixels": uint8 [H, W, 3], "proprio": float32 [P]}``.
``info``: ``success`` (bool), ``distance`` (float), ``goal_image`` (uint8 [H, W, 3]),
``goal_proprio`` (float32 [P]), ``state`` (float64 [S], full physics state).
"""
from __future__ import annotations

import os

# Headless rendering by default; must happen before mujoco is imported anywhere.
os.environ.setdefault("MUJOCO_GL", "egl")

from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

_STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS


class GoalTask(gym.Env):
    """Base class for goal-conditioned MuJoCo tasks with pixel observations.

    Subclasses set ``proprio_dim`` and ``action_dim`` and implement
    ``_model_xml``, ``_reset_task``, ``_apply_action``, ``_proprio``,
    ``_goal_distance`` and (optionally) ``_success``.
    """

    # info_metrics: the task's own scalar ``info`` entries that evaluation records per episode,
    # each read at "reset" (e.g. PointMaze's crosses_wall) or at the "final" step (``final_<key>``)
    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10, "info_metrics": {}}
    proprio_dim: int = 0
    action_dim: int = 0
    success_threshold: float = 0.05

    def __init__(
        self,
        image_size: int = 64,
        camera: str = "top",
        substeps: int = 10,
        render_mode: str | None = "rgb_array",
    ) -> None:
        """``substeps``: MuJoCo physics steps per env step (not the world model's frameskip,
        which counts env steps per predictor step)."""
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}: only 'rgb_array' is supported")
        if image_size < 8:
            raise ValueError(f"image_size={image_size}: must be >= 8")
        self.render_mode = render_mode
        self.image_size = int(image_size)
        self.camera = camera
        self.substeps = int(substeps)
        self.model = mujoco.MjModel.from_xml_string(self._model_xml())
        self.data = mujoco.MjData(self.model)
        if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
            raise ValueError(f"{type(self).__name__}: camera={camera!r} not in the model")
        self._renderer: mujoco.Renderer | None = None
        self._state_size = mujoco.mj_stateSize(self.model, _STATE_SPEC)
        self._goal_state = np.zeros(self._state_size)
        self._goal_image = np.zeros((self.image_size, self.image_size, 3), np.uint8)
        self._goal_proprio = np.zeros(self.proprio_dim, np.float32)
        lo, hi = self._action_bounds()
        self.action_space = gym.spaces.Box(lo, hi, dtype=np.float32)
        self.observation_space = gym.spaces.Dict(
            {
                "pixels": gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
                "proprio": gym.spaces.Box(-np.inf, np.inf, (self.proprio_dim,), np.float32),
            }
        )

    # ---- hooks for subclasses -------------------------------------------------
    def _model_xml(self) -> str:
        raise NotImplementedError

    def _action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return -np.ones(self.action_dim, np.float32), np.ones(self.action_dim, np.float32)

    def _reset_task(self, rng: np.random.Generator, options: dict[str, Any]) -> np.ndarray:
        """Put the start configuration into ``self.data`` and return the goal state
        (a full physics state vector, see :meth:`get_state`)."""
        raise NotImplementedError

    def _goal_from_state(self, goal_state: np.ndarray) -> None:
        """Set the task's goal (what success and distance compare with) to the configuration of
        the full physics state ``goal_state``; the start is already in ``self.data``."""
        raise NotImplementedError(f"{type(self).__name__} does not take a recorded goal state")

    def _read_at(self, state: np.ndarray, read: Callable[[], Any]) -> Any:
        """``read()`` evaluated with ``state`` loaded (the current state is restored after)."""
        saved = self.get_state()
        self.set_state(state)
        try:
            return read()
        finally:
            self.set_state(saved)

    def _apply_action(self, action: np.ndarray) -> None:
        raise NotImplementedError

    def _proprio(self) -> np.ndarray:
        raise NotImplementedError

    def _goal_distance(self) -> float:
        """Task distance between the current and the goal configuration."""
        raise NotImplementedError

    def _success(self) -> bool:
        return self._goal_distance() < self.success_threshold

    def _extra_info(self) -> dict[str, Any]:
        return {}

    def expert_action(self) -> np.ndarray:
        """Scripted expert: the action a privileged controller takes now (float32 [A])."""
        raise NotImplementedError(f"{type(self).__name__} has no scripted expert")

    # ---- state ----------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        """Full physics state, float64 [S]."""
        s = np.empty(self._state_size)
        mujoco.mj_getState(self.model, self.data, s, _STATE_SPEC)
        return s

    def set_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, np.float64)
        if state.shape != (self._state_size,):
            raise ValueError(f"state has shape {state.shape}, expected ({self._state_size},)")
        if not np.isfinite(state).all():
            bad = np.flatnonzero(~np.isfinite(state)).tolist()
            raise ValueError(f"{type(self).__name__}.set_state: state holds non-finite value(s) at index {bad}")
        mujoco.mj_setState(self.model, self.data, state, _STATE_SPEC)
        mujoco.mj_forward(self.model, self.data)

    def render_state(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Render the camera view and proprio of ``state`` without disturbing the episode.

        Returns (uint8 [H, W, 3], float32 [P]).
        """
        saved = self.get_state()
        self.set_state(state)
        img, prop = self._render_pixels(), self._proprio().astype(np.float32)
        self.set_state(saved)
        return img, prop

    # ---- gymnasium API ----------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        options = dict(options or {})
        start, goal = options.pop("state", None), options.pop("goal_state", None)
        if (start is None) != (goal is None):
            raise ValueError("reset options 'state' and 'goal_state' go together (a recorded start and goal)")
        goal_state = self._reset_task(self.np_random, options)
        mujoco.mj_forward(self.model, self.data)
        if start is not None:  # dataset-goal protocol: a recorded start and a recorded goal state
            self.set_state(start)
            goal_state = np.asarray(goal, np.float64)
            if goal_state.shape != (self._state_size,) or not np.isfinite(goal_state).all():
                raise ValueError(f"reset option goal_state must be {self._state_size} finite numbers, "
                                 f"got shape {goal_state.shape}")
            self._goal_from_state(goal_state)
        self._goal_state = np.asarray(goal_state, np.float64).copy()
        self._goal_image, self._goal_proprio = self.render_state(self._goal_state)
        return self._obs(), self._info()

    def step(self, action):
        action = np.asarray(action, np.float32)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action has shape {action.shape}, expected {self.action_space.shape}")
        if not np.isfinite(action).all():
            # MuJoCo would zero a NaN control silently and the episode would go on as if planned
            bad = np.flatnonzero(~np.isfinite(action)).tolist()
            raise ValueError(f"{type(self).__name__}.step: action holds non-finite value(s) at index {bad} "
                             f"(action={action.tolist()})")
        action = np.clip(action, self.action_space.low, self.action_space.high)
        self._apply_action(action)
        for _ in range(self.substeps):
            mujoco.mj_step(self.model, self.data)
        # mj_step leaves positions, sites and lights at the state before its last integration: recompute
        # them for the new state, so the frame and success match render_state (the goal image) of that state
        mujoco.mj_forward(self.model, self.data)
        info = self._info()
        reward = -float(info["distance"])
        return self._obs(), reward, False, False, info

    def render(self):
        return self._render_pixels() if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ---- internals --------------------------------------------------------------
    def _render_pixels(self) -> np.ndarray:
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        self._renderer.update_scene(self.data, camera=self.camera)
        return self._renderer.render().copy()

    def _obs(self) -> dict[str, np.ndarray]:
        return {"pixels": self._render_pixels(), "proprio": self._proprio().astype(np.float32)}

    def _info(self) -> dict[str, Any]:
        dist = float(self._goal_distance())
        return {
            "success": bool(self._success()),
            "distance": dist,
            "goal_image": self._goal_image.copy(),
            "goal_proprio": self._goal_proprio.copy(),
            "state": self.get_state(),
            **self._extra_info(),
        }

    @property
    def goal_state(self) -> np.ndarray:
        return self._goal_state.copy()
