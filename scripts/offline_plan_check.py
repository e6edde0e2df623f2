"""Offline planning check: plan from a recorded frame to the frame ``offset`` steps later.

    python scripts/offline_plan_check.py world_model=pretrained:pointmaze data_dir=data/pointmaze offset=10
    python scripts/offline_plan_check.py world_model=runs/pred/world_model.pt data_dir=data/imported \\
        offset=5 episodes=null start_stride=5 planner=mppi

No simulator is needed (datasets without simulator state, e.g. imported LeRobot data, work).
For each (episode, start step t): context = frame t (and its proprio when the model uses
proprio), goal = frame t + offset (and its proprio), horizon = offset / frameskip predictor
steps. The planner (the same ``planner`` / ``energy`` groups as scripts/plan.py) optimises the
actions; the same energy then scores, through the same model rollout, the plan, the recorded
actions (t .. t+offset-1, grouped frameskip per predictor step) and zero actions (clipped into
the model's action box). Action errors are mean absolute differences in env units, on the first
predictor step (what MPC would execute) and over the whole plan. ``<out_dir>/summary.json``
holds every row, the means and the seeds. This script is the glue between the world-model and
planner layers (neither imports the other).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import wmplan.config_store  # noqa: F401  (registers the structured configs the planner/energy groups use)
from wmplan.checks import ConfigError, check_number
from wmplan.io import write_json
from wmplan.planners import Goal, PlanContext, build_energy, build_planner
from wmplan.planners.base import planning_run_record
from wmplan.worldmodel.data import EpisodeDataset
from wmplan.worldmodel.pretrained_models import resolve_model_path
from wmplan.worldmodel.utils import start_job
from wmplan.worldmodel.world_model import WorldModel

WHERE = "offline_plan_check"


def check_pairs(ds: EpisodeDataset, episodes: int | None, offset: int, start_step: int,
                start_stride: int) -> list[tuple[int, int]]:
    """The (episode id, start step) pairs to plan; raises ConfigError naming the bad setting."""
    ids = ds.episode_ids if episodes is None else ds.episode_ids[: int(episodes)]
    if episodes is not None and len(ids) < int(episodes):
        raise ConfigError(f"{WHERE}: episodes={episodes} asked, {ds.root} holds {len(ids)}")
    pairs: list[tuple[int, int]] = []
    for i in ids:
        length = ds.load_episode(i).length
        if length < start_step + offset:
            raise ConfigError(f"{WHERE}: episode {i} of {ds.root} has {length} steps, fewer than "
                              f"start_step + offset = {start_step + offset}")
        stops = range(start_step, length - offset + 1, start_stride) if start_stride > 0 else [start_step]
        pairs.extend((i, t) for t in stops)
    return pairs


def gather(ds: EpisodeDataset, pairs: list[tuple[int, int]], offset: int, frameskip: int) -> dict[str, np.ndarray]:
    """Arrays of the pairs: start/goal frames uint8 [B,H,W,3], proprio float32 [B,P],
    recorded actions float32 [B, offset/frameskip, frameskip*A]."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("start", "goal", "start_proprio", "goal_proprio", "actions")}
    cache: dict[int, Any] = {}
    for i, t in pairs:
        ep = cache.setdefault(i, ds.load_episode(i))
        out["start"].append(ep.frames[t]); out["goal"].append(ep.frames[t + offset])
        out["start_proprio"].append(ep.proprio[t]); out["goal_proprio"].append(ep.proprio[t + offset])
        a = ep.actions[t:t + offset]
        out["actions"].append(a.reshape(offset // frameskip, frameskip * a.shape[-1]))
    return {k: np.stack(v) for k, v in out.items()}


def score(wm: WorldModel, energy: Any, context: PlanContext, goal: Goal, actions: torch.Tensor) -> torch.Tensor:
    """The planner's energy of actions [B,H,A] (one model rollout) -> [B]."""
    r = wm.rollout(context.latents, context.proprio, actions)
    total, _ = energy.evaluate(r, goal, actions, {})
    return total.float()


def check_batch(wm: WorldModel, planner: Any, arrays: dict[str, np.ndarray], seeds: list[int],
                device: torch.device) -> dict[str, np.ndarray]:
    """Plan one batch of pairs and score plan / recorded / zero actions -> per-row arrays [B]."""
    tt = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(device)  # noqa: E731
    with torch.no_grad():
        z0 = wm.encode(tt(arrays["start"])[:, None])           # [B,1,N,D]
        zg = wm.encode(tt(arrays["goal"])[:, None])[:, 0]      # [B,N,D]
    use_p = wm.proprio_dim is not None
    context = PlanContext(z0, tt(arrays["start_proprio"])[:, None].float() if use_p else None)
    goal = Goal(zg, tt(arrays["goal_proprio"]).float() if use_p else None)
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    recorded = tt(arrays["actions"]).float()                   # [B,H,A]
    planner.reset()
    result = planner.plan(wm, context, goal, generator=gens, horizon=recorded.shape[1])
    low, high = wm.action_low.to(device).float(), wm.action_high.to(device).float()
    zero = torch.zeros_like(recorded).clamp(low, high)
    plan = result.actions.float()
    with torch.no_grad():
        e = {name: score(wm, planner.energy, context, goal, a) for name, a in
             (("plan", plan), ("recorded", recorded.clamp(low, high)), ("zero", zero))}
    err = lambda a, sl: (a[:, sl] - recorded[:, sl]).abs().mean((1, 2))  # noqa: E731
    rows = {f"energy_{k}": v for k, v in e.items()}
    rows.update(plan_error_first=err(plan, slice(0, 1)), plan_error_all=err(plan, slice(None)),
                zero_error_first=err(zero, slice(0, 1)), zero_error_all=err(zero, slice(None)),
                planner_energy=result.energy.float())
    return {k: v.cpu().numpy().astype(np.float64) for k, v in rows.items()}


def run_check(cfg: DictConfig) -> dict[str, Any]:
    """The whole check for the composed config -> the summary dict (also written to out_dir)."""
    offset, start_step, start_stride, batch = (cfg.offset, cfg.start_step, cfg.start_stride, cfg.batch)
    check_number(offset, "offset", WHERE, low=1, integer=True)
    check_number(start_step, "start_step", WHERE, low=0, integer=True)
    check_number(start_stride, "start_stride", WHERE, low=0, integer=True)
    check_number(batch, "batch", WHERE, low=1, integer=True)
    check_number(cfg.episodes, "episodes", WHERE, low=1, integer=True, allow_none=True)
    check_number(cfg.seed, "seed", WHERE, low=0, integer=True)
    device = start_job(cfg.threads, int(cfg.seed), cfg.device)
    model_path = resolve_model_path(str(cfg.world_model))
    wm = WorldModel.load(model_path, device=device)
    fs = int(wm.frameskip)
    if int(offset) % fs:
        raise ConfigError(f"{WHERE}: offset={offset} must be a multiple of the model's frameskip {fs} "
                          f"(the plan has offset/frameskip predictor steps)")
    ds = EpisodeDataset(cfg.data_dir)
    meta = ds.meta
    if int(meta.get("action_dim", -1)) * fs != wm.action_dim:
        raise ConfigError(f"{WHERE}: {cfg.data_dir} has action_dim={meta.get('action_dim')}, the model "
                          f"{model_path} takes {wm.action_dim // fs}-D env actions (x frameskip {fs})")
    if wm.proprio_dim is not None and int(meta.get("proprio_dim", -1)) != wm.proprio_dim:
        raise ConfigError(f"{WHERE}: {cfg.data_dir} has proprio_dim={meta.get('proprio_dim')}, the model "
                          f"{model_path} uses {wm.proprio_dim}")
    config = OmegaConf.to_container(cfg, resolve=True)
    config["planner"]["horizon"] = int(offset) // fs  # the plan spans exactly start -> goal
    planner = build_planner(config["planner"], energy=build_energy(config["energy"]))
    pairs = check_pairs(ds, cfg.episodes, int(offset), int(start_step), int(start_stride))
    print(f"[offline_plan_check] {len(pairs)} (episode, start) pairs of {cfg.data_dir}, offset {offset} env steps = "
          f"{int(offset) // fs} predictor steps, planner {planner.name}, energy {planner.energy!r}, model {model_path}")
    t0, cols = time.time(), {}
    for b0 in range(0, len(pairs), int(batch)):
        chunk = pairs[b0:b0 + int(batch)]
        arrays = gather(ds, chunk, int(offset), fs)
        part = check_batch(wm, planner, arrays, [int(cfg.seed) + b0 + j for j in range(len(chunk))], device)
        for k, v in part.items():
            cols.setdefault(k, []).append(v)
    cols = {k: np.concatenate(v) for k, v in cols.items()}
    for k, v in cols.items():
        if not np.isfinite(v).all():
            bad = [pairs[j] for j in np.flatnonzero(~np.isfinite(v))[:5]]
            raise FloatingPointError(f"{WHERE}: {k} is not finite for (episode, start) {bad}")
    rows = [{"episode": i, "start": t, "seed": int(cfg.seed) + j, **{k: float(v[j]) for k, v in cols.items()}}
            for j, (i, t) in enumerate(pairs)]
    means = {f"mean_{k}": float(v.mean()) for k, v in cols.items()}
    summary = {
        "pairs": len(pairs), "offset": int(offset), "horizon_predictor_steps": int(offset) // fs, "frameskip": fs,
        **means,
        "frac_plan_le_zero": float((cols["energy_plan"] <= cols["energy_zero"]).mean()),
        "frac_plan_le_recorded": float((cols["energy_plan"] <= cols["energy_recorded"]).mean()),
        "world_model": str(model_path), "data_dir": str(cfg.data_dir), "env_id": meta.get("env_id"),
        "seed": int(cfg.seed), "seeds": [r["seed"] for r in rows],
        **planning_run_record(planner, device, t0, config), "rows": rows,
    }
    write_json(Path(cfg.out_dir) / "summary.json", summary)
    return summary


@hydra.main(version_base="1.3", config_path="../configs", config_name="offline_plan_check")
def main(cfg: DictConfig) -> None:
    s = run_check(cfg)
    print(f"energy: plan {s['mean_energy_plan']:.4f} | recorded {s['mean_energy_recorded']:.4f} | "
          f"zero {s['mean_energy_zero']:.4f} (plan <= zero in {s['frac_plan_le_zero']:.2f} of pairs, "
          f"<= recorded in {s['frac_plan_le_recorded']:.2f})")
    print(f"action error vs recorded (mean abs): plan first step {s['mean_plan_error_first']:.4f}, whole plan "
          f"{s['mean_plan_error_all']:.4f} | zero actions {s['mean_zero_error_first']:.4f} / {s['mean_zero_error_all']:.4f}")
    print(f"[offline_plan_check] wrote {Path(cfg.out_dir) / 'summary.json'} ({s['pairs']} pairs, {s['wall_time_s']:.1f}s)")


if __name__ == "__main__":
    main()
