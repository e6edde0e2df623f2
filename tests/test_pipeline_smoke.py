"""CleanRL-style end-to-end smoke test: every stage of the main pipeline, tiny settings.

collect -> pretrain_encoder -> train_predictor -> plan, through the real scripts, on a
real (tiny) PointMaze dataset. Asserts on the artefacts each stage hands to the next.
"""
from __future__ import annotations

import json

import imageio.v2 as imageio

from tests.conftest import run_script
from wmplan.worldmodel.world_model import WorldModel

TINY_ENCODER = ["encoder.embed_dim=24", "encoder.depth=1", "encoder.num_heads=2", "jepa_predictor.dim=12",
                "jepa_predictor.depth=1", "jepa_predictor.num_heads=2"]


def test_pipeline_end_to_end(tiny_dataset, tmp_path):
    enc_dir, wm_dir, plan_dir = tmp_path / "enc", tmp_path / "wm", tmp_path / "plan"
    run_script("pretrain_encoder.py", f"data_dir={tiny_dataset}", f"out_dir={enc_dir}", "steps=3", "batch_size=4",
               "num_frames=2", "warmup_steps=1", "log_every=1", "ckpt_every=2", *TINY_ENCODER)
    assert (enc_dir / "encoder.pt").is_file()

    run_script("train_predictor.py", f"data_dir={tiny_dataset}", f"encoder_path={enc_dir / 'encoder.pt'}",
               f"out_dir={wm_dir}", "predictor=ac_tiny", "steps=3", "batch_size=4", "frameskip=2",
               "rollout_steps=2", "context=1", "eval_steps=2", "val_windows=4", "warmup_steps=1",
               "log_every=1", "eval_every=3", "ckpt_every=2")
    wm = WorldModel.load(wm_dir / "world_model.pt", device="cpu")
    assert wm.frameskip == 2 and wm.action_dim == 4

    proc = run_script("plan.py", f"world_model={wm_dir / 'world_model.pt'}", f"out_dir={plan_dir}", "episodes=3",
                      "num_envs=2", "max_steps=8", "replan_every=2", "planner.samples=8", "planner.iterations=2",
                      "planner.elites=2", "planner.horizon=2")
    summary = json.loads((plan_dir / "summary.json").read_text())
    assert summary["episodes"] == 3 and summary["seed"] == 0 and summary["seeds"] == [0, 1, 2]
    for k in ("success_rate", "mean_final_distance", "plan_ms_p50", "config"):
        assert k in summary, k
    assert 0.0 <= summary["success_rate"] <= 1.0 and summary["mean_final_distance"] > 0
    assert summary["config"]["planner"]["samples"] == 8
    assert "success_rate" in proc.stdout
    lines = (plan_dir / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(l)["steps"] <= 8 for l in lines)
    gifs = sorted((plan_dir / "videos").glob("*.gif"))
    assert len(gifs) == 3
    frame = imageio.mimread(gifs[0])[0]
    assert frame.shape[:2] == (64 * 3, 128 * 3)  # current | goal, upscaled x3


def test_plan_errors_on_missing_model(tmp_path):
    proc = run_script("plan.py", "world_model=pretrained:nonexistent", f"out_dir={tmp_path}", check=False)
    assert proc.returncode != 0 and "nonexistent" in proc.stderr and "bundled models" in proc.stderr


def test_plan_bundled_reacher_uses_task_energy(tmp_path):
    """task=reacher composes the Reacher env, its bundled model, its energy and horizon."""
    run_script("plan.py", "task=reacher", f"out_dir={tmp_path}", "episodes=2", "num_envs=2", "max_steps=5",
               "planner.samples=8", "planner.iterations=1", "planner.elites=2", "video=false", "threads=1")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["env_id"] == "wmplan/Reacher-v0" and summary["world_model"].endswith("reacher.pt")
    assert summary["task"] == "reacher" and summary["config"]["planner"]["horizon"] == 2
    assert summary["config"]["energy"]["goal"]["steps"] == "min" and "steps='min'" in summary["energy_built"]
    assert all(json.loads(l)["steps"] == 5 or json.loads(l)["success"]
               for l in (tmp_path / "episodes.jsonl").read_text().splitlines())
