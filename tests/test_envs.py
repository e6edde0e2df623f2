"""Task suite: gymnasium API compliance, seeding, goal images, reset options, configs.

Everything registered in ``envs.TASKS`` is checked by the parametrised tests, so a new
task is covered without touching this file.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

from wmplan import envs
from tests.conftest import ROOT

TASK_IDS = sorted(envs.TASKS)


def make(env_id: str, **kwargs) -> gym.Env:
    return gym.make(env_id, disable_env_checker=True, **kwargs)


def _rollout(env: gym.Env, seed: int, steps: int) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    pix, prop, rew = [obs["pixels"]], [obs["proprio"]], []
    for _ in range(steps):
        a = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        obs, r, _, _, _ = env.step(a)
        pix.append(obs["pixels"]); prop.append(obs["proprio"]); rew.append(r)
    return pix, prop, rew


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_check_env(env_id):
    env = make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unbounded proprio Box warns, by design
        check_env(env.unwrapped)
    obs, info = env.reset(seed=0)
    u = env.unwrapped
    assert obs["pixels"].shape == (64, 64, 3) and obs["pixels"].dtype == np.uint8
    assert obs["proprio"].shape == (u.proprio_dim,) and obs["proprio"].dtype == np.float32
    for k in ("success", "distance", "goal_image", "goal_proprio", "state"):
        assert k in info, k
    assert isinstance(info["success"], bool) and np.isfinite(info["distance"])
    assert obs["pixels"].std() > 5, "blank frame"
    env.close()


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_determinism_and_goal_image(env_id):
    a, b = make(env_id), make(env_id)
    pa, qa, ra = _rollout(a, seed=11, steps=8)
    pb, qb, rb = _rollout(b, seed=11, steps=8)
    for x, y in zip(pa, pb):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(np.stack(qa), np.stack(qb))
    assert ra == rb
    # same env, same seed again: same start and goal
    _, info1 = a.reset(seed=5)
    _, info2 = a.reset(seed=5)
    np.testing.assert_array_equal(info1["state"], info2["state"])
    np.testing.assert_array_equal(info1["goal_image"], info2["goal_image"])
    # the goal image is the rendering of the goal state (also mid-episode)
    u = a.unwrapped
    a.step(a.action_space.sample())
    img, prop = u.render_state(u.goal_state)
    np.testing.assert_array_equal(img, info1["goal_image"])
    np.testing.assert_allclose(prop, info1["goal_proprio"], atol=1e-6)
    # ... and rendering it did not disturb the episode
    state = u.get_state()
    u.render_state(u.goal_state)
    np.testing.assert_array_equal(state, u.get_state())
    # different seeds give different goals
    _, info3 = a.reset(seed=6)
    assert not np.array_equal(info1["goal_image"], info3["goal_image"])


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_frame_after_a_step_is_the_render_of_its_state(env_id):
    """A stepped observation is the goal image its state would give: the dataset-goal protocol
    compares the two, and mj_step alone leaves the kinematics one physics substep behind."""
    env = make(env_id)
    u = env.unwrapped
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(4):
        obs, _, _, _, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        img, prop = u.render_state(info["state"])
        np.testing.assert_array_equal(obs["pixels"], img)
        np.testing.assert_allclose(obs["proprio"], prop, atol=1e-6)
    # the recorded state as a goal: the task counts it reached at distance zero
    _, info0 = env.reset(seed=0, options={"state": info["state"], "goal_state": info["state"]})
    assert info0["distance"] < 1e-3 and info0["success"]  # ArmPush pins the goal cube to the table (z = half size)
    env.close()


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_image_size_and_bad_camera(env_id):
    env = make(env_id, image_size=32)
    obs, info = env.reset(seed=0)
    assert obs["pixels"].shape == (32, 32, 3) and info["goal_image"].shape == (32, 32, 3)
    with pytest.raises(ValueError, match="camera"):
        make(env_id, camera="no_such_camera")


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_config_file(env_id):
    """Every registered task has a configs/env/*.yaml usable by collect.py and a
    configs/task/*.yaml that plans on it (tests/test_plan_config.py composes those)."""
    found = {}
    for p in Path(ROOT, "configs", "env").glob("*.yaml"):
        cfg = yaml.safe_load(p.read_text())
        found[cfg["id"]] = cfg
    assert env_id in found, f"no configs/env/*.yaml with id {env_id}"
    cfg = found[env_id]
    for k in ("kwargs", "collect"):
        assert k in cfg
    assert {"episode_length", "policy_mix", "policy_kwargs"} <= set(cfg["collect"])
    env_name = next(p.stem for p in Path(ROOT, "configs", "env").glob("*.yaml") if yaml.safe_load(p.read_text())["id"] == env_id)
    tasks = [p for p in Path(ROOT, "configs", "task").glob("*.yaml") if f"override /env: {env_name}\n" in p.read_text()]
    assert len(tasks) == 1, f"{env_id}: expected one configs/task/*.yaml on env {env_name}, got {tasks}"
    make(env_id, **cfg["kwargs"]).reset(seed=0)


# ---- per-task reset options and success -------------------------------------------------------
def test_reacher_options_and_wrapping():
    env = make("wmplan/Reacher-v0")
    u = env.unwrapped
    _, info = env.reset(options={"start": [0.3, -1.0], "goal": [0.3 + 2 * np.pi, -1.0 + 0.03]})
    assert info["success"] and info["distance"] < 0.05  # angles wrap
    np.testing.assert_allclose(u.data.qpos[:2], [0.3, -1.0])
    _, info = env.reset(options={"start": [3.1, 0.0], "goal": [-3.1, 0.0]})
    assert info["distance"] == pytest.approx(2 * np.pi - 6.2, abs=1e-9)  # short way round
    _, info = env.reset(options={"start": [0.0, 0.0], "goal": [0.0, 0.06]})
    assert not info["success"]  # every joint must be within 0.05 rad
    with pytest.raises(ValueError):
        env.reset(options={"goal": [1.0]})


@pytest.mark.parametrize("env_id,lamp_kw,opts", [
    ("wmplan/Reacher-v0", "lamps", {"start": [0.0, 0.0], "goal": [2.0, -1.5]}),
    ("wmplan/ArmReach-v0", "lamp", {"start": [0.3, -0.2, 0.1], "goal": [0.45, 0.2, 0.2]}),
])
def test_lamps_spread_the_agent_over_the_frame(env_id, lamp_kw, opts):
    """The lamps exist so that a configuration change moves much of the image, not only the
    few pixels of a thin link: far more pixels differ between start and goal with them."""
    changed = {}
    for lamp in (False, True):
        env = gym.make(env_id, **{lamp_kw: lamp})
        obs, info = env.reset(seed=0, options=opts)
        diff = np.abs(obs["pixels"].astype(int) - info["goal_image"].astype(int)).max(-1)
        changed[lamp] = float((diff > 10).mean())
        env.close()
    assert changed[True] > 3 * changed[False] and changed[True] > 0.3, changed


def test_push_t_options_and_success():
    env = make("wmplan/PushT-v0")
    u = env.unwrapped
    _, info = env.reset(options={"start": [0.1, 0.2, 0.5], "goal": [0.1, 0.25, 0.5 + 0.3], "pusher": [-0.8, -0.8]})
    assert info["success"] and info["distance"] == pytest.approx(0.05)
    assert info["angle_error"] == pytest.approx(0.3)
    np.testing.assert_allclose(u.pusher_xy(), [-0.8, -0.8])
    _, info = env.reset(options={"start": [0.1, 0.2, 0.5], "goal": [0.1, 0.2, 0.5 + 0.4]})
    assert not info["success"]  # angle error above pi/9
    _, info = env.reset(options={"start": [0.0, 0.0, 0.0], "goal": [0.09, 0.0, 0.0]})
    assert not info["success"]  # position error above 4% of the arena width
    with pytest.raises(ValueError, match="pusher"):
        env.reset(options={"start": [0.0, 0.0, 0.0], "pusher": [0.0, 0.0]})
    # the goal image parks the pusher in a corner, away from the block
    g = u.goal_state
    u.set_state(g)
    assert np.all(np.abs(u.pusher_xy()) > 0.8)


@pytest.mark.parametrize(
    "env_id,goal",
    [("wmplan/ArmReach-v0", [0.4, 0.1, 0.2]), ("wmplan/ArmPush-v0", [0.4, 0.1]), ("wmplan/ArmPickPlace-v0", [0.4, 0.1, 0.15])],
)
def test_arm_options(env_id, goal):
    env = make(env_id)
    u = env.unwrapped
    _, info = env.reset(options={"start": [0.35, -0.1, 0.2], "cube": [0.45, 0.05], "goal": goal})
    np.testing.assert_allclose(u.ee_pos(), [0.35, -0.1, 0.2], atol=2e-3)
    np.testing.assert_allclose(u.cube_pos()[:2], [0.45, 0.05], atol=1e-6)
    np.testing.assert_allclose(u.goal[: len(goal)], goal)
    assert not info["success"]
    obs, *_ = env.step(np.zeros(4, np.float32))  # zero action holds the arm still
    np.testing.assert_allclose(obs["proprio"][:3], [0.35, -0.1, 0.2], atol=3e-3)
    with pytest.raises(ValueError):
        env.reset(options={"start": [0.3, 0.0]})
    with pytest.raises(ValueError, match="reach"):
        env.reset(options={"start": [0.65, 0.4, 0.3]})
    with pytest.raises(ValueError, match="outside"):
        env.reset(options={"cube": [2.0, 0.0]})


def test_arm_success_at_goal():
    env = make("wmplan/ArmReach-v0")
    _, info = env.reset(options={"start": [0.4, 0.0, 0.2], "goal": [0.4, 0.0, 0.23]})
    assert info["success"]
    env = make("wmplan/ArmPush-v0")
    _, info = env.reset(options={"cube": [0.4, 0.0], "goal": [0.43, 0.0]})
    assert info["success"]
    _, info = env.reset(options={"cube": [0.4, 0.0], "goal": [0.45, 0.0]})
    assert not info["success"]


def test_arm_action_moves_end_effector():
    env = make("wmplan/ArmReach-v0")
    u = env.unwrapped
    env.reset(options={"start": [0.35, 0.0, 0.2]})
    for _ in range(6):  # +x at full speed: 6 x 3 cm
        obs, *_ = env.step(np.array([1.0, 0.0, 0.0, -1.0], np.float32))
        assert abs(obs["proprio"][2] - 0.2) < 0.02 and abs(obs["proprio"][1]) < 0.005
    for _ in range(3):  # then settle exactly at the commanded point
        obs, *_ = env.step(np.array([0.0, 0.0, 0.0, -1.0], np.float32))
    np.testing.assert_allclose(obs["proprio"][:3], [0.35 + 0.18, 0.0, 0.2], atol=3e-3)
    # fingers keep pointing down: the hand's z axis stays vertical
    R = u.data.site_xmat[u._ee].reshape(3, 3)
    assert R[2, 2] > 0.99
    assert obs["proprio"][3] == pytest.approx(0.08, abs=2e-3)  # gripper open
    for _ in range(6):
        obs, *_ = env.step(np.array([0.0, 0.0, 0.0, 1.0], np.float32))
    assert obs["proprio"][3] < 2e-3  # closed on nothing


# ---- dataset statistics script --------------------------------------------------------------
def test_dataset_stats_script(tiny_dataset):
    import json

    from tests.conftest import run_script
    from wmplan.worldmodel.data import EpisodeDataset

    proc = run_script("dataset_stats.py", f"data_dir={tiny_dataset}", timeout=120)
    assert "episodes  6" in proc.stdout and "success" in proc.stdout and "policies" in proc.stdout
    st = json.loads((tiny_dataset / "stats.json").read_text())
    ds = EpisodeDataset(tiny_dataset)
    eps = [ds.load_episode(i) for i in ds.episode_ids]
    acts = np.concatenate([e.actions for e in eps])
    prop = np.concatenate([e.proprio for e in eps])
    assert st["episodes"] == 6 and st["frames"] == sum(e.frames.shape[0] for e in eps)
    np.testing.assert_allclose(st["action"]["min"], acts.min(0), atol=1e-5)
    np.testing.assert_allclose(st["action"]["max"], acts.max(0), atol=1e-5)
    np.testing.assert_allclose(st["action"]["mean"], acts.mean(0), atol=1e-5)
    np.testing.assert_allclose(st["action"]["std"], acts.std(0), atol=1e-4)
    np.testing.assert_allclose(st["proprio"]["min"], prop.min(0), atol=1e-5)
    np.testing.assert_allclose(st["proprio"]["max"], prop.max(0), atol=1e-5)
    assert st["success_any"] == pytest.approx(np.mean([e.success.any() for e in eps]))
    assert st["policy_mix"] == ds.meta["policy_mix"]


def test_dataset_stats_errors(tmp_path):
    from scripts.dataset_stats import dataset_stats
    from wmplan.worldmodel.data import DatasetError, write_meta

    with pytest.raises(DatasetError, match="meta.json"):
        dataset_stats(tmp_path)
    write_meta(tmp_path, {"env_id": "x"})
    with pytest.raises(DatasetError, match="no episodes"):
        dataset_stats(tmp_path)


def test_push_t_lamp_is_visual_only():
    """The pusher's lamp spreads the small pusher over the frame; the physics is unchanged
    (same actions -> bit-identical states), so goal sets and the expert hold with or without it."""
    opts = {"start": [0.0, 0.0, 0.0], "goal": [0.0, 0.0, 0.0], "pusher": [-0.5, 0.5]}
    changed, states = {}, {}
    for lamp in (False, True):
        env = make("wmplan/PushT-v0", lamp=lamp)
        obs, info = env.reset(seed=0, options=opts)  # same block pose: only the pusher differs
        diff = np.abs(obs["pixels"].astype(int) - info["goal_image"].astype(int)).max(-1)
        changed[lamp] = float((diff > 10).mean())
        rng = np.random.default_rng(0)
        states[lamp] = [env.step(rng.uniform(-1, 1, 2).astype(np.float32)) and env.unwrapped.get_state()
                        for _ in range(20)]
        env.close()
    assert changed[True] > 5 * changed[False] and changed[True] > 0.05, changed
    np.testing.assert_array_equal(np.stack(states[False]), np.stack(states[True]))
