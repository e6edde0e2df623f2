"""Paired comparison of two plan.py runs (wmplan/paired.py, scripts/compare_runs.py)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, run_script
from wmplan.paired import compare_runs, sign_test_p

RUN = ["episodes=4", "num_envs=4", "max_steps=15", "planner.iterations=1", "planner.elites=4", "video=false", "threads=1"]


def test_sign_test_matches_the_binomial_tail():
    assert sign_test_p(1, 9) == pytest.approx(2 * (1 + 10) / 2**10)  # textbook: n = 10, k = 1 -> 0.0215
    assert sign_test_p(12, 2) == pytest.approx(2 * (1 + 14 + 91) / 2**14)
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(5, 5) == 1.0 and sign_test_p(3, 4) == sign_test_p(4, 3)
    with pytest.raises(ValueError, match="won=-1"):
        sign_test_p(-1, 2)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run_script("plan.py", *RUN, "planner.samples=8", f"out_dir={root / 'small'}")
    run_script("plan.py", *RUN, "planner.samples=64", f"out_dir={root / 'large'}")
    return root / "small", root / "large"


def outcomes(run) -> dict[int, bool]:
    return {r["seed"]: r["success"] for r in map(json.loads, (run / "episodes.jsonl").read_text().splitlines())}


def test_counts_pair_episodes_by_seed(two_runs):
    a, b = two_runs
    r = compare_runs(a, b)
    oa, ob = outcomes(a), outcomes(b)
    assert r["episodes"] == 4 and set(oa) == set(ob)
    assert r["won"] == sum(oa[s] and not ob[s] for s in oa) and r["lost"] == sum(ob[s] and not oa[s] for s in oa)
    assert r["won"] + r["lost"] + r["both"] + r["neither"] == 4
    assert r["successes_a"] == sum(oa.values()) and r["sign_test_p"] == sign_test_p(r["won"], r["lost"])
    swapped = compare_runs(b, a)
    assert (swapped["won"], swapped["lost"]) == (r["lost"], r["won"])


def test_runs_of_other_episodes_are_refused_by_field(two_runs, tmp_path):
    a, b = two_runs
    other = tmp_path / "other"
    shutil.copytree(b, other)
    summary = json.loads((other / "summary.json").read_text())
    summary["seeds"] = [s + 100 for s in summary["seeds"]]
    (other / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="'seeds'"):
        compare_runs(a, other)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_runs.py"), str(a), str(tmp_path / "none")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and "summary.json: not found" in proc.stderr
    ok = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_runs.py"), str(a), str(b), "--json"],
                        capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(ok.stdout)["episodes"] == 4
