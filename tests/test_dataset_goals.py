"""The dataset-goal protocol: recorded start and goal states reset the tasks exactly, goal
sets are validated, and plan.py runs goals=dataset end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import wmplan.envs  # noqa: F401
from wmplan.checks import ConfigError, NonFiniteError
from wmplan.planners.goals import DatasetGoals, resolve_goal_set

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"point_maze": "wmplan/PointMaze-v0", "reacher": "wmplan/Reacher-v0", "push_t": "wmplan/PushT-v0",
         "arm_reach": "wmplan/ArmReach-v0", "arm_push": "wmplan/ArmPush-v0", "arm_pick_place": "wmplan/ArmPickPlace-v0"}


def _expert_run(env_id: str, steps: int, seed: int = 3):
    """Recorded states [T+1,S] and actions [T,A] of the scripted expert."""
    env = gym.make(env_id, image_size=16, disable_env_checker=True)
    _, info = env.reset(seed=seed)
    states, actions = [info["state"]], []
    for _ in range(steps):
        a = env.unwrapped.expert_action()
        _, _, _, _, info = env.step(a)
        states.append(info["state"])
        actions.append(a)
    env.close()
    return np.stack(states), np.stack(actions)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_recorded_start_and_goal_reset_the_task_exactly(task):
    env_id, k = TASKS[task], 12
    states, actions = _expert_run(env_id, k)
    env = gym.make(env_id, image_size=16, disable_env_checker=True)
    obs, info = env.reset(seed=0, options={"state": states[0], "goal_state": states[k]})
    np.testing.assert_array_equal(info["state"], states[0])
    img, prop = env.unwrapped.render_state(states[k])
    np.testing.assert_array_equal(info["goal_image"], img)  # the goal image shows the recorded goal state
    np.testing.assert_array_equal(info["goal_proprio"], prop)
    for a in actions:  # replaying the recorded actions reaches the goal: distance 0, success
        _, _, _, _, info = env.step(a)
    np.testing.assert_allclose(info["state"], states[k], atol=1e-9)
    assert info["distance"] < 1e-3 and info["success"]  # ArmPush: goal z is the resting height
    with pytest.raises(ValueError, match="go together"):
        env.reset(seed=0, options={"state": states[0]})
    env.close()


def _goal_set(path: Path, env_id="wmplan/PointMaze-v0", n=3, offset=5, **over):
    states, _ = _expert_run(env_id, offset)
    d = {"start_states": np.stack([states[0]] * n), "goal_states": np.stack([states[offset]] * n),
         "episode_ids": np.arange(n), "start_steps": np.zeros(n, int), "offset": np.array(offset),
         "env_id": np.array(env_id), **over}
    np.savez(path, **d)
    return path


def test_goal_set_episodes_and_budget(tmp_path):
    gs = DatasetGoals(_goal_set(tmp_path / "g.npz"), env_id="wmplan/PointMaze-v0")
    specs = gs.episodes(4, seed=0)
    assert [s.seed for s in specs] == [0, 1, 2, 3] and all(s.max_steps == 10 for s in specs)  # 2 x offset
    np.testing.assert_array_equal(specs[3].options["goal_state"], gs.goal[0])  # wraps around the E=3 rows
    assert DatasetGoals(tmp_path / "g.npz", budget=7).episodes(1, 0)[0].max_steps == 7
    assert gs.describe()["protocol"] == "dataset" and gs.describe()["goal_offset"] == 5


def test_bad_goal_sets_are_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        DatasetGoals(tmp_path / "missing.npz")
    p = _goal_set(tmp_path / "g.npz")
    with pytest.raises(ConfigError, match="recorded in 'wmplan/PointMaze-v0', but env.id='wmplan/Reacher-v0'"):
        DatasetGoals(p, env_id="wmplan/Reacher-v0")
    bad = np.load(p)
    g = bad["goal_states"].copy()
    g[1, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **{**{k: bad[k] for k in bad.files}, "goal_states": g})
    with pytest.raises(NonFiniteError, match=r"field 'goal_states'.*index \[1, 0\]"):
        DatasetGoals(tmp_path / "nan.npz")
    np.savez(tmp_path / "partial.npz", start_states=bad["start_states"])
    with pytest.raises(ConfigError, match="missing field"):
        DatasetGoals(tmp_path / "partial.npz")
    with pytest.raises(ConfigError, match="no bundled goal set 'nope'"):
        resolve_goal_set("bundled:nope")


@pytest.mark.parametrize("task", sorted(TASKS))
def test_bundled_goal_sets_match_their_tasks(task):
    gs = DatasetGoals(resolve_goal_set(f"bundled:{task}"), env_id=TASKS[task])
    assert len(gs.start) >= 50 and gs.offset == 25 and gs.budget == 50


def test_plan_runs_dataset_goals(tmp_path):
    p = _goal_set(tmp_path / "g.npz", n=2, offset=4)
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "scripts/plan.py", "goals=dataset", f"goal_set={p}", "episodes=2",
                        "num_envs=2", "video=false", "planner.samples=16", "planner.elites=4", "planner.iterations=1",
                        f"out_dir={out}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["goals"] == "dataset" and s["goal_set"] == str(p) and s["goal_budget"] == 8
    assert 0.0 <= s["success_rate"] <= 1.0 and s["episodes"] == 2
    rows = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    assert all(row["steps"] <= 8 for row in rows)


def test_make_goal_set_draws_start_steps_and_pairs_recorded_states(tmp_path):
    from scripts.make_goal_set import make_goal_set
    from wmplan.worldmodel.data import EpisodeDataset

    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "scripts/collect.py", "env=point_maze", "episodes=3", "episode_length=12",
                    "workers=1", "env.kwargs.image_size=16", f"out_dir={tmp_path}/ds"], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=120)
    ds = EpisodeDataset(tmp_path / "ds")
    gs = make_goal_set(str(tmp_path / "ds"), offset=5, start_step="random", seed=3, exclude_solved=False)
    assert list(gs["episode_ids"]) == [0, 1, 2] and all(0 <= t <= 12 - 5 for t in gs["start_steps"])
    for e, t0 in zip(gs["episode_ids"], gs["start_steps"]):
        states = ds.load_episode(int(e)).states
        np.testing.assert_array_equal(gs["start_states"][e], states[t0])
        np.testing.assert_array_equal(gs["goal_states"][e], states[t0 + 5])
    again = make_goal_set(str(tmp_path / "ds"), offset=5, start_step="random", seed=3, exclude_solved=False)
    np.testing.assert_array_equal(again["start_steps"], gs["start_steps"])  # the seed makes it repeatable
    assert list(make_goal_set(str(tmp_path / "ds"), offset=5, start_step=2, exclude_solved=False)["start_steps"]) == [2] * 3
    # a goal equal to its start is reached at the start: with exclude_solved such pairs are never kept
    env = gym.make("wmplan/PointMaze-v0", image_size=16, disable_env_checker=True)
    ep0 = ds.load_episode(0)
    from scripts.make_goal_set import solved_at_start
    assert solved_at_start(env, ep0.states[0], ep0.states[0])
    kept = make_goal_set(str(tmp_path / "ds"), offset=5, seed=3)
    assert all(not solved_at_start(env, a, b) for a, b in zip(kept["start_states"], kept["goal_states"]))
    assert len(kept["episode_ids"]) + int(kept["skipped_solved_at_start"]) == 3
    with pytest.raises(ConfigError, match="fewer than start step \\+ offset = 13"):
        make_goal_set(str(tmp_path / "ds"), offset=13, start_step=0, exclude_solved=False)
