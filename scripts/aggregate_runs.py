"""Comparison table of a ``scripts/plan.py`` sweep, read from its run folders.

    python scripts/plan.py -m planner=cem,icem,mppi episodes=20   # prints this table itself at the end
    python scripts/aggregate_runs.py runs/sweep/20261201-120000     # again, or for a partial sweep

Writes ``compare.md``, ``compare.json`` and ``compare.png`` (success against planning time
per env action) into the sweep folder and prints the table.
"""
from __future__ import annotations

import argparse

from wmplan.sweep import aggregate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", help="a Hydra sweep folder (hydra.sweep.dir) holding run folders with summary.json")
    args = ap.parse_args()
    try:
        print(aggregate(args.sweep_dir))
    except FileNotFoundError as e:
        raise SystemExit(f"[aggregate] {e}") from None


if __name__ == "__main__":
    main()
