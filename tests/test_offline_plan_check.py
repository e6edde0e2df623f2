"""scripts/offline_plan_check.py: plan from a dataset frame to the frame `offset` steps later.

A real PointMaze dataset (2 episodes x 12 steps, scripts/collect.py) and the bundled PointMaze
model; the same dataset with its simulator states dropped (states [T+1, 0], like imported
LeRobot data) must give the same figures.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_script
from wmplan.worldmodel.data import Episode, EpisodeDataset, write_episode, write_meta

PLAN = ("world_model=pretrained:pointmaze", "offset=10", "episodes=2", "planner.samples=64",
        "planner.iterations=4", "threads=1")


@pytest.fixture(scope="module")
def tiny_pm(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("opc") / "pm"
    run_script("collect.py", "env=point_maze", "episodes=2", "episode_length=12", "workers=1", f"out_dir={out}")
    return out


def _stateless_copy(src: Path, dst: Path) -> Path:
    ds = EpisodeDataset(src)
    write_meta(dst, {**ds.meta, "state_dim": 0})
    for i in ds.episode_ids:
        ep = ds.load_episode(i)
        write_episode(dst, i, Episode(ep.frames, ep.actions, ep.proprio, np.zeros((ep.length + 1, 0)), ep.rewards,
                                      ep.success))
    return dst


def test_offline_check_beats_zero_actions(tiny_pm, tmp_path):
    out = tmp_path / "check"
    proc = run_script("offline_plan_check.py", *PLAN, f"data_dir={tiny_pm}", f"out_dir={out}")
    s = json.loads((out / "summary.json").read_text())
    assert s["pairs"] == 2 and s["horizon_predictor_steps"] == 2 and len(s["seeds"]) == 2
    for r in s["rows"]:
        for k in ("energy_plan", "energy_recorded", "energy_zero", "plan_error_first", "plan_error_all"):
            assert np.isfinite(r[k]), (k, r)
        # the behavioural check: planning reaches a lower goal energy than doing nothing
        assert r["energy_plan"] <= r["energy_zero"], r
    assert s["frac_plan_le_zero"] == 1.0
    assert 0.0 <= s["mean_plan_error_first"] <= 2.0  # PointMaze actions lie in [-1, 1]
    assert "energy: plan" in proc.stdout

    # the same data without simulator state (imported datasets) gives the same figures
    bare = _stateless_copy(tiny_pm, tmp_path / "bare")
    out2 = tmp_path / "check_bare"
    run_script("offline_plan_check.py", *PLAN, f"data_dir={bare}", f"out_dir={out2}")
    s2 = json.loads((out2 / "summary.json").read_text())
    for k in ("mean_energy_plan", "mean_energy_zero", "mean_plan_error_all"):
        assert s2[k] == pytest.approx(s[k], rel=1e-5), k


def test_offline_check_settings_errors(tiny_pm, tmp_path):
    proc = run_script("offline_plan_check.py", *PLAN[:1], "offset=7", f"data_dir={tiny_pm}",
                      f"out_dir={tmp_path / 'x'}", check=False)
    assert proc.returncode != 0 and "offset=7" in proc.stderr + proc.stdout and "frameskip" in proc.stderr + proc.stdout
    proc = run_script("offline_plan_check.py", *PLAN[:1], "offset=15", "episodes=2", f"data_dir={tiny_pm}",
                      f"out_dir={tmp_path / 'y'}", check=False)
    assert proc.returncode != 0 and "start_step + offset" in proc.stderr + proc.stdout
    assert not (tmp_path / "x" / "summary.json").exists()
    helped = run_script("offline_plan_check.py", "--help")
    assert "offline planning check" in helped.stdout and "zero-action energy" in helped.stdout
