"""Paired comparison of two plan.py runs on the same episodes: won / lost and the exact sign test.

    python scripts/compare_runs.py runs/arm_push_policy runs/arm_push_icem
    python scripts/compare_runs.py runs/a runs/b --json        # the numbers as JSON

"won" counts the episodes only A solved, "lost" those only B solved; the runs must share the env,
goal source, goal set, goal offset and budget, and episode seeds (wmplan/paired.py).
"""
from __future__ import annotations

import argparse
import json

from wmplan.paired import compare_runs, format_comparison


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a", help="a scripts/plan.py run folder (summary.json + episodes.jsonl)")
    ap.add_argument("run_b", help="the run to compare it with, on the same episodes")
    ap.add_argument("--json", action="store_true", help="print the comparison as JSON")
    args = ap.parse_args()
    try:
        result = compare_runs(args.run_a, args.run_b)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"[compare_runs] {e}") from None
    print(json.dumps(result, indent=2) if args.json else format_comparison(result))


if __name__ == "__main__":
    main()
