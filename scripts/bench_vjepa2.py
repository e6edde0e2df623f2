"""Planning speed with a V-JEPA 2-AC-shaped world model: wmplan's batched, KV-cached CEM against
the release's style of planning (one env at a time, the whole sequence recomputed every
rollout step, CEM returning its final mean), in the same process, on random weights.

    OMP_NUM_THREADS=1 python scripts/bench_vjepa2.py                    # CPU, reduced size
    python scripts/bench_vjepa2.py --device cuda --width 1024 --depth 24 --heads 16 --grid 16 \\
        --latent 1408 --samples 800 --iterations 10 --horizon 1 --envs 1   # the released shape/budget

Rows: ``reference`` (per-env loop, full recomputation), ``wmplan uncached`` (all envs in one
batched call, full recomputation), ``wmplan cached`` (batched + KV cache). Each row: warm-up
time, p50/p95 seconds per plan of all envs, seconds per CEM iteration, ms per action per env,
the speed ratio to the reference, and the mean final energy (quality at the same budget).
The predictor has the released layout (``worldmodel/vjepa2_predictor.py``); only sizes differ.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from wmplan.planners.cem import CEMConfig, CEMPlanner
from wmplan.protocols import Goal, PlanContext
from wmplan.worldmodel.utils import resolve_device
from wmplan.worldmodel.vjepa2 import OfficialWorldModel, official_action_box
from wmplan.worldmodel.vjepa2_encoder import OfficialViT, OfficialViTConfig
from wmplan.worldmodel.vjepa2_predictor import OfficialACConfig, OfficialACPredictor


def build(args: argparse.Namespace, device: torch.device) -> OfficialWorldModel:
    """A random V-JEPA 2-AC-shaped world model (the encoder is a 1-block stand-in: not timed)."""
    torch.manual_seed(0)
    enc = OfficialViT(OfficialViTConfig(embed_dim=args.latent, depth=1, num_heads=args.heads_enc,
                                        mlp_hidden=args.latent, img_size=16 * args.grid))
    pred = OfficialACPredictor(OfficialACConfig(latent_dim=args.latent, embed_dim=args.width, depth=args.depth,
                                                num_heads=args.heads, mlp_hidden=4 * args.width, action_dim=7,
                                                state_dim=7, grid=(args.grid, args.grid), extrinsics_dim=6))
    for m in pred.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.trunc_normal_(m.weight, std=0.02)
    return OfficialWorldModel(enc, pred).to(device)


def reference_cem(wm: OfficialWorldModel, z: torch.Tensor, pose: torch.Tensor, goal: torch.Tensor,
                  args: argparse.Namespace, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's CEM for ONE env (z [1,1,N,D], pose [1,1,7], goal [1,N,D]): delta-xyz and
    gripper sampled, clipped to the box, rolled out one step at a time with the whole sequence
    recomputed, top-k by mean L1 to the goal, momentum updates, the final mean returned."""
    H, S, K, m = args.horizon, args.samples, args.elites, args.momentum
    dev = z.device
    low, high = official_action_box(args.maxnorm)
    low, high = low.to(dev), high.to(dev)
    mean = torch.zeros(H, 7, device=dev)
    std = torch.cat([torch.full((H, 3), args.maxnorm), torch.zeros(H, 3), torch.ones(H, 1)], -1).to(dev)
    wm.use_cache = False
    for _ in range(args.iterations):
        acts = mean + std * torch.randn(S, H, 7, generator=gen, device=dev)
        acts = torch.maximum(torch.minimum(acts, high), low)
        r = wm.rollout(z, pose, acts)
        energy = (r.latents[:, -1] - goal).abs().mean(dim=(-2, -1))
        elites = acts[energy.topk(K, largest=False).indices]
        mean = m * mean + (1 - m) * elites.mean(0)
        std = m * std + (1 - m) * elites.std(0)
    r = wm.rollout(z, pose, mean[None])
    return mean, (r.latents[:, -1] - goal).abs().mean(dim=(-2, -1))


def timed(fn, reps: int, sync) -> tuple[float, list[float], object]:
    """(warm-up seconds, per-rep seconds, last result)."""
    t0 = time.perf_counter()
    out = fn()
    sync()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return warm, times, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--width", type=int, default=256, help="predictor width E (released: 1024)")
    p.add_argument("--depth", type=int, default=2, help="predictor blocks (released: 24)")
    p.add_argument("--heads", type=int, default=4, help="predictor heads (released: 16)")
    p.add_argument("--heads-enc", type=int, default=4)
    p.add_argument("--latent", type=int, default=256, help="encoder width D (released ViT-g: 1408)")
    p.add_argument("--grid", type=int, default=4, help="frame token grid side (released: 16 -> 256 tokens)")
    p.add_argument("--envs", type=int, default=4)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--elites", type=int, default=10)
    p.add_argument("--momentum", type=float, default=0.15)
    p.add_argument("--maxnorm", type=float, default=0.075)
    p.add_argument("--horizon", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    wm = build(args, dev)
    B, N, D = args.envs, args.grid ** 2, args.latent
    g = torch.Generator(device=dev).manual_seed(0)
    z = torch.nn.functional.layer_norm(torch.randn(B, 1, N, D, generator=g, device=dev), (D,))
    goal = torch.nn.functional.layer_norm(torch.randn(B, N, D, generator=g, device=dev), (D,))
    pose = torch.rand(B, 1, 7, generator=g, device=dev)

    def reference():
        gen = torch.Generator(device=dev).manual_seed(1)
        outs = [reference_cem(wm, z[b:b + 1], pose[b:b + 1], goal[b:b + 1], args, gen) for b in range(B)]
        return torch.cat([e for _, e in outs])

    cfg = CEMConfig(horizon=args.horizon, samples=args.samples, iterations=args.iterations, elites=args.elites,
                    momentum=args.momentum, init_std=1.0, min_std=0.0, include_mean=False, warm_start=False,
                    return_mean=True)
    planner = CEMPlanner(cfg)

    def wmplan(cache: bool):
        def run():
            wm.use_cache = cache
            gens = [torch.Generator(device=dev).manual_seed(1 + b) for b in range(B)]
            return planner.plan(wm, PlanContext(z, pose), Goal(goal), generator=gens).energy
        return run

    rows = []
    with torch.no_grad():
        for name, fn in [("reference (per env, full recompute)", reference), ("wmplan batched, uncached", wmplan(False)),
                         ("wmplan batched, KV cache", wmplan(True))]:
            warm, times, energy = timed(fn, args.reps, sync)
            p50 = statistics.median(times)
            rows.append({"row": name, "warmup_s": warm, "p50_s": p50, "p95_s": sorted(times)[int(0.95 * (len(times) - 1))],
                         "s_per_iter": p50 / args.iterations, "ms_per_action_per_env": 1000 * p50 / B,
                         "final_energy": float(energy.mean())})
    ref = rows[0]["p50_s"]
    print(f"V-JEPA 2-AC-shaped predictor E={args.width} depth={args.depth} heads={args.heads} D={D} N={N} tokens/frame | "
          f"CEM {args.samples} samples x {args.iterations} iterations, top {args.elites}, horizon {args.horizon}, "
          f"{B} envs | {dev} threads={args.threads} torch {torch.__version__} python {platform.python_version()}")
    print(f"{'row':38s} {'warm-up s':>9s} {'p50 s':>8s} {'p95 s':>8s} {'s/iter':>8s} {'ms/act/env':>10s} "
          f"{'speed-up':>8s} {'energy':>8s}")
    for r in rows:
        r["speedup"] = ref / r["p50_s"]
        print(f"{r['row']:38s} {r['warmup_s']:9.3f} {r['p50_s']:8.3f} {r['p95_s']:8.3f} {r['s_per_iter']:8.3f} "
              f"{r['ms_per_action_per_env']:10.1f} {r['speedup']:7.2f}x {r['final_energy']:8.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "device": str(dev), "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
