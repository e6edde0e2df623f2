"""Smoke test of scripts/bench_planner.py on a tiny config (real ACPredictor, random init)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIELDS = {"planner", "batch", "samples", "iterations", "horizon", "device", "latency_ms_p50", "latency_ms_p95",
          "plans_per_s", "rollout_steps_per_s", "final_energy", "latency_ms_per_action_p50", "flops_per_plan",
          "achieved_flops_per_s", "peak_mem_mb", "first_call_s"}


def test_bench_planner_tiny(tmp_path):
    overrides = [
        f"out_dir={tmp_path}", "device=cpu", "planners=[reference,cem,mppi,random_shooting,gradient]",
        "batch=[2]", "samples=[8]", "horizon=[2]", "iterations=2", "elites=2", "warmup=1", "repeats=1",
        "predictors=[{name: t, latent_dim: 8, embed_dim: 12, depth: 1, num_heads: 2, mlp_ratio: 2.0}]",
        f"hydra.run.dir={tmp_path}/hydra",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_planner.py"), *overrides], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads((tmp_path / "bench.json").read_text())
    assert {"torch", "device", "seed"} <= set(out["header"])
    rows = out["rows"]
    assert [r["planner"] for r in rows] == ["reference", "cem", "mppi", "random_shooting", "gradient"]
    for r in rows:
        assert FIELDS <= set(r), FIELDS - set(r)
        assert r["latency_ms_p50"] > 0 and r["rollout_steps_per_s"] > 0 and r["flops_per_plan"] > 0
        assert r["batch"] == 2 and r["samples"] == 8 and r["horizon"] == 2
        assert r["final_energy"] >= 0
    assert rows[1]["speedup_vs_reference"] > 0 and out["target"][0]["batch"] == 2
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert "reference" in proc.stdout and "wrote" in proc.stdout
