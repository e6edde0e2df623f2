"""Paired comparison of two ``scripts/plan.py`` runs on the same episodes.

Two settings run on the same seeds (and, for ``goals=dataset``, the same goal set) face the same
starts and goals, so their difference is measured episode by episode: the episodes only A solved
("won") against those only B solved ("lost"). Under "no difference" each of those is A's with
probability 1/2, which is the exact two-sided sign test (McNemar's exact test) reported here. It
is far more sensitive than comparing two Wilson intervals, and it is how the README's
"won / lost" columns are computed.

    python scripts/compare_runs.py runs/a runs/b
"""
from __future__ import annotations

import json
from math import comb
from pathlib import Path
from typing import Any

# summary.json fields that must agree for the episodes to be the same episodes
SAME_EPISODES = ("env_id", "goals", "goal_set_sha256", "goal_offset", "goal_budget", "seeds")


def sign_test_p(won: int, lost: int) -> float:
    """Exact two-sided sign-test p-value of ``won`` against ``lost`` discordant pairs (1.0 when none)."""
    n = won + lost
    if won < 0 or lost < 0:
        raise ValueError(f"sign_test_p: counts must be >= 0, got won={won}, lost={lost}")
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(won, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


def read_run(run_dir: str | Path) -> tuple[dict[str, Any], dict[int, bool]]:
    """``(summary, {episode seed: success})`` of a plan.py run folder; errors name the file."""
    run = Path(run_dir)
    summary_path, rows_path = run / "summary.json", run / "episodes.jsonl"
    for p in (summary_path, rows_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: not found (is {run} a finished scripts/plan.py run folder?)")
    summary = json.loads(summary_path.read_text())
    outcomes: dict[int, bool] = {}
    for n, line in enumerate(rows_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        for field in ("seed", "success"):
            if field not in row:
                raise ValueError(f"{rows_path} line {n}: no field {field!r}")
        outcomes[int(row["seed"])] = bool(row["success"])
    return summary, outcomes


def compare_runs(run_a: str | Path, run_b: str | Path) -> dict[str, Any]:
    """Paired outcome counts and the sign test of run A against run B over their common episodes.

    Raises ValueError naming the field when the runs did not face the same episodes (another env,
    goal source, goal set, goal offset or budget, or other episode seeds).
    """
    (sa, oa), (sb, ob) = read_run(run_a), read_run(run_b)
    for field in SAME_EPISODES:
        if sa.get(field) != sb.get(field):
            raise ValueError(f"runs {run_a} and {run_b} did not face the same episodes: summary field {field!r} is "
                             f"{sa.get(field)!r} against {sb.get(field)!r}")
    common = sorted(set(oa) & set(ob))
    if not common:
        raise ValueError(f"runs {run_a} and {run_b} share no episode seed")
    won = sum(oa[s] and not ob[s] for s in common)
    lost = sum(ob[s] and not oa[s] for s in common)
    return {"run_a": str(run_a), "run_b": str(run_b), "episodes": len(common),
            "successes_a": sum(oa[s] for s in common), "successes_b": sum(ob[s] for s in common),
            "won": won, "lost": lost, "both": sum(oa[s] and ob[s] for s in common),
            "neither": sum(not oa[s] and not ob[s] for s in common), "sign_test_p": sign_test_p(won, lost),
            "only_in_a": len(set(oa) - set(ob)), "only_in_b": len(set(ob) - set(oa))}


def format_comparison(r: dict[str, Any]) -> str:
    n = r["episodes"]
    text = (f"A {r['run_a']}: {r['successes_a']}/{n}\nB {r['run_b']}: {r['successes_b']}/{n}\n"
            f"paired over {n} episodes: A won {r['won']}, lost {r['lost']} (both {r['both']}, neither {r['neither']}); "
            f"exact sign test p = {r['sign_test_p']:.3f}")
    if r["only_in_a"] or r["only_in_b"]:
        text += f"\n(left out: {r['only_in_a']} episodes only in A, {r['only_in_b']} only in B)"
    return text
