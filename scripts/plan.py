"""Goal-image planning in simulation: encode frame and goal, plan, act, replan.

    python scripts/plan.py                         # bundled PointMaze model, 20 episodes
    python scripts/plan.py task=reacher episodes=50
    python scripts/plan.py task=arm_reach planner=mppi energy=goal_l1
    python scripts/plan.py -m planner=cem,icem,mppi episodes=20   # sweep + comparison table

A ``task`` (configs/task/) composes the env, the energy, the bundled world model, the step
budget and the planner horizon; command-line overrides win. Writes to the run folder
(``out_dir``; in a sweep, one folder per setting): ``summary.json`` (results, seeds and the
exact config that ran), ``episodes.jsonl`` (one line per episode, written as each ends),
``videos/ep_<seed>.gif`` (current view | goal image) and Hydra's ``.hydra/``.
"""
from __future__ import annotations

import dataclasses
import json
import platform
from pathlib import Path

import gymnasium as gym
import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import wmplan.config_store  # noqa: F401  (registers the structured configs)
import wmplan.envs  # noqa: F401  (registers the wmplan/* gymnasium ids)
from wmplan.cli import expand_gym_env
from wmplan.experience import ExperienceSink, env_meta
from wmplan.io import write_json
from wmplan.planners import build_energy, build_planner
from wmplan.planners.evaluator import EvalConfig, evaluate
from wmplan.planners.goals import build_goal_source, resolve_goal_set
from wmplan.planners.sinks import JsonlSink, VideoSink
from wmplan.worldmodel.ensemble import ENSEMBLE_PREFIX, EnsembleWorldModel
from wmplan.worldmodel.fingerprint import file_sha256
from wmplan.worldmodel.goal_policy import GoalPolicy
from wmplan.worldmodel.pretrained_models import resolve_model_path, resolve_policy_path
from wmplan.worldmodel.utils import start_job
from wmplan.worldmodel.vjepa2 import load_official_world_model, official_action_box
from wmplan.worldmodel.world_model import WorldModel

VJEPA2 = "vjepa2:"  # world_model=vjepa2:<path>: an official V-JEPA 2-AC file (vjepa2-ac-vitg.pt or its layout)
VJEPA2_OPTIONS = {"encoder_num_heads": None, "predictor_num_heads": None, "img_size": None, "maxnorm": 0.075,
                  "pose_update": "auto", "use_cache": True}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def earlier_rows(out: Path, run_key: dict, resume: bool) -> list[dict]:
    """Rows of an earlier run of the same config in ``out`` (resume), else none.

    The run key is the composed config minus ``out_dir``; a folder holding a run of another
    config is an error naming the settings that differ. A torn last line (a kill mid-write)
    is dropped.
    """
    key_path, rows_path = out / "run_key.json", out / "episodes.jsonl"
    if not (resume and key_path.is_file() and rows_path.is_file()):
        return []
    old, new = _flat(json.loads(key_path.read_text())), _flat(run_key)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        raise ValueError(f"{out} holds a run of another config (differs in {changed}); "
                         f"use another out_dir, or resume=false to start this one afresh")
    rows = []
    for line in rows_path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # torn by a kill: this and anything after it are rerun
    return rows


def goal_source(cfg: DictConfig):
    """The goal source of ``cfg.goals``; the dataset protocol reads ``cfg.goal_set``."""
    if cfg.goals != "dataset":
        return build_goal_source(cfg.goals)
    if not cfg.goal_set:
        raise ValueError("goals=dataset needs goal_set=<file | bundled:<task>> (the task configs set it)")
    return build_goal_source("dataset", path=resolve_goal_set(cfg.goal_set), budget=cfg.goal_budget, env_id=cfg.env.id)


def load_world_model(cfg: DictConfig, device: torch.device) -> tuple[torch.nn.Module, Path]:
    """``world_model=<path>|pretrained:<name>`` (a wmplan file), ``ensemble:<a>+<b>+...`` (wmplan files
    sharing one encoder: ``worldmodel/ensemble.py``) or ``vjepa2:<path>`` (an official file).

    Official files take options as ``+vjepa2.<name>=<value>`` (``VJEPA2_OPTIONS``): head counts
    for non-released widths, ``img_size`` (default: the env's ``image_size``, so frames are
    encoded at the resolution the env renders; the released models were trained at 256),
    ``maxnorm`` (search box of 7-D actions), ``pose_update``, ``use_cache``. Non-7-D models
    search the env's action box; their dims must match the env's action and proprio dims.
    """
    spec = str(cfg.world_model)
    if spec.startswith(ENSEMBLE_PREFIX):  # ensemble:<a>+<b>+...: independently trained members, one latent space
        paths = [resolve_model_path(p.strip()) for p in spec[len(ENSEMBLE_PREFIX):].split("+") if p.strip()]
        return EnsembleWorldModel([WorldModel.load(p, device=device) for p in paths], [str(p) for p in paths]), \
            Path("+".join(str(p) for p in paths))
    if not spec.startswith(VJEPA2):
        path = resolve_model_path(spec)
        return WorldModel.load(path, device=device), path
    path = resolve_model_path(spec[len(VJEPA2):])
    opts = dict(cfg.get("vjepa2") or {})
    if unknown := sorted(set(opts) - set(VJEPA2_OPTIONS)):
        raise ValueError(f"vjepa2 options {unknown} unknown; valid: {sorted(VJEPA2_OPTIONS)}")
    opts = {**VJEPA2_OPTIONS, **opts}
    env_kwargs = OmegaConf.to_container(cfg.env.kwargs, resolve=True) if "kwargs" in cfg.env else {}
    wm = load_official_world_model(path, encoder_num_heads=opts["encoder_num_heads"],
                                   predictor_num_heads=opts["predictor_num_heads"],
                                   img_size=opts["img_size"] or env_kwargs.get("image_size") or 256, device=device)
    wm.set_pose_update(str(opts["pose_update"]))
    wm.use_cache = bool(opts["use_cache"])
    env = gym.make(cfg.env.id, **env_kwargs)
    space, proprio = env.action_space, env.observation_space["proprio"].shape
    env.close()
    if space.shape != (wm.action_dim,) or proprio != (wm.proprio_dim,):
        raise ValueError(f"world_model={spec}: the file's predictor takes {wm.action_dim}-D actions and {wm.proprio_dim}-D "
                         f"states, env {cfg.env.id} has {space.shape[0]}-D actions and proprio of shape {proprio}")
    low, high = official_action_box(float(opts["maxnorm"])) if wm.action_dim == 7 else (space.low, space.high)
    wm.set_action_bounds(low, high)
    return wm, path


def load_prior(spec: str, world_model, device: torch.device) -> tuple[GoalPolicy, Path]:
    """``prior=<file>|pretrained:<task>``: a goal policy trained on this world model's latents
    (scripts/train_policy.py; the bundled ones were trained on the bundled models')."""
    path = resolve_policy_path(spec)
    policy = GoalPolicy.load(path, device=device)
    policy.check_fits(world_model, f"prior={spec}")
    return policy, path


def print_rows(rows: list[dict]) -> None:
    extra = sorted({k for r in rows for k in r} - {"seed", "success", "steps", "final_distance", "plans", "plan_ms"})
    print("\n" + " ".join([f"{'seed':>5}", f"{'success':>8}", f"{'steps':>6}", f"{'final_dist':>10}"]
                          + [f"{k:>14}" for k in extra]))
    for r in rows:
        cells = [f"{r['seed']:>5}", f"{str(r['success']):>8}", f"{r['steps']:>6}", f"{r['final_distance']:>10.3f}"]
        cells += [f"{r[k]:>14.3f}" if isinstance(r.get(k), float) else f"{str(r.get(k)):>14}" for k in extra]
        print(" ".join(cells))


def task_label(task: str | None, env_choice: str | None) -> str | None:
    """The task the run measured: ``task`` when its config's env is the env that ran, else None
    (``env=push_t`` without ``task=`` keeps the default task's other settings, not its name)."""
    if task is None:
        return None
    defaults = OmegaConf.load(Path(__file__).resolve().parent.parent / "configs" / "task" / f"{task}.yaml").get("defaults", [])
    task_env = next((v for d in defaults if isinstance(d, DictConfig) for k, v in d.items() if k.endswith("/env")), None)
    return task if task_env in (None, env_choice) else None


@hydra.main(version_base="1.3", config_path="../configs", config_name="plan")
def main(cfg: DictConfig) -> None:
    # A launcher that runs the job in another process (hydra/launcher=submitit_local or slurm)
    # pickles this function by value, so the module-level imports above never run there.
    wmplan.envs.register_all()
    device = start_job(cfg.threads, cfg.seed, cfg.device)
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    wm, model_path = load_world_model(cfg, device)
    if wm.meta.get("env_id") not in (None, cfg.env.id):
        raise ValueError(f"world_model {model_path}: trained on {wm.meta['env_id']!r}, but env.id={cfg.env.id!r}")
    config = OmegaConf.to_container(cfg, resolve=True)
    prior, prior_path = load_prior(cfg.prior, wm, device) if cfg.prior else (None, None)
    planner = build_planner(config["planner"], energy=build_energy(config["energy"]), prior=prior)
    eval_cfg = EvalConfig(**{f.name: config[f.name] for f in dataclasses.fields(EvalConfig)})
    eval_cfg.validate()  # before anything is written to the run folder
    goals = goal_source(cfg)
    task = task_label(hc.runtime.choices.get("task"), hc.runtime.choices.get("env"))
    print(f"[plan] task {task} ({cfg.env.id}): {cfg.episodes} episodes, up to {cfg.num_envs} envs per batched plan, "
          f"world model {model_path} ({wm.num_params() / 1e6:.2f}M predictor params, frameskip {wm.frameskip}), "
          f"planner {planner.name} (horizon {cfg.planner.horizon} predictor steps"
          f"{f', starting from the goal policy {cfg.prior}' if prior is not None else ''}), energy {planner.energy!r}, "
          f"device {device}")

    run_key = {k: v for k, v in config.items() if k != "out_dir"}
    done = earlier_rows(out, run_key, bool(cfg.resume))
    if done:
        print(f"[plan] resuming in {out}: {len(done)} episodes on disk (waves that finished are kept)")
    write_json(out / "run_key.json", run_key)
    sinks = [JsonlSink(out / "episodes.jsonl")]
    if cfg.video:
        sinks.append(VideoSink(out / "videos", scale=int(cfg.video_scale)))
    if cfg.record_dataset:  # the planner's own experience, to train on (wmplan/experience.py)
        sinks.append(ExperienceSink(cfg.record_dataset, {
            **env_meta(cfg.env.id, config["env"]["kwargs"]), "seed": int(cfg.seed),
            "recorded_by": {"world_model": str(model_path), "planner": config["planner"], "energy": config["energy"],
                            **goals.describe(), "run": str(out)}}, first_seed=int(cfg.seed)))
    result = evaluate(wm, planner, cfg.env.id, config["env"]["kwargs"], eval_cfg, goals, sinks,
                      done_rows=done, trajectories=bool(cfg.record_dataset))
    s = result.summary
    summary = {
        "task": task,
        **s,
        "world_model": str(model_path),
        **({"prior": str(prior_path), "prior_sha256": file_sha256(prior_path)} if prior is not None else {}),
        "seed": int(cfg.seed),
        "device": str(device),
        "planner_built": repr(planner.config),  # what ran, as built from the config below
        "energy_built": repr(planner.energy),
        "overrides": list(hc.overrides.task),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "config": config,  # the composed config exactly as it ran (also in .hydra/config.yaml)
    }
    write_json(out / "summary.json", summary)

    print_rows(result.rows)
    metrics = " ".join(f"| {k} {v}" for k, v in s["metrics"].items())
    lo, hi = s["success_ci95"]
    print(f"\nsuccess_rate {s['success_rate']:.3f} over {s['episodes']} episodes ({s['successes']} successes;"
          f" Wilson 95% {lo:.2f}-{hi:.2f})"
          f" | mean_final_distance {s['mean_final_distance']:.3f} {metrics}"
          f" | plan p50 {s['plan_ms_p50'] or 0:.0f} ms per call for up to {s['batched_envs']} envs"
          f" | {s['ms_per_action'] or 0:.1f} ms planning per executed action | wall {s['wall_time_s']:.0f}s"
          f" | peak RSS {s['peak_rss_mb']['self']:.0f} MB")
    print(f"[plan] wrote {out / 'summary.json'}")


if __name__ == "__main__":
    expand_gym_env(__file__)  # env=gym:<id> (wmplan/cli.py)
    main()
