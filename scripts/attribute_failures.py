"""Where plans fail: the search, the world model or the energy (dataset-goal protocol).

    python scripts/collect.py env=arm_push episodes=100 episode_length=60 seed=1000 \\
        'policy_mix={expert: 1.0}' out_dir=data/heldout/arm_push      # the goal set's held-out episodes
    python scripts/attribute_failures.py task=arm_push data_dir=data/heldout/arm_push

Each row of the task's goal set is a recorded start, the goal ``offset`` env steps later, and
(from ``data_dir``, the dataset the goal set was made from) the expert's recorded actions
between them. For each row one open-loop plan spans exactly start -> goal (offset / frameskip
predictor steps), with the task's planner and energy. Then both the plan and the recorded
actions are scored twice with the same energy: through the model's rollout (``model``) and on
the frames the simulator renders when the actions are executed from the start (``sim``). The
simulator also says whether each reaches the goal (success tested after every env step).

A plan that fails in the simulator is put down to the first of these that holds:

- ``search``: the model scores the expert's actions lower than the plan; a better search
  would have found lower energy.
- ``model``: the model scores the plan at least as well as the expert's actions, but on the
  simulator's frames the plan scores worse: the planner exploited model error.
- ``energy``: on the simulator's own frames the plan scores at least as well as the expert's
  actions, yet fails: the energy (encoder + distance) does not see what success needs.

Rows whose recorded actions, replayed open loop, do not reach the goal themselves are
``unattributable``. Writes ``<out_dir>/summary.json`` (every row, the counts, seeds, config).
This script is glue between the layers: the env only through gymnasium, the model only
through its protocol.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import wmplan.config_store  # noqa: F401  (registers the structured configs the planner/energy groups use)
import wmplan.envs  # noqa: F401  (registers the wmplan/* gymnasium ids)
from wmplan.checks import ConfigError, check_number
from wmplan.io import write_json
from wmplan.planners import Goal, PlanContext, build_energy, build_planner
from wmplan.planners.base import planning_run_record
from wmplan.planners.goals import DatasetGoals, resolve_goal_set
from wmplan.protocols import Rollout
from wmplan.worldmodel.data import EpisodeDataset
from wmplan.worldmodel.pretrained_models import resolve_model_path
from wmplan.worldmodel.utils import start_job
from wmplan.worldmodel.world_model import WorldModel

WHERE = "attribute_failures"
LABELS = ("solved", "search", "model", "energy", "unattributable")


def recorded_actions(goals: DatasetGoals, ds: EpisodeDataset, state_tol: float) -> np.ndarray:
    """The expert's env actions between each goal-set row's start and goal, float32 [E, offset, A].

    The dataset must be the one the goal set was made from: its states at the row's start and
    goal steps must match the goal set's (max abs difference <= ``state_tol``), else ConfigError.
    """
    out, bad = [], []
    for r, (i, t) in enumerate(zip(goals.episode_ids, goals.start_steps)):
        ep = ds.load_episode(int(i))
        if ep.states is None or len(ep.states) <= t + goals.offset:
            raise ConfigError(f"{WHERE}: {ds.root} episode {i} has no recorded states up to step {t + goals.offset}")
        err = max(np.abs(ep.states[t] - goals.start[r]).max(), np.abs(ep.states[t + goals.offset] - goals.goal[r]).max())
        if err > state_tol:
            bad.append((r, int(i), float(err)))
        out.append(np.asarray(ep.actions[t:t + goals.offset], np.float32))
    if bad:
        raise ConfigError(f"{WHERE}: {len(bad)} goal-set rows of {goals.path} differ from {ds.root} (row, episode, max "
                          f"state error): {bad[:5]}; pass the dataset the goal set was made from "
                          f"(or make a goal set from this one with scripts/make_goal_set.py)")
    return np.stack(out)


def execute(env: gym.Env, start: np.ndarray, goal: np.ndarray, actions: np.ndarray, fs: int) -> dict[str, Any]:
    """Run env ``actions`` [T, A] open loop from the recorded start; frames [T/fs, H, W, 3] at each
    predictor step, success at any env step, the final and the smallest goal distance."""
    env.reset(seed=0, options={"state": start, "goal_state": goal})
    frames, success, dists = [], False, []
    for j, a in enumerate(actions):
        obs, _, _, _, info = env.step(np.clip(a, env.action_space.low, env.action_space.high))
        success |= bool(info["success"])
        dists.append(float(info["distance"]))
        if (j + 1) % fs == 0:
            frames.append(obs["pixels"])
    return {"frames": np.stack(frames), "success": success, "final_distance": dists[-1], "min_distance": min(dists)}


def attribute(solved: bool, expert_solved: bool, model: tuple[float, float], sim: tuple[float, float]) -> str:
    """The label of one row from (plan, expert) energies through the model and on the sim's frames."""
    if solved:
        return "solved"
    if not expert_solved:
        return "unattributable"
    if model[0] > model[1]:
        return "search"
    return "model" if sim[0] > sim[1] else "energy"


def energies(wm: WorldModel, energy: Any, context: PlanContext, goal: Goal, actions: torch.Tensor,
             sim_frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The energy of actions [B,H,A] through the model's rollout and on the sim's frames [B,H,h,w,3] -> ([B], [B])."""
    with torch.no_grad():
        e_model, _ = energy.evaluate(wm.rollout(context.latents, context.proprio, actions), goal, actions, {})
        z_sim = wm.encode(torch.from_numpy(sim_frames).to(context.latents.device))
        e_sim, _ = energy.evaluate(Rollout(z_sim), goal, actions, {})
    return e_model.float().cpu(), e_sim.float().cpu()


def run(cfg: DictConfig) -> dict[str, Any]:
    """The whole attribution for the composed config -> the summary (also written to out_dir)."""
    check_number(cfg.batch, "batch", WHERE, low=1, integer=True)
    check_number(cfg.episodes, "episodes", WHERE, low=1, integer=True, allow_none=True)
    device = start_job(cfg.threads, int(cfg.seed), cfg.device)
    model_path = resolve_model_path(str(cfg.world_model))
    wm = WorldModel.load(model_path, device=device)
    fs = int(wm.frameskip)
    goals = DatasetGoals(resolve_goal_set(str(cfg.goal_set)), env_id=str(cfg.env.id))
    if goals.offset % fs:
        raise ConfigError(f"{WHERE}: the goal set's offset {goals.offset} is not a multiple of the model's frameskip {fs}")
    ds = EpisodeDataset(cfg.data_dir)
    rec = recorded_actions(goals, ds, float(cfg.state_tol))
    n = len(rec) if cfg.episodes is None else min(int(cfg.episodes), len(rec))
    config = OmegaConf.to_container(cfg, resolve=True)
    config["planner"]["horizon"] = h = goals.offset // fs  # the plan spans exactly start -> goal
    planner = build_planner(config["planner"], energy=build_energy(config["energy"]))
    env = gym.make(cfg.env.id, disable_env_checker=True, **config["env"]["kwargs"])
    print(f"[{WHERE}] {n} rows of {goals.path} (offset {goals.offset} env steps = {h} predictor steps), "
          f"planner {planner.name}, energy {planner.energy!r}, model {model_path}")
    rows, t0 = [], time.time()
    for b0 in range(0, n, int(cfg.batch)):
        idx = list(range(b0, min(n, b0 + int(cfg.batch))))
        obs0 = [env.reset(seed=0, options={"state": goals.start[r], "goal_state": goals.goal[r]}) for r in idx]
        tt = lambda key, src: torch.from_numpy(np.stack([o[src][key] for o in obs0])).to(device)  # noqa: E731
        with torch.no_grad():  # as the MPC loop: current frame (+ proprio when the model takes it), goal image
            use_p = wm.proprio_dim is not None
            context = PlanContext(wm.encode(tt("pixels", 0)[:, None]), tt("proprio", 0)[:, None].float() if use_p else None)
            goal = Goal(wm.encode(tt("goal_image", 1)[:, None])[:, 0], tt("goal_proprio", 1).float() if use_p else None)
        planner.reset()
        gens = [torch.Generator(device=device).manual_seed(int(cfg.seed) + r) for r in idx]
        plan = planner.plan(wm, context, goal, generator=gens, horizon=h).actions.detach().float()
        expert = torch.from_numpy(rec[idx].reshape(len(idx), h, -1)).to(device)
        runs = {name: [execute(env, goals.start[r], goals.goal[r], a[j].cpu().numpy().reshape(-1, rec.shape[-1]), fs)
                       for j, r in enumerate(idx)] for name, a in (("plan", plan), ("expert", expert))}
        scores = {name: energies(wm, planner.energy, context, goal, a, np.stack([x["frames"] for x in runs[name]]))
                  for name, a in (("plan", plan), ("expert", expert))}
        for j, r in enumerate(idx):
            m = (float(scores["plan"][0][j]), float(scores["expert"][0][j]))
            s = (float(scores["plan"][1][j]), float(scores["expert"][1][j]))
            p, e = runs["plan"][j], runs["expert"][j]
            rows.append({"row": r, "episode": int(goals.episode_ids[r]), "start_step": int(goals.start_steps[r]),
                         "seed": int(cfg.seed) + r, "label": attribute(p["success"], e["success"], m, s),
                         "plan_success": p["success"], "expert_success": e["success"],
                         "model_energy_plan": m[0], "model_energy_expert": m[1],
                         "sim_energy_plan": s[0], "sim_energy_expert": s[1],
                         "plan_final_distance": p["final_distance"], "plan_min_distance": p["min_distance"],
                         "expert_final_distance": e["final_distance"]})
    env.close()
    counts = {k: sum(r["label"] == k for r in rows) for k in LABELS}
    summary = {
        "rows": len(rows), "counts": counts,
        "open_loop_success_plan": float(np.mean([r["plan_success"] for r in rows])),
        "open_loop_success_expert": float(np.mean([r["expert_success"] for r in rows])),
        "mean_model_optimism": float(np.mean([r["sim_energy_plan"] - r["model_energy_plan"] for r in rows])),
        "goal_set": str(goals.path), "goal_set_sha256": goals.sha256, "data_dir": str(cfg.data_dir),
        "world_model": str(model_path), "horizon_predictor_steps": h, "frameskip": fs, "seed": int(cfg.seed),
        **planning_run_record(planner, device, t0, config), "per_row": rows,
    }
    write_json(Path(cfg.out_dir) / "summary.json", summary)
    return summary


@hydra.main(version_base="1.3", config_path="../configs", config_name="attribute_failures")
def main(cfg: DictConfig) -> None:
    s = run(cfg)
    c = s["counts"]
    print(f"open-loop success: plan {s['open_loop_success_plan']:.2f}, expert's recorded actions "
          f"{s['open_loop_success_expert']:.2f} over {s['rows']} rows")
    print("failures put down to: " + ", ".join(f"{k} {c[k]}" for k in LABELS if k != "solved")
          + f" (solved {c['solved']}); mean model optimism (sim - model energy of the plan) {s['mean_model_optimism']:.4f}")
    print(f"[{WHERE}] wrote {Path(cfg.out_dir) / 'summary.json'} ({s['wall_time_s']:.0f}s)")


if __name__ == "__main__":
    main()
