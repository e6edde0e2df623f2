"""Goal-image planning in simulation: encode frame and goal, plan, act, replan.

    python scripts/plan.py                       # bundled PointMaze model, 20 episodes
    python scripts/plan.py episodes=50 world_model=runs/pm_predictor/world_model.pt

Writes to ``out_dir``: ``summary.json`` (success rate, distances, plan latency, seed,
config), ``episodes.jsonl`` (one line per episode) and ``videos/ep_<seed>.gif``
(current view | goal image).
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import gymnasium as gym
import hydra
from hydra.core.hydra_config import HydraConfig
import imageio.v2 as imageio
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import wmplan.envs  # noqa: F401  (registers the wmplan/* gymnasium ids)
from wmplan.planners import build_energy, build_planner, run_mpc
from wmplan.worldmodel.utils import ProgressBar, atomic_write_bytes, resolve_device, seed_everything
from wmplan.worldmodel.pretrained_models import resolve_model_path
from wmplan.worldmodel.world_model import WorldModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def task_energy(cfg: DictConfig, cli_overrides: list[str]) -> dict:
    """The energy config: ``energy=<name>`` from the command line wins; otherwise the task's
    ``env.plan.energy`` (a file in configs/energy/) when it names one; otherwise ``cfg.energy``.
    ``energy.<field>=...`` command-line overrides are applied on top in every case."""
    name = cfg.env.plan.get("energy")
    chose = any(o.lstrip("+~").split("=", 1)[0] == "energy" for o in cli_overrides)
    if name is None or chose:
        return OmegaConf.to_container(cfg.energy, resolve=True)
    path = CONFIGS / "energy" / f"{name}.yaml"
    if not path.is_file():
        have = sorted(q.stem for q in (CONFIGS / "energy").glob("*.yaml"))
        raise ValueError(f"configs/env (env.plan.energy={name!r}): no file {path}; energies: {have}")
    dotted = [o.lstrip("+")[len("energy."):] for o in cli_overrides if o.lstrip("+").startswith("energy.")]
    return OmegaConf.to_container(OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(dotted)), resolve=True)


def write_json(path: Path, obj) -> None:
    data = json.dumps(obj, indent=2).encode()
    atomic_write_bytes(path, lambda f: f.write(data))


def write_video(path: Path, frames: list[np.ndarray], scale: int, fps: int = 10) -> None:
    big = [np.ascontiguousarray(f.repeat(scale, 0).repeat(scale, 1)) for f in frames]
    big += [big[-1]] * 5  # hold the last frame so the outcome is visible
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, big, duration=1000 / fps, loop=0)


def crosses_wall(env_id: str, env_kwargs: dict, seeds: list[int]) -> list[bool | None]:
    """Whether each seed's start-goal line crosses a wall (tasks that report ``crosses_wall``)."""
    env = gym.make(env_id, disable_env_checker=True, **env_kwargs)
    out = [env.reset(seed=s)[1].get("crosses_wall") for s in seeds]
    env.close()
    return out


@hydra.main(version_base="1.3", config_path="../configs", config_name="plan")
def main(cfg: DictConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    out = Path(cfg.out_dir)
    model_path = resolve_model_path(str(cfg.world_model))
    wm = WorldModel.load(model_path, device=device)
    env_kwargs = OmegaConf.to_container(cfg.env.kwargs, resolve=True)
    if wm.meta.get("env_id") not in (None, cfg.env.id):
        raise ValueError(f"world_model {model_path}: trained on {wm.meta['env_id']!r}, but env.id={cfg.env.id!r}")
    energy_cfg = task_energy(cfg, list(HydraConfig.get().overrides.task))
    energy = build_energy(energy_cfg)
    planner = build_planner(OmegaConf.to_container(cfg.planner, resolve=True), energy=energy)
    replan_every = int(cfg.replan_every) if cfg.replan_every is not None else wm.frameskip
    seeds = [int(cfg.seed) + i for i in range(int(cfg.episodes))]
    n_envs = max(1, min(int(cfg.num_envs), len(seeds)))
    env_list = [gym.make(cfg.env.id, disable_env_checker=True, **env_kwargs) for _ in range(n_envs)]
    print(f"[plan] {cfg.env.id}: {len(seeds)} episodes, {n_envs} envs per batched plan, world model {model_path} "
          f"({wm.num_params() / 1e6:.2f}M predictor params, frameskip {wm.frameskip}), planner {cfg.planner.name}, "
          f"energy {json.dumps(energy_cfg.get('goal', {}))}, device {device}")

    bar = ProgressBar(total=len(seeds), desc="[plan] episodes")
    n_ok = 0

    def progress(ev: dict) -> None:
        nonlocal n_ok
        if ev.get("event") == "episode":
            n_ok += int(ev["result"].success)
            bar.update(1, success=n_ok)

    t0 = time.time()
    results = run_mpc(
        env_list, wm, planner, seeds, max_steps=int(cfg.max_steps), replan_every=replan_every,
        context_frames=int(cfg.context_frames), record=bool(cfg.video), progress=progress,
    )
    wall = time.time() - t0
    bar.close()
    crossing = crosses_wall(cfg.env.id, env_kwargs, seeds)

    plan_ms = np.array([t for r in results for t in r.plan_times_ms])
    steps = np.array([r.steps for r in results])
    rows = []
    for r, c in zip(results, crossing):
        rows.append({"seed": r.seed, "success": bool(r.success), "steps": int(r.steps),
                     "final_distance": float(r.final_distance), "crosses_wall": c,
                     "plans": len(r.plan_times_ms)})
        if cfg.video and r.frames:
            write_video(out / "videos" / f"ep_{r.seed:04d}.gif", r.frames, int(cfg.video_scale))
    n_plans = len(plan_ms)
    summary = {
        "env_id": cfg.env.id,
        "world_model": str(model_path),
        "episodes": len(results),
        "success_rate": float(np.mean([r.success for r in results])),
        "mean_final_distance": float(np.mean([r.final_distance for r in results])),
        "mean_steps": float(steps.mean()),
        "cross_wall_fraction": float(np.mean([bool(c) for c in crossing])) if crossing[0] is not None else None,
        "success_rate_cross_wall": (float(np.mean([r["success"] for r in rows if r["crosses_wall"]]))
                                    if any(r["crosses_wall"] for r in rows) else None),
        "plan_ms_p50": float(np.percentile(plan_ms, 50)) if n_plans else None,
        "plan_ms_p95": float(np.percentile(plan_ms, 95)) if n_plans else None,
        "batched_envs": n_envs,
        # each episode records the wall time of every batched plan call it took part in, so this is
        # the planning latency an env sees per executed action (all batched envs are served at once)
        "ms_per_action": float(plan_ms.sum() / max(steps.sum(), 1)) if n_plans else None,
        "wall_time_s": wall,
        "seed": int(cfg.seed),
        "seeds": seeds,
        "device": str(device),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "energy": energy_cfg,  # what was used (may come from env.plan.energy, see task_energy)
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json(out / "summary.json", summary)
    atomic_write_bytes(out / "episodes.jsonl", lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows).encode()))

    print(f"\n{'seed':>5} {'success':>8} {'steps':>6} {'final_dist':>10} {'crosses_wall':>12}")
    for r in rows:
        print(f"{r['seed']:>5} {str(r['success']):>8} {r['steps']:>6} {r['final_distance']:>10.3f} {str(r['crosses_wall']):>12}")
    print(f"\nsuccess_rate {summary['success_rate']:.3f} over {len(results)} episodes"
          f" (cross-wall fraction {summary['cross_wall_fraction']}, success on those {summary['success_rate_cross_wall']})"
          f" | mean_final_distance {summary['mean_final_distance']:.3f}"
          f" | plan p50 {summary['plan_ms_p50']:.0f} ms per call for up to {n_envs} envs | {summary['ms_per_action']:.1f} ms planning per executed action"
          f" | wall {wall:.0f}s")
    print(f"[plan] wrote {out / 'summary.json'}")


if __name__ == "__main__":
    main()
