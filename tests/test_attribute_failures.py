"""scripts/attribute_failures.py: plan each goal-set row open loop and put failures down to
the search, the model or the energy.

Real held-out PointMaze expert episodes (scripts/collect.py), a goal set made from them
(scripts/make_goal_set.py) and the bundled PointMaze model.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_script

PLAN = ("task=point_maze", "planner.samples=32", "planner.iterations=3", "threads=1")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("attr")
    data, goals = root / "pm", root / "goals.npz"
    run_script("collect.py", "env=point_maze", "episodes=4", "episode_length=30", "seed=1000", "workers=1",
               "policy_mix={expert: 1.0}", f"out_dir={data}")
    run_script("make_goal_set.py", f"data_dir={data}", f"out={goals}", "offset=10", "episodes=3")
    return data, goals


def _label(r: dict) -> str:
    """The documented rule, recomputed from the row's figures."""
    if r["plan_success"]:
        return "solved"
    if not r["expert_success"]:
        return "unattributable"
    if r["model_energy_plan"] > r["model_energy_expert"]:
        return "search"
    return "model" if r["sim_energy_plan"] > r["sim_energy_expert"] else "energy"


def test_attribution_rows_follow_the_rule(heldout, tmp_path):
    data, goals = heldout
    out = tmp_path / "run"
    proc = run_script("attribute_failures.py", *PLAN, f"data_dir={data}", f"goal_set={goals}",
                      "energy.goal.steps=last", f"out_dir={out}")
    s = json.loads((out / "summary.json").read_text())
    assert s["rows"] == 3 and s["horizon_predictor_steps"] == 2 and s["frameskip"] == 5
    assert sum(s["counts"].values()) == 3
    for r in s["per_row"]:
        # the expert's recorded actions, replayed from the recorded start, reach the recorded goal ...
        assert r["expert_success"] and r["expert_final_distance"] < 1e-6, r
        # ... and their last simulated frame is the goal image itself: zero last-step energy
        assert r["sim_energy_expert"] == pytest.approx(0.0, abs=1e-6), r
        assert r["label"] == _label(r), r
        assert r["seed"] == r["row"]  # seed 0 + row
    assert s["open_loop_success_expert"] == 1.0
    assert "failures put down to" in proc.stdout


def test_attribution_refuses_a_dataset_the_goal_set_was_not_made_from(heldout, tmp_path):
    _, goals = heldout
    other = tmp_path / "other"
    run_script("collect.py", "env=point_maze", "episodes=3", "episode_length=30", "seed=5", "workers=1",
               "policy_mix={expert: 1.0}", f"out_dir={other}")
    proc = run_script("attribute_failures.py", *PLAN, f"data_dir={other}", f"goal_set={goals}",
                      f"out_dir={tmp_path / 'x'}", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "differ from" in text and str(goals) in text
    assert not (tmp_path / "x" / "summary.json").exists()
    helped = run_script("attribute_failures.py", "--help")
    assert "where plans fail" in helped.stdout and "unattributable" in helped.stdout
