"""Scripted experts solve their tasks; grasping works physically.

The full figure (>= 0.95 success over 50 seeded episodes per task) is measured by
``scripts/task_figures.py``; here a few seeds keep the suite fast.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from wmplan import envs
from wmplan.envs.arm_base import CUBE_HALF
from wmplan.envs.policies import NoisyExpertPolicy

SEEDS = (1000, 1001, 1002)  # not the 0..49 used for the reported figure


def run_expert(env: gym.Env, seed: int, max_steps: int) -> tuple[bool, int]:
    """(reached success at some step, steps taken)."""
    env.reset(seed=seed)
    u = env.unwrapped
    for t in range(max_steps):
        a = u.expert_action()
        assert a.dtype == np.float32 and env.action_space.contains(a)
        _, _, _, _, info = u.step(a)
        if info["success"]:
            return True, t + 1
    return False, max_steps


@pytest.mark.parametrize("env_id", sorted(envs.TASKS))
def test_expert_solves_task(env_id):
    env = gym.make(env_id, disable_env_checker=True, image_size=16)
    steps = envs.TASKS[env_id][1]
    results = [run_expert(env, s, steps) for s in SEEDS]
    assert all(ok for ok, _ in results), f"{env_id}: expert failed on seeds {[s for s, (ok, _) in zip(SEEDS, results) if not ok]}"


@pytest.mark.parametrize("env_id", ["wmplan/PushT-v0", "wmplan/ArmPush-v0"])
def test_noisy_expert_acts_in_bounds(env_id):
    env = gym.make(env_id, disable_env_checker=True, image_size=16)
    env.reset(seed=0)
    pol = NoisyExpertPolicy(env.action_space, np.random.default_rng(0), noise=0.5)
    for _ in range(10):
        a = pol.act(env)
        assert env.action_space.contains(a)
        env.unwrapped.step(a)


def test_grasp_lift_hold_and_drop():
    """The pick-place expert lifts the cube by friction alone; it stays held, and falls when released."""
    env = gym.make("wmplan/ArmPickPlace-v0", disable_env_checker=True, image_size=16)
    u = env.unwrapped
    env.reset(options={"start": [0.4, -0.1, 0.2], "cube": [0.42, 0.05], "goal": [0.35, -0.1, 0.2]})
    for _ in range(50):
        _, _, _, _, info = u.step(u.expert_action())
    assert info["success"] and u.holding() and u.cube_pos()[2] > 0.15
    offset = u.cube_pos() - u.ee_pos()
    for _ in range(20):  # keep the grip, move nothing: the cube must not slip
        u.step(np.array([0.0, 0.0, 0.0, 1.0], np.float32))
    assert u.holding()
    np.testing.assert_allclose(u.cube_pos() - u.ee_pos(), offset, atol=3e-3)
    for _ in range(4):  # carry it sideways and up at full speed: still held
        u.step(np.array([0.0, 1.0, 1.0, 1.0], np.float32))
    for _ in range(3):
        u.step(np.array([0.0, 0.0, 0.0, 1.0], np.float32))
    assert u.holding()
    np.testing.assert_allclose(u.cube_pos() - u.ee_pos(), offset, atol=5e-3)
    for _ in range(20):  # open: it drops onto the table
        u.step(np.array([0.0, 0.0, 0.0, -1.0], np.float32))
    assert not u.holding() and u.cube_pos()[2] == pytest.approx(CUBE_HALF, abs=0.003)


def test_task_figures_script(tmp_path):
    """CleanRL-style smoke run of scripts/task_figures.py: the expert figure, frame costs and
    the start/goal gallery (one 64-px column per task, start above goal)."""
    import json

    import imageio.v2 as imageio

    from tests.conftest import run_script

    out, gal = tmp_path / "tf.json", tmp_path / "gallery.png"
    run_script("task_figures.py", "tasks=[wmplan/Reacher-v0,wmplan/PointMaze-v0]", "episodes=2", "frames=25",
               f"out={out}", f"gallery={gal}")
    rows = json.loads(out.read_text())
    assert set(rows) == {"wmplan/Reacher-v0", "wmplan/PointMaze-v0"}
    assert rows["wmplan/Reacher-v0"]["success_any"] == 1.0 and rows["wmplan/Reacher-v0"]["render_ms"] > 0
    img = imageio.imread(gal)
    assert img.shape[:2] == (2 * (64 * 2 + 2), 2 * (2 * 64 + 2))  # scale 2: (start+sep+goal) x (2 cols + sep)
    env = gym.make("wmplan/Reacher-v0")
    obs, info = env.reset(seed=0)
    assert np.array_equal(img[: 128 : 2, : 128 : 2, :3], obs["pixels"])  # first column top = Reacher's start
    assert np.array_equal(img[132::2, :128:2, :3], info["goal_image"])
