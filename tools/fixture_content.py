"""Deterministic synthetic trajectories for the dataset-format fixtures (numpy only).

Shared by ``tools/make_lerobot_fixtures.py`` and ``tools/make_minari_fixtures.py``, which run
in their own virtual environments (lerobot, minari) without wmplan installed, so this file
imports nothing but numpy.

A point moves on a plane under 2-D velocity actions; each frame shows a smooth background
gradient and a coloured square at the point, so video codecs see realistic (compressible but
non-trivial) content.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Trajectory:
    """One synthetic episode of N frames, each paired with the action taken at it.

    frames uint8 [N, H, W, 3]; wrist uint8 [N, S, S, 3] (a second, small camera);
    state float32 [N, 4] (x, y, vx, vy); action float32 [N, 2] in [-1, 1];
    reward float32 [N] (received after the frame's action); success bool [N].
    """

    frames: np.ndarray
    wrist: np.ndarray
    state: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    success: np.ndarray


def _draw(pos: np.ndarray, height: int, width: int, phase: float) -> np.ndarray:
    """uint8 [height, width, 3]: a gradient background and a square centred at ``pos`` in [0, 1]^2."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([40 + 150 * xx / width, 60 + 120 * yy / height,
                    np.full_like(xx, 90 + 60 * np.sin(phase))], axis=-1)
    side = max(height, width) // 8
    cy, cx = int(pos[1] * (height - side)), int(pos[0] * (width - side))
    img[cy:cy + side, cx:cx + side] = (230, 40, 30)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_trajectory(seed: int, length: int, height: int, width: int, wrist_size: int = 32) -> Trajectory:
    """A trajectory of ``length`` frames from a seeded random walk (deterministic in its arguments)."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0.2, 0.8, size=2)
    vel = np.zeros(2)
    frames, wrist, state, action, reward = [], [], [], [], []
    goal = np.array([0.5, 0.5])
    for t in range(length):
        a = np.clip(rng.normal(0.0, 0.6, size=2), -1.0, 1.0).astype(np.float32)
        frames.append(_draw(pos, height, width, 0.3 * t))
        wrist.append(_draw(pos[::-1], wrist_size, wrist_size, 0.5 * t))
        state.append(np.concatenate([pos, vel]).astype(np.float32))
        action.append(a)
        vel = 0.5 * vel + 0.05 * a
        pos = np.clip(pos + vel, 0.0, 1.0)
        reward.append(np.float32(-np.linalg.norm(pos - goal)))
    reward_arr = np.array(reward, dtype=np.float32)
    return Trajectory(frames=np.stack(frames), wrist=np.stack(wrist), state=np.stack(state),
                      action=np.stack(action), reward=reward_arr, success=reward_arr > -0.15)
