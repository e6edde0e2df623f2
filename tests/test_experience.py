"""The planner's own experience as a dataset (plan.py record_dataset=...) and merge_datasets.py.

Real MPC episodes of the bundled PointMaze model on dataset goals, written by ExperienceSink;
the recorded actions replayed from the recorded start state must reproduce the recorded
states and frames, and the merged dataset must be complete and train-ready.
"""
from __future__ import annotations

import json
import shutil

import gymnasium as gym
import numpy as np
import pytest

import wmplan.envs  # noqa: F401
from tests.conftest import run_script
from wmplan.worldmodel.data import DatasetError, EpisodeDataset
from wmplan.experience import merge_datasets


@pytest.fixture(scope="module")
def experience(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    exp, run = root / "exp", root / "run"
    run_script("plan.py", "task=point_maze", "goals=dataset", "episodes=3", "num_envs=2", "video=false", "threads=1",
               "planner.samples=32", "planner.iterations=2", f"record_dataset={exp}", f"out_dir={run}")
    return exp, run


def test_recorded_episodes_replay_in_the_simulator(experience):
    exp, run = experience
    rows = sorted((json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()),
                  key=lambda r: r["seed"])  # lines come in the order episodes end; files are named by row
    ds = EpisodeDataset(exp)
    assert ds.episode_ids == [0, 1, 2] and ds.meta["policy_mix"] == {"planner": 1.0}
    assert ds.meta["recorded_by"]["protocol"] == "dataset" and ds.meta["image_size"] == 64
    assert ds.meta["action_low"] == [-1.0, -1.0] and ds.meta["action_high"] == [1.0, 1.0]  # what training normalises with
    env = gym.make(ds.meta["env_id"], disable_env_checker=True, **ds.meta["env_kwargs"])
    for i, row in zip(ds.episode_ids, rows):
        ep = ds.load_episode(i)
        assert ep.length == row["steps"] and bool(ep.success[-1]) == row["success"]
        assert ep.rewards[-1] == pytest.approx(-row["final_distance"], abs=1e-6)
        env.reset(seed=0, options={"state": ep.states[0], "goal_state": ep.states[-1]})
        for t, a in enumerate(ep.actions):
            obs, _, _, _, info = env.step(a)
            np.testing.assert_allclose(info["state"], ep.states[t + 1], atol=1e-9)
            np.testing.assert_array_equal(obs["pixels"], ep.frames[t + 1])
    env.close()


def test_merge_renumbers_and_checks_the_sources(experience, tmp_path):
    exp, _ = experience
    merged = tmp_path / "merged"
    proc = run_script("merge_datasets.py", f"sources=[{exp},{exp}]", f"out_dir={merged}")
    assert "6 episodes" in proc.stdout
    ds = EpisodeDataset(merged).require_complete()
    assert ds.episode_ids == list(range(6)) and ds.meta["num_episodes"] == 6
    np.testing.assert_array_equal(ds.load_episode(4).actions, EpisodeDataset(exp).load_episode(1).actions)
    assert [s["episodes"] for s in ds.meta["sources"]] == [3, 3]
    assert ds.meta["action_low"] == EpisodeDataset(exp).meta["action_low"]
    with pytest.raises(DatasetError, match="already holds"):
        merge_datasets([exp], merged)
    other = tmp_path / "other"  # the same episodes under a meta.json of another camera size
    shutil.copytree(exp, other)
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "image_size": 96}))
    with pytest.raises(DatasetError, match="'image_size' differs: 64 .* 96"):
        merge_datasets([exp, other], tmp_path / "bad")
    assert not (tmp_path / "bad" / "meta.json").exists()
