"""Peak memory of one planning call with and without ``planner.memory_budget_mb`` (issue 11, item 6).

Each setting runs in a fresh subprocess: build the predictor (random weights), do a 1-row warm-up
plan, reset the kernel's peak-RSS counter (``/proc/self/clear_refs``), then time one CEM call and
report the peak RSS above the RSS just before it (``VmHWM - VmRSS`` from ``/proc/self/status``):
what the call itself allocated, weights excluded. The subprocesses run with
``MALLOC_MMAP_THRESHOLD_=65536`` so glibc maps every allocation of 64 KiB or more and unmaps it when
freed: RSS then follows live tensors instead of what the allocator keeps cached. The S preset's predictor (384 wide, 12 blocks,
6 heads, 384-D latents) runs at a reduced token grid and batch so it fits two CPU cores; the
last table extrapolates with the same estimator the budget uses (``rollout_bytes_per_row``) to
the issue's target, B=64 x 300 samples, 196 tokens per frame, horizon 5.

    OMP_NUM_THREADS=1 python scripts/bench_memory.py                    # defaults below
    OMP_NUM_THREADS=1 python scripts/bench_memory.py --grid 4 --envs 4 --samples 64 --horizon 2 --budget-mb 160
Linux only (reads /proc).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from wmplan.planners import Goal, PlanContext, build_planner
from wmplan.planners.base import row_bytes
from wmplan.protocols import Rollout
from wmplan.worldmodel import predictor as predictor_module
from wmplan.worldmodel.predictor import ACPredictor, ACPredictorConfig

S_PRESET = {"embed_dim": 384, "depth": 12, "num_heads": 6, "ensemble": 1}  # configs/predictor/S.yaml
LATENT_DIM, ACTION_DIM = 384, 4


class PredictorModel:
    """The planner protocol over a bare predictor (latents already normalised, actions in [-1, 1])."""

    def __init__(self, predictor: ACPredictor):
        self.predictor, self.action_dim = predictor, predictor.config.action_dim
        self.action_low, self.action_high = -torch.ones(self.action_dim), torch.ones(self.action_dim)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("bench_memory plans from given latents")

    def rollout(self, ctx: torch.Tensor, ctx_proprio: torch.Tensor | None, actions: torch.Tensor) -> Rollout:
        return self.predictor.rollout(ctx, ctx_proprio, actions)

    def rollout_bytes_per_row(self, horizon: int, ctx_len: int = 1) -> int:
        return self.predictor.rollout_bytes_per_row(horizon, ctx_len)

    def rollout_bytes_fixed(self, horizon: int, ctx_len: int = 1) -> int:
        return self.predictor.rollout_bytes_fixed(horizon, ctx_len)

    def gradient_bytes_per_row(self, horizon: int, ctx_len: int = 1) -> int:
        return self.predictor.gradient_bytes_per_row(horizon, ctx_len)

    def gradient_bytes_fixed(self, horizon: int, ctx_len: int = 1) -> int:
        return self.predictor.gradient_bytes_fixed(horizon, ctx_len)


def _kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def build(grid: int) -> PredictorModel:
    torch.manual_seed(0)
    cfg = ACPredictorConfig(latent_dim=LATENT_DIM, tokens_per_frame=grid * grid, grid=(grid, grid),
                            action_dim=ACTION_DIM, **S_PRESET)
    return PredictorModel(ACPredictor(cfg).eval().requires_grad_(False))


def measure(args: argparse.Namespace) -> dict:
    """One plan call in this process -> {peak_mb, rows_per_call, ...}."""
    torch.set_num_threads(1)
    if not args.cpu_chunking:  # one rollout call per planner call, as on CUDA (see --cpu-chunking)
        predictor_module.CPU_CHUNK_TOKENS = 1 << 62
    wm = build(args.grid)
    n = args.grid * args.grid
    g = torch.Generator().manual_seed(0)
    ctx = PlanContext(torch.randn(args.envs, 1, n, LATENT_DIM, generator=g))
    goal = Goal(torch.randn(args.envs, n, LATENT_DIM, generator=g))
    cfg = {"name": "cem", "samples": args.samples, "elites": max(2, args.samples // 8), "iterations": 1,
           "horizon": args.horizon, "memory_budget_mb": None if args.no_budget else args.budget_mb}
    if args.planner == "gradient":  # backward passes hold the graph: rows per call / gradient.GRAPH_FACTOR
        cfg = {"name": "gradient", "samples": args.samples, "iterations": 1, "horizon": args.horizon,
               "memory_budget_mb": cfg["memory_budget_mb"]}
    planner = build_planner(cfg, energy={"goal": {"metric": "l1"}})
    warm = {**cfg, "samples": 2, **({"elites": 1} if args.planner == "cem" else {})}
    build_planner(warm, energy={"goal": {"metric": "l1"}}).plan(wm, PlanContext(ctx.latents[:1]), Goal(goal.latents[:1]))
    grad = args.planner == "gradient"
    calls: list[int] = []  # rows of the calls the estimate below is for (grad-carrying ones for the gradient planner)
    inner = wm.rollout
    wm.rollout = lambda c, p, a: (calls.append(int(a.shape[0])) if not grad or a.requires_grad else None) or inner(c, p, a)  # type: ignore[method-assign]
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _kb("VmRSS")
    t0 = time.perf_counter()
    res = planner.plan(wm, ctx, goal, generator=torch.Generator().manual_seed(1))
    wall = time.perf_counter() - t0
    peak = _kb("VmHWM") - base
    per_row = row_bytes(wm, ctx, args.horizon, grad=grad)
    fixed = wm.gradient_bytes_fixed(args.horizon) if grad else wm.rollout_bytes_fixed(args.horizon)
    return {"budget_mb": cfg["memory_budget_mb"], "rows": args.envs * args.samples, "rows_per_call": max(calls),
            "calls": len(calls), "bytes_per_row_est": per_row, "peak_mb": peak / 2**20,
            "est_mb": (fixed + max(calls) * per_row) / 2**20, "plan_s": wall, "energy_sum": float(res.energy.sum())}


def extrapolate(budget_mb: float, envs: int = 64, samples: int = 300, horizon: int = 5, grid: int = 14) -> str:
    """Rows per call and estimated peak of the issue's target shape, from the estimator."""
    with torch.device("meta"):
        wm = build(grid)
    n = grid * grid
    per_row = row_bytes(wm, PlanContext(torch.empty(envs, 1, n, LATENT_DIM, device="meta")), horizon)
    rows = envs * samples
    fixed = wm.rollout_bytes_fixed(horizon)
    fit = max(1, int((budget_mb * 2**20 - fixed) // per_row))
    return (f"target: S preset, B={envs} x {samples} samples = {rows} rows, {n} tokens/frame, horizon {horizon}: "
            f"{per_row / 2**20:.1f} MiB per row (fp32) -> unbudgeted one call ~{rows * per_row / 2**30:.0f} GiB; "
            f"with memory_budget_mb={budget_mb:g}: {fit} rows per call, {-(-rows // fit)} calls per CEM iteration, "
            f"~{(fixed + min(rows, fit) * per_row) / 2**20:.0f} MiB per call (of which {fixed / 2**20:.0f} MiB fixed: "
            f"one block's RoPE-folded step weights)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", type=int, default=4, help="token grid side (S preset: 14 -> 196 tokens)")
    p.add_argument("--envs", type=int, default=4)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--horizon", type=int, default=2)
    p.add_argument("--budget-mb", type=float, default=160.0)
    p.add_argument("--planner", choices=("cem", "gradient"), default="cem",
                   help="cem (no-grad scoring) or gradient (chunked backward passes, 1 Adam iteration)")
    p.add_argument("--target-budget-mb", type=float, default=8192.0, help="budget for the extrapolated target row")
    p.add_argument("--cpu-chunking", action="store_true",
                   help="keep the predictor's CPU-only row chunking (4096 tokens per step); off by default so the "
                        "unbudgeted call allocates what one CUDA call would")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: measure in this process
    p.add_argument("--no-budget", action="store_true", help=argparse.SUPPRESS)  # internal: with --one
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args)))
        return
    common = ["--cpu-chunking"] * args.cpu_chunking + ["--planner", args.planner, "--grid", str(args.grid), "--envs", str(args.envs), "--samples", str(args.samples), "--horizon", str(args.horizon)]
    rows = []
    for extra in (["--no-budget"], ["--budget-mb", str(args.budget_mb)]):
        cmd = [sys.executable, __file__, "--one", *common, *extra]
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"S-preset predictor, {args.grid * args.grid} tokens/frame, B={args.envs} x {args.samples} samples, "
          f"horizon {args.horizon}, {'CEM' if args.planner == 'cem' else 'gradient planner'} 1 iteration, fp32 CPU, torch {torch.__version__}, "
          f"predictor CPU chunking {'on' if args.cpu_chunking else 'off (as on CUDA)'}")
    print("| memory_budget_mb | rows per call | calls | est. MiB per call | peak MiB (RSS above start) | plan s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        b = "none" if r["budget_mb"] is None else f"{r['budget_mb']:g}"
        print(f"| {b} | {r['rows_per_call']} | {r['calls']} | {r['est_mb']:.0f} | {r['peak_mb']:.0f} | {r['plan_s']:.1f} |")
    same = abs(rows[0]["energy_sum"] - rows[1]["energy_sum"]) <= 1e-4 * max(1.0, abs(rows[0]["energy_sum"]))
    print(f"same plan energies with and without the budget: {same}")
    print(extrapolate(args.target_budget_mb))


if __name__ == "__main__":
    main()
