"""plan.py killed with SIGKILL mid-run and rerun into the same out_dir ends with the same rows
as an uninterrupted run; a folder holding another config's run is refused by name."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT, run_script

ARGS = ["episodes=12", "num_envs=4", "max_steps=20", "planner.samples=16", "planner.iterations=1",
        "planner.elites=4", "video=false", "threads=1"]


def rows(path):
    """Episode rows without their wall-clock latencies."""
    out = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted(({k: v for k, v in r.items() if k != "plan_ms"} for r in out), key=lambda r: r["seed"])


def test_sigkill_then_resume_gives_the_uninterrupted_rows(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    run_script("plan.py", f"out_dir={full}", *ARGS)
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "plan.py"), f"out_dir={cut}", *ARGS], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jsonl, deadline = cut / "episodes.jsonl", time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if jsonl.is_file() and jsonl.read_text().count("\n") >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "plan.py finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = jsonl.read_text().count("\n")
    assert 5 <= n_before < 12
    done = run_script("plan.py", f"out_dir={cut}", *ARGS)
    assert "resuming" in done.stdout
    assert rows(cut / "episodes.jsonl") == rows(full / "episodes.jsonl")
    s_full = json.loads((full / "summary.json").read_text())
    s_cut = json.loads((cut / "summary.json").read_text())
    assert s_cut["successes"] == s_full["successes"] and s_cut["resumed_episodes"] in (4, 8)
    assert s_cut["mean_final_distance"] == s_full["mean_final_distance"]

    other = run_script("plan.py", f"out_dir={cut}", *ARGS, "planner.samples=32", check=False)
    assert other.returncode != 0 and "planner.samples" in other.stderr and "resume=false" in other.stderr
