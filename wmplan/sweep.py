"""Aggregate a Hydra multirun of ``scripts/plan.py``: one row per run folder, a markdown
table, a JSON file and a plot.

    python scripts/plan.py -m planner=cem,icem,mppi episodes=20   # prints the table at the end
    python scripts/aggregate_runs.py runs/sweep/<time>            # again, from the folders

Run folders are read, not re-run: a sweep that was interrupted is aggregated over the runs
that finished (each has a ``summary.json``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from matplotlib.figure import Figure  # the object API: no pyplot state, no backend to pick
from omegaconf import DictConfig

from .io import atomic_write_bytes, write_json

COLUMNS = ("setting", "episodes", "success_rate", "mean_final_distance", "plan_ms_p50", "ms_per_action")


def collect_runs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per ``<sweep_dir>/**/summary.json``, in folder order."""
    rows = []
    for path in sorted(Path(sweep_dir).glob("**/summary.json")):
        s = json.loads(path.read_text())
        # the folder is named by the sweep's overrides (hydra.job.override_dirname)
        rows.append({"setting": str(path.parent.relative_to(sweep_dir)), "run_dir": str(path.parent), **{k: s.get(k) for k in COLUMNS[1:]},
                     "successes": s.get("successes"), "success_ci95": s.get("success_ci95"), "batched_envs": s.get("batched_envs"),
                     "planner": (s.get("config") or {}).get("planner", {}).get("name"), "seed": s.get("seed")})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the runs."""
    head = "| setting | episodes | success (Wilson 95%) | mean final distance | plan p50 ms (batched envs) | ms planning per env action |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        p50 = "–" if r["plan_ms_p50"] is None else f"{r['plan_ms_p50']:.0f} ({r['batched_envs']})"
        mpa = "–" if r["ms_per_action"] is None else f"{r['ms_per_action']:.0f}"
        ci = "" if not r.get("success_ci95") else " [{:.2f}, {:.2f}]".format(*r["success_ci95"])
        lines.append(f"| {r['setting']} | {r['episodes']} | {r['success_rate']:.2f} ({r['successes']}){ci} | "
                     f"{r['mean_final_distance']:.3f} | {p50} | {mpa} |")
    return "\n".join(lines)


def plot_runs(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Two bar panels, one bar per run: success rate, and planning time per env action."""
    names = [r["setting"] for r in rows]
    y = list(range(len(rows)))
    fig = Figure(figsize=(9, 1.2 + 0.45 * len(rows)), dpi=120)
    ax_s, ax_t = fig.subplots(1, 2, sharey=True)
    ax_s.barh(y, [r["success_rate"] for r in rows], color="tab:green")
    ax_s.set_xlim(0, 1)
    ax_s.set_xlabel(f"success rate ({rows[0]['episodes']} episodes each)")
    ax_s.set_yticks(y, names, fontsize=8)
    ax_s.invert_yaxis()
    ax_t.barh(y, [r["ms_per_action"] or 0.0 for r in rows], color="tab:blue")
    ax_t.set_xlabel("planning ms per env action (batched)")
    for ax in (ax_s, ax_t):
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png"))


def aggregate(sweep_dir: str | Path) -> str:
    """Write ``compare.md``, ``compare.json`` and ``compare.png`` into ``sweep_dir``; return the table."""
    rows = collect_runs(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"{sweep_dir}: no run folder with a summary.json")
    table = format_table(rows)
    out = Path(sweep_dir)
    atomic_write_bytes(out / "compare.md", lambda f: f.write((table + "\n").encode()))
    write_json(out / "compare.json", {"sweep_dir": str(out), "rows": rows})
    plot_runs(rows, out / "compare.png")
    return table


class AggregateSweep(Callback):
    """Hydra callback (configs/plan.yaml): print and save the comparison when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            table = aggregate(sweep_dir)
        except FileNotFoundError as e:
            print(f"[sweep] nothing to aggregate: {e}")
            return
        print(f"\n{table}\n[sweep] wrote {sweep_dir / 'compare.md'}, compare.json, compare.png")
