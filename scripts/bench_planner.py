"""Benchmark wmplan planners against a plain reference CEM on the same world model.

    python scripts/bench_planner.py                          # configs/bench_planner.yaml
    python scripts/bench_planner.py batch=[1,16] samples=[64,256] out_dir=runs/bench

For every (predictor size, batch B, samples S, horizon H) and planner, all in one process:
first call (compile time) and warm-up per planner, then ``repeats`` rounds of timed plans
round-robin over the planners (CUDA synchronised), each from the same seeds and a cold planner,
so on a shared machine all planners see the same load. Writes ``bench.json`` (header + ``rows``), ``bench.png`` and prints a table.

The REFERENCE planner lives in this file: the straightforward CEM a first implementation
would write - one env at a time in a Python loop, fp32, the predictor's uncached rollout
(the whole sequence recomputed at every step), host syncs (``.item()``) every iteration.
Same algorithm and budget as ``planners.cem`` (S samples incl. the mean, K elites, I
iterations, momentum, std floor), so speed ratios compare implementations, not algorithms.

Row fields: latency_ms_p50/p95 (one plan call for B envs), latency_ms_per_action_p50
(per executed action: B * replan_pred_steps predictor steps per plan), plans_per_s (env plans
per second = B / latency), rollout_steps_per_s (predictor sample-steps evaluated per
second, counted at the world-model interface), flops_per_plan (torch.utils.flop_counter,
one untimed plan), achieved_flops_per_s, frac_of_peak (only where the device peak is
known), peak_mem_mb (CUDA: max allocated; CPU: process max RSS, monotone over the run),
first_call_s and compile_s (first call minus steady p50, when compile is on),
final_energy (mean over envs), speedup_vs_reference and energy_vs_reference.
"""
from __future__ import annotations

import itertools
import json
import math
import platform
import resource
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from matplotlib.figure import Figure
import torch
from omegaconf import DictConfig, OmegaConf

from wmplan.planners import Goal, PlanContext, Rollout, build_planner
from wmplan.worldmodel.predictor import ACPredictor, ACPredictorConfig
from wmplan.worldmodel.utils import start_job

# Dense peak FLOP/s by device name fragment: (fp32 non-tensor-core, bf16 tensor-core).
PEAK_FLOPS = {"H100": (67e12, 989e12), "H200": (67e12, 989e12), "A100": (19.5e12, 312e12)}


class CountingModel:
    """Planner protocol over a raw ACPredictor (or a WorldModel) that counts sample-steps.

    ``rollout`` forwards to the predictor with ``use_cache``; ``steps`` accumulates M*H per call
    when ``counting`` is on (a Python int from shapes, no sync). Counting runs only in the
    untimed eager accounting call, so compiled timed calls never guard on the counter.
    """

    def __init__(self, model: Any, action_low: torch.Tensor, action_high: torch.Tensor, use_cache: bool = True):
        self.model = model
        self.action_low, self.action_high = action_low, action_high
        self.action_dim = int(action_low.numel())
        self.proprio_dim = None
        self.use_cache = use_cache
        self.counting = False
        self.steps = 0

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("the benchmark plans from latents; it never encodes frames")

    def rollout(self, ctx_latents, ctx_proprio, actions, ctx_actions=None) -> Rollout:
        if self.counting:
            self.steps += actions.shape[0] * actions.shape[1]
        r = self.model.rollout(ctx_latents, ctx_proprio, actions, ctx_actions, use_cache=self.use_cache)
        return Rollout(r.latents, r.proprio, r.disagreement)


# ------------------------------------------------------------------------------ reference
def reference_plan(wm: CountingModel, ctx: torch.Tensor, goal: torch.Tensor, seeds: list[int], cfg: DictConfig,
                   horizon: int, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain per-env CEM. ctx [B,1,N,D], goal [B,N,D] -> (actions [B,H,A], energy [B])."""
    low, high = wm.action_low, wm.action_high
    half = (high - low) / 2
    acts, energies = [], []
    for b in range(ctx.shape[0]):
        g = torch.Generator(device=ctx.device).manual_seed(int(seeds[b]))
        mean = ((low + high) / 2).expand(horizon, -1).clone()
        std = cfg.init_std * half.expand(horizon, -1).clone()
        best_e, best_a = float("inf"), mean
        for _ in range(cfg.iterations):
            eps = torch.randn(samples - 1, horizon, wm.action_dim, generator=g, device=ctx.device)
            cand = torch.cat([mean[None], mean + std * eps]).clamp(low, high)
            with torch.no_grad():
                roll = wm.rollout(ctx[b : b + 1], None, cand)
            e = (roll.latents[:, -1].float() - goal[b]).abs().mean(dim=(-2, -1))
            order = torch.argsort(e)
            elites = cand[order[: cfg.elites]]
            mean = cfg.momentum * mean + (1 - cfg.momentum) * elites.mean(0)
            std = torch.maximum(cfg.momentum * std + (1 - cfg.momentum) * elites.std(0, unbiased=False), cfg.min_std * half)
            top = e[order[0]].item()  # host sync every iteration, as a first implementation does
            if top < best_e:
                best_e, best_a = top, cand[order[0]]
        acts.append(best_a)
        energies.append(best_e)
    return torch.stack(acts), torch.tensor(energies)


# ------------------------------------------------------------------------------ helpers
def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def peak_mem_mb(dev: torch.device) -> float:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 1024


def build_model(cfg: DictConfig, size: DictConfig, dev: torch.device) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """(model with .rollout(..., use_cache=), action_low [A], action_high [A])."""
    if cfg.world_model_path:
        from wmplan.worldmodel.world_model import WorldModel

        wm = WorldModel.load(cfg.world_model_path, device=dev)
        if wm.proprio_dim is not None:
            raise ValueError("bench_planner plans from latents only; use a world model without proprio")
        return wm, wm.action_low.float(), wm.action_high.float()
    n = int(cfg.tokens_per_frame)
    side = int(round(math.sqrt(n)))
    pc = ACPredictorConfig(
        latent_dim=int(size.latent_dim), tokens_per_frame=n, grid=(side, n // side), action_dim=int(cfg.action_dim),
        proprio_dim=None, embed_dim=int(size.embed_dim), depth=int(size.depth), num_heads=int(size.num_heads),
        mlp_ratio=float(size.get("mlp_ratio", 4.0)), ensemble=int(size.get("ensemble", 1)),
    )
    model = ACPredictor(pc).to(dev).eval().requires_grad_(False)
    ones = torch.ones(pc.action_dim, device=dev)
    return model, -ones, ones


def make_problem(model: CountingModel, batch: int, horizon: int, seed: int, dev: torch.device):
    """Random layer-normed context latents and goals reachable by random actions."""
    g = torch.Generator(device=dev).manual_seed(seed)
    n, d = _latent_shape(model.model)
    ctx = torch.nn.functional.layer_norm(torch.randn(batch, 1, n, d, generator=g, device=dev), (d,))
    low, high = model.action_low, model.action_high
    a = low + (high - low) * torch.rand(batch, horizon, model.action_dim, generator=g, device=dev)
    with torch.no_grad():
        goal = model.model.rollout(ctx, None, a, None, use_cache=True).latents[:, -1].float()
    return ctx, goal


def _latent_shape(model: Any) -> tuple[int, int]:
    pc = model.config if hasattr(model, "config") else model.predictor.config
    return pc.tokens_per_frame, pc.latent_dim


def planner_cfg(cfg: DictConfig, spec: str, samples: int, horizon: int) -> dict:
    """wmplan planner config at the benchmark's budget (shared CEM fields) + per-planner overrides.

    ``spec`` is a planner name with optional ``+compile`` / ``+amp`` suffixes (e.g.
    ``cem+compile``) so eager and compiled variants can be timed in the same process.
    """
    name, *flags = spec.split("+")
    unknown = set(flags) - {"compile", "amp"}
    if unknown:
        raise ValueError(f"planner spec {spec!r}: unknown suffix {sorted(unknown)}; use +compile / +amp")
    compile_ = bool(cfg.compile) or "compile" in flags
    base = {"name": name, "horizon": horizon, "warm_start": False, "amp": bool(cfg.amp) or "amp" in flags}
    if name in ("cem", "icem"):
        base.update(name="cem", samples=samples, iterations=cfg.iterations, elites=cfg.elites, momentum=cfg.momentum,
                    init_std=cfg.init_std, min_std=cfg.min_std, compile=compile_)
        if name == "icem":
            base.update(keep_elites=0.3, noise_beta=2.0)
    elif name == "mppi":
        base.update(samples=samples, iterations=cfg.iterations, noise_std=cfg.init_std, compile=compile_)
    elif name == "random_shooting":
        base.update(samples=samples * cfg.iterations)  # same number of rollouts as CEM
    elif name == "gradient":
        base.update(samples=max(1, samples // 16), iterations=cfg.iterations * 4)
    elif compile_:
        raise ValueError(f"planner {name!r} has no compile option (cem, icem, mppi do)")
    over = cfg.planner_overrides.get(name) if cfg.planner_overrides else None
    if over:
        base.update(OmegaConf.to_container(over, resolve=True))
    return base


def timed(run_once, dev: torch.device) -> tuple[float, Any]:
    """(wall ms, result) of one call, synchronised on CUDA."""
    sync(dev)
    t0 = time.perf_counter()
    out = run_once()
    sync(dev)
    return (time.perf_counter() - t0) * 1e3, out


def account(run_once, wm: CountingModel, flops: bool) -> tuple[int, float | None]:
    """One untimed eager call: (sample-steps through the world model, FLOPs or None)."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        if hasattr(torch.compiler, "set_stance"):
            stack.enter_context(torch.compiler.set_stance("force_eager"))
        fc = None
        if flops:
            from torch.utils.flop_counter import FlopCounterMode

            fc = stack.enter_context(FlopCounterMode(display=False))
        wm.steps, wm.counting = 0, True
        try:
            run_once()
        finally:
            wm.counting = False
    return wm.steps, None if fc is None else float(fc.get_total_flops())


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


# ------------------------------------------------------------------------------ main
def run(cfg: DictConfig) -> dict:
    dev = start_job(cfg.threads, cfg.seed, cfg.device)
    peak = None
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        for k, v in PEAK_FLOPS.items():
            if k in name:
                peak = v[1] if cfg.amp else v[0]
    header = {
        "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__, "python": platform.python_version(), "numpy": np.__version__,
        "cpu_threads": torch.get_num_threads(), "seed": int(cfg.seed), "peak_flops": peak,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "notes": "plans_per_s = env plans/s (B per call); rollout_steps_per_s = predictor sample-steps/s; "
                 "peak_mem_mb on CPU is the process max RSS (monotone).",
    }
    sizes = cfg.predictors if not cfg.world_model_path else [OmegaConf.create({"name": "checkpoint"})]
    rows = []
    for size, b, s, h in itertools.product(sizes, cfg.batch, cfg.samples, cfg.horizon):
        model, low, high = build_model(cfg, size, dev)
        seeds = [int(cfg.seed) * 1000 + i for i in range(b)]
        probe = CountingModel(model, low, high)
        ctx, goal = make_problem(probe, b, h, int(cfg.seed), dev)
        entries = []
        for name in cfg.planners:
            planner_obj = None
            if name == "reference":
                wm = CountingModel(model, low, high, use_cache=False)
                fn = lambda wm=wm: reference_plan(wm, ctx, goal, seeds, cfg, h, s)[1]  # noqa: E731
                iters = int(cfg.iterations)
            else:
                wm = CountingModel(model, low, high, use_cache=True)
                planner_obj = build_planner(planner_cfg(cfg, name, s, h), energy={"goal": {"metric": "l1", "steps": "last"}})
                iters = getattr(planner_obj.config, "iterations", 1)

                def fn(planner=planner_obj, wm=wm):
                    planner.reset()
                    gens = [torch.Generator(device=dev).manual_seed(x) for x in seeds]
                    return planner.plan(wm, PlanContext(ctx), Goal(goal), generator=gens).energy

            # first call (includes compilation) and warm-up, with this entry's peak memory
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            first_ms, _ = timed(fn, dev)
            for _ in range(max(int(cfg.warmup) - 1, 0)):
                timed(fn, dev)
            entries.append({"name": name, "fn": fn, "wm": wm, "planner": planner_obj, "iters": iters,
                            "first_s": first_ms / 1e3, "mem": peak_mem_mb(dev), "lat": [], "energy": None})
        # Timed calls round-robin over planners, so every planner samples the same machine load
        # (the ratios stay honest on a shared, noisy CPU).
        for _ in range(int(cfg.repeats)):
            for e in entries:
                ms, energy = timed(e["fn"], dev)
                e["lat"].append(ms)
                e["energy"] = float(torch.as_tensor(energy).float().mean())
        ref = next((e for e in entries if e["name"] == "reference"), None)
        for e in entries:
            steps_per_plan, flops = account(e["fn"], e["wm"], bool(cfg.count_flops))
            p50 = pct(e["lat"], 50)
            compiled = bool(getattr(getattr(e["planner"], "config", None), "compile", False))
            row = {
                "planner": e["name"], "predictor": size.get("name", "?"), "batch": b, "samples": s,
                "iterations": e["iters"], "horizon": h, "device": str(dev),
                "latency_ms_p50": p50, "latency_ms_p95": pct(e["lat"], 95),
                "latency_ms_per_action_p50": p50 / (b * int(cfg.replan_pred_steps)),
                "plans_per_s": b * 1e3 / p50, "rollout_steps_per_s": steps_per_plan * 1e3 / p50,
                "flops_per_plan": flops, "achieved_flops_per_s": None if flops is None else flops * 1e3 / p50,
                "frac_of_peak": None if (flops is None or peak is None) else flops * 1e3 / p50 / peak,
                "peak_mem_mb": e["mem"], "first_call_s": e["first_s"],
                "compile_s": max(e["first_s"] - p50 / 1e3, 0.0) if compiled else None,
                "final_energy": e["energy"],
            }
            if ref is not None:
                row["speedup_vs_reference"] = pct(ref["lat"], 50) / p50
                row["energy_vs_reference"] = row["final_energy"] / max(ref["energy"], 1e-12)
            rows.append(row)
            print_row(row)
    result = {"header": header, "rows": rows}
    result["target"] = target_check(rows)
    return result


def target_check(rows: list[dict]) -> list[dict]:
    """Batched CEM vs reference at the same configuration: throughput ratio and energy ratio."""
    out = []
    for r in rows:
        if r["planner"].split("+")[0] == "cem" and "speedup_vs_reference" in r:
            out.append({k: r[k] for k in ("planner", "predictor", "batch", "samples", "horizon")} | {
                "speedup": r["speedup_vs_reference"], "energy_ratio": r["energy_vs_reference"],
                "meets_5x_and_5pct": bool(r["speedup_vs_reference"] >= 5 and r["energy_vs_reference"] <= 1.05),
            })
    return out


COLS = [("planner", "{:>15}"), ("predictor", "{:>9}"), ("batch", "{:>5}"), ("samples", "{:>7}"), ("horizon", "{:>3}"),
        ("latency_ms_p50", "{:>9.2f}"), ("latency_ms_p95", "{:>9.2f}"), ("plans_per_s", "{:>9.1f}"),
        ("rollout_steps_per_s", "{:>11.0f}"), ("final_energy", "{:>8.4f}"), ("speedup_vs_reference", "{:>7.2f}")]


def print_row(row: dict) -> None:
    cells = []
    for k, fmt in COLS:
        v = row.get(k)
        cells.append(fmt.format(v) if v is not None else fmt.replace(".2f", "").replace(".1f", "").replace(".0f", "").replace(".4f", "").format("-"))
    print(" ".join(cells), flush=True)


def write_plot(rows: list[dict], path: Path, title: str = "") -> str:
    """Two labelled panels, one bar per row: p50 latency per batched plan (ms, log scale, with
    the p95 as a whisker) and the speed-up over the reference CEM measured in the same run."""
    names = sorted({r["planner"] for r in rows})
    colors = [f"C{names.index(r['planner'])}" for r in rows]
    labels = [f"{r['planner']} ({r['predictor']})\nB{r['batch']} S{r['samples']} H{r['horizon']}" for r in rows]
    x = np.arange(len(rows))
    fig = Figure(figsize=(max(8, 1.1 * len(rows) + 2), 4.6), dpi=120)
    ax_l, ax_s = fig.subplots(1, 2)
    p50 = np.array([r["latency_ms_p50"] for r in rows])
    p95 = np.array([r["latency_ms_p95"] for r in rows])
    ax_l.bar(x, p50, color=colors, yerr=[np.zeros_like(p50), p95 - p50], capsize=3)
    ax_l.set_yscale("log")
    ax_l.set_ylabel("latency per batched plan, p50 (ms; whisker: p95)")
    ax_s.bar(x, [r.get("speedup_vs_reference") or 0.0 for r in rows], color=colors)
    ax_s.axhline(1.0, color="k", lw=0.8)
    ax_s.set_ylabel("speed-up over the reference CEM (same run)")
    for ax in (ax_l, ax_s):
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return "matplotlib"


@hydra.main(version_base="1.3", config_path="../configs", config_name="bench_planner")
def main(cfg: DictConfig) -> None:
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(" ".join(k for k, _ in COLS))
    result = run(cfg)
    if cfg.plot and result["rows"]:
        h = result["header"]
        title = f"{h.get('device')} ({h.get('device_name')}), torch {h.get('torch')}, {h.get('cpu_threads')} CPU threads"
        result["plot"] = write_plot(result["rows"], out_dir / "bench.png", title)
    (out_dir / "bench.json").write_text(json.dumps(result, indent=2))
    for t in result["target"]:
        print(f"target B={t['batch']} S={t['samples']} H={t['horizon']} {t['predictor']}: "
              f"{t['planner']} {t['speedup']:.1f}x reference, energy ratio {t['energy_ratio']:.3f} -> "
              f"{'OK' if t['meets_5x_and_5pct'] else 'MISS'}")
    print(f"wrote {out_dir / 'bench.json'}")


if __name__ == "__main__":
    main()
