"""Planner comparison: run scripts/plan.py once per setting and tabulate success and speed.

    python scripts/compare_planners.py                      # PointMaze, 20 episodes per setting
    python scripts/compare_planners.py --episodes 50 --env point_maze --out runs/compare

Each setting is a list of plan.py overrides (planner, budget, energy). Writes
``<out>/compare.json`` and ``<out>/compare.md`` (a markdown table) and prints the table.
Settings already present in ``<out>`` (a finished ``summary.json``) are reused, so an
interrupted comparison resumes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> plan.py overrides. Sampling planners get the same budget: 128 samples x 6 iterations.
SETTINGS: dict[str, list[str]] = {
    "cem": ["planner=cem", "planner.samples=128", "planner.iterations=6", "planner.elites=16"],
    "icem (default)": ["planner=icem"],
    "icem + ensemble w=100": ["planner=icem", "energy=ensemble", "energy.ensemble_disagreement.weight=100"],
    "icem + ensemble w=1000": ["planner=icem", "energy=ensemble", "energy.ensemble_disagreement.weight=1000"],
    "mppi": ["planner=mppi", "planner.samples=128", "planner.iterations=6"],
    "random_shooting": ["planner=random_shooting", "planner.samples=768"],
    "gradient": ["planner=gradient", "planner.samples=4", "planner.iterations=20"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="point_maze", help="configs/env/<name>.yaml")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/compare_planners")
    ap.add_argument("--only", nargs="*", default=None, help="subset of setting names")
    ap.add_argument("--extra", nargs="*", default=[], help="overrides added to every plan.py call")
    args = ap.parse_args()
    out = Path(args.out)
    rows = []
    for name, overrides in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        run_dir = out / name.replace(" ", "_").replace("=", "").replace("(", "").replace(")", "").replace("+", "")
        summary_path = run_dir / "summary.json"
        if not summary_path.is_file():
            cmd = [sys.executable, str(ROOT / "scripts/plan.py"), f"env={args.env}", f"episodes={args.episodes}",
                   f"seed={args.seed}", f"out_dir={run_dir}", "video=false", *overrides, *args.extra]
            print(f"[compare] {name}: {' '.join(cmd[2:])}", flush=True)
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"[compare] setting {name!r} failed (exit {proc.returncode})")
        s = json.loads(summary_path.read_text())
        rows.append({"setting": name, "overrides": overrides, "episodes": s["episodes"],
                     "success_rate": s["success_rate"], "success_rate_cross_wall": s.get("success_rate_cross_wall"),
                     "mean_final_distance": s["mean_final_distance"], "plan_ms_p50": s["plan_ms_p50"],
                     "ms_per_action": s["ms_per_action"], "batched_envs": s["batched_envs"], "seed": s["seed"]})
    lines = ["| setting | success | success (cross-wall) | final dist | plan p50 ms (batched envs) | ms per env action |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        cw = "–" if r["success_rate_cross_wall"] is None else f"{r['success_rate_cross_wall']:.2f}"
        lines.append(f"| {r['setting']} | {r['success_rate']:.2f} | {cw} | {r['mean_final_distance']:.3f} | "
                     f"{r['plan_ms_p50']:.0f} ({r['batched_envs']}) | {r['ms_per_action']:.0f} |")
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps({"env": args.env, "episodes": args.episodes, "seed": args.seed,
                                                   "rows": rows}, indent=2))
    (out / "compare.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
