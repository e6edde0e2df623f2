"""Sweeps through hydra-submitit-launcher (issue 11, item 5): ``hydra/launcher=submitit_local``
runs a 2-point sweep of scripts/plan.py in submitit's local executor (which stands in for
SLURM: same plugin, jobs in child processes), the sweep callback still aggregates the run
folders in the launching process, and ``hydra/launcher=slurm`` (configs/hydra/launcher/slurm.yaml)
composes to the SLURM launcher. Skipped when the optional extra ``[slurm]`` is not installed.
"""
from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir

import wmplan.config_store  # noqa: F401  (registers the structured configs)
from tests.conftest import ROOT, run_script

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="optional extra: pip install -e '.[slurm]'")


def test_submitit_local_runs_a_two_point_sweep_and_aggregates(tmp_path):
    proc = run_script("plan.py", "-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={tmp_path}",
                      "planner.horizon=2,3", "episodes=1", "num_envs=1", "max_steps=4", "video=false",
                      "planner.samples=16", "planner.iterations=1", "threads=1", timeout=120)
    assert "Submitit 'local' sweep" in proc.stdout + proc.stderr
    runs = sorted(p.parent.name for p in tmp_path.glob("*/summary.json"))
    assert len(runs) == 2 and any("planner.horizon=2" in r for r in runs) and any("planner.horizon=3" in r for r in runs)
    assert list(tmp_path.glob(".submitit/*")), "the jobs did not go through submitit"
    rows = json.loads((tmp_path / "compare.json").read_text())["rows"]  # written by wmplan.sweep.AggregateSweep
    assert len(rows) == 2 and all(r["episodes"] == 1 for r in rows)
    assert (tmp_path / "compare.md").read_text().count("\n") == 4  # header, rule, 2 rows


def test_slurm_launcher_config_composes_and_local_stays_default():
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        slurm = compose(config_name="plan", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                        return_hydra_config=True)
        default = compose(config_name="plan", return_hydra_config=True)
    launcher = slurm.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1 and launcher.timeout_min == 60
    assert launcher.array_parallelism == 16 and launcher.mem_gb == 32 and launcher.cpus_per_task == 8
    assert default.hydra.launcher._target_.endswith("BasicLauncher")
