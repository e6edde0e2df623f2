"""The evaluator: goal-image planning over many episodes, as a library call.

It owns env batching (a gymnasium vector env: ``vector="async"`` steps and renders the envs
in worker processes, so every core is used; ``"sync"`` keeps them in this process;
``"auto"``, the default, picks async on machines with at least 4 cores), the
goal source (:mod:`wmplan.planners.goals`), per-task metrics read from the envs' ``info``
and streaming sinks (:mod:`wmplan.planners.sinks`) that write each episode as it ends.
``scripts/plan.py`` is a thin entry point around :func:`evaluate`.

It lives in ``planners/`` because it needs exactly what planners need: the world-model
protocol and the gymnasium API, no model class and no task class.
"""
from __future__ import annotations

import functools
import multiprocessing
import os
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv
from tqdm import tqdm

from ..checks import ConfigError, check_choice, check_number
from ..protocols import WorldModelLike
from .base import Planner
from .goals import GoalSource, SampledGoals
from .mpc import EpisodeResult, run_mpc
from .sinks import EpisodeSink


@dataclass
class EvalConfig:
    """How an evaluation runs. Units: ``max_steps`` and ``replan_every`` are env steps;
    the planner's ``horizon`` is in predictor steps (each = the world model's frameskip env
    steps)."""

    episodes: int = 20  # episodes in total (with goals=sampled: seeds seed .. seed+episodes-1)
    num_envs: int = 20  # envs planned together in one batched planner call
    seed: int = 0
    max_steps: int = 100  # env steps per episode (a goal source may set its own per episode)
    replan_every: int | None = None  # env steps executed per plan; None: one predictor step (frameskip)
    context_frames: int = 1  # observations the planner sees, frameskip env steps apart
    compact: bool = True  # drop finished envs from the planner batch
    vector: str = "auto"  # async (a worker process per env) | sync (envs in this process) | auto (async on >= 4 cores)
    video: bool = True  # record frames for the sinks (one GIF per episode)

    def validate(self) -> None:
        """Raise ConfigError naming the first setting out of range (before any env starts)."""
        w = "evaluation"
        check_number(self.episodes, "episodes", w, low=1, integer=True)
        check_number(self.num_envs, "num_envs", w, low=1, integer=True)
        check_number(self.seed, "seed", w, low=0, integer=True)
        check_number(self.max_steps, "max_steps", w, low=1, integer=True)
        check_number(self.replan_every, "replan_every", w, low=1, integer=True, allow_none=True)
        check_number(self.context_frames, "context_frames", w, low=1, integer=True)
        check_choice(self.vector, "vector", ("auto", "async", "sync"), w)


def check_image_size(world_model: WorldModelLike, vec: VectorEnv, env_id: str) -> None:
    """The env's camera must render the frame size the world model's encoder was trained on."""
    want = getattr(world_model, "image_size", None)
    space = getattr(vec.single_observation_space, "spaces", {}).get("pixels")
    if want is None or space is None:
        return
    got = int(space.shape[0])
    if got != int(want):
        raise ConfigError(f"env {env_id} renders {got}x{got} frames but the world model's encoder expects "
                          f"{want}x{want}; set env.kwargs.image_size={want} or use a model trained at {got}")


@dataclass
class EvalResult:
    summary: dict[str, Any]
    rows: list[dict[str, Any]]


def _env_module(env_id: str) -> str:
    """The module that defines the env's class (its entry point's module)."""
    entry = gym.spec(env_id).entry_point
    return entry.split(":")[0] if isinstance(entry, str) else entry.__module__


def resolve_vector(vector: str) -> str:
    """``auto`` -> ``async`` on machines with at least 4 cores, else ``sync``.

    Each async worker holds its own renderer context (with a software renderer about 0.4 GB,
    against about 0.1 GB per env when they share one process), and on 2 cores the planner and
    the workers take turns anyway, so small machines keep the envs in-process.
    """
    if vector == "auto":
        return "async" if (os.cpu_count() or 1) >= 4 else "sync"
    if vector not in ("async", "sync"):
        raise ValueError(f"vector={vector!r}: use 'async', 'sync' or 'auto'")
    return vector


def make_vector_env(env_id: str, env_kwargs: dict[str, Any], num_envs: int, vector: str = "auto") -> VectorEnv:
    """``num_envs`` copies of ``env_id`` in a vector env with autoreset disabled."""
    vector = resolve_vector(vector)
    if num_envs < 1:
        raise ValueError(f"num_envs={num_envs}: need at least 1")
    # gym.make itself (not a function of ours) with the spec, not the id: a worker then imports
    # gymnasium and the task's module, never this package's torch-importing modules
    fns = [functools.partial(gym.make, gym.spec(env_id), disable_env_checker=True, **env_kwargs)
           for _ in range(num_envs)]
    if vector == "sync" or num_envs == 1:
        return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED)
    # forkserver, not fork: forking a process that runs threads (torch's, tqdm's) can leave a
    # worker waiting forever on a lock held by a thread that was not copied. The server
    # preloads only the env modules, so workers start fast and share those pages.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(sorted({"gymnasium", _env_module(env_id)}))
    return AsyncVectorEnv(fns, context="forkserver", autoreset_mode=AutoresetMode.DISABLED)


def episode_row(r: EpisodeResult) -> dict[str, Any]:
    """The JSON row of one episode (what ``episodes.jsonl`` holds)."""
    return {"seed": r.seed, "success": bool(r.success), "steps": int(r.steps),
            "final_distance": float(r.final_distance), "plans": len(r.plan_times_ms),
            "plan_ms": [round(t, 2) for t in r.plan_times_ms], **r.metrics}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a success rate (95% for z=1.96): sound at 0/n and n/n, where
    the normal approximation collapses to a point."""
    if n <= 0:
        raise ValueError(f"wilson_interval needs n >= 1 episodes, got {n}")
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate episode rows: success, distance, steps, planning latency, task metrics.

    Boolean task metrics (e.g. ``crosses_wall``) give the fraction of episodes where they
    hold and the success rate on those; numeric ones give their mean.
    """
    if not rows:
        raise ValueError("no episodes to summarize")
    plan_ms = np.array([t for r in rows for t in r["plan_ms"]])
    steps = np.array([r["steps"] for r in rows])
    success = np.array([r["success"] for r in rows], bool)
    out: dict[str, Any] = {
        "episodes": len(rows),
        "successes": int(success.sum()),
        "success_rate": float(success.mean()),
        "success_ci95": list(wilson_interval(int(success.sum()), len(rows))),  # Wilson score interval
        "mean_final_distance": float(np.mean([r["final_distance"] for r in rows])),
        "mean_steps": float(steps.mean()),
        "plan_ms_p50": float(np.percentile(plan_ms, 50)) if plan_ms.size else None,
        "plan_ms_p95": float(np.percentile(plan_ms, 95)) if plan_ms.size else None,
        # each episode records the wall time of every batched plan call it took part in, so this
        # is the planning latency an env sees per executed action (all batched envs served at once)
        "ms_per_action": float(plan_ms.sum() / max(steps.sum(), 1)) if plan_ms.size else None,
    }
    core = set(episode_row(EpisodeResult(0, False, 0, 0.0)))
    metrics: dict[str, Any] = {}
    for key in sorted({k for r in rows for k in r} - core):
        vals = [r[key] for r in rows if key in r]
        if all(isinstance(v, bool) for v in vals):
            on = np.array([r.get(key) is True for r in rows])
            metrics[key] = {"fraction": float(on.mean()),
                            "success_rate": float(success[on].mean()) if on.any() else None}
        else:
            metrics[key] = {"mean": float(np.mean(vals))}
    out["metrics"] = metrics
    return out


def _vm_hwm_mb(pid: int) -> float | None:
    """Peak resident memory of process ``pid`` from /proc (Linux), else None."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_rss_mb(vec: VectorEnv | None = None) -> dict[str, float | None]:
    """Peak resident memory so far: this process, and the sum over the vector env's worker
    processes (each counts the pages it shares with the others, so the sum is an upper bound)."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20  # ru_maxrss: KiB on Linux, bytes on macOS
    out: dict[str, float | None] = {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale}
    procs = getattr(vec, "processes", None)
    if procs:
        peaks = [_vm_hwm_mb(p.pid) for p in procs]
        out["env_workers"] = None if None in peaks else float(sum(peaks))
    return out


def resumable_rows(specs: Sequence[Any], n_envs: int, done_rows: Sequence[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """{seed: row} of the earlier rows that belong to complete waves of ``n_envs`` episodes."""
    by_seed = {int(r["seed"]): r for r in done_rows}
    kept: dict[int, dict[str, Any]] = {}
    for start in range(0, len(specs), n_envs):
        wave = [int(s.seed) for s in specs[start : start + n_envs]]
        if all(seed in by_seed for seed in wave):
            kept.update({seed: by_seed[seed] for seed in wave})
    return kept


def evaluate(
    world_model: WorldModelLike,
    planner: Planner,
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    config: EvalConfig | None = None,
    goals: GoalSource | None = None,
    sinks: Sequence[EpisodeSink] = (),
    show_progress: bool = True,
    done_rows: Sequence[dict[str, Any]] = (),
    trajectories: bool = False,
) -> "EvalResult":
    """Plan towards goal images on ``config.episodes`` episodes of ``env_id``.

    Each finished episode goes to every sink (its row and, with ``config.video``, its
    frames, which are then dropped). Returns the summary (see :func:`summarize`, plus the
    protocol, the batching, the wall time and the peak memory) and the rows in episode order.

    ``done_rows`` (resume): rows of an earlier run of the same config. Episodes run in waves
    of ``num_envs``; a wave whose every episode has a row is kept, any other wave is run
    again whole, so each wave sees the same batch as in an uninterrupted run and the rows
    come out the same. :func:`resumable_rows` says which rows are kept.

    ``trajectories``: the sinks also get each episode's raw frames, states and actions
    (``EpisodeResult.trajectory``), e.g. to store the planner's experience as a dataset.
    """
    cfg = config or EvalConfig()
    cfg.validate()
    goals = goals or SampledGoals()
    specs = goals.episodes(cfg.episodes, cfg.seed)
    fs = int(getattr(world_model, "frameskip", 1))
    replan_every = int(cfg.replan_every) if cfg.replan_every is not None else fs
    n_envs = max(1, min(int(cfg.num_envs), len(specs)))
    kept = resumable_rows(specs, n_envs, done_rows)
    todo = [s for s in specs if s.seed not in kept]
    bar = tqdm(total=len(specs), initial=len(kept), desc="[plan] episodes", unit="ep", mininterval=5.0,
               disable=not show_progress)

    n_ok = 0

    def on_episode(r: EpisodeResult) -> None:
        nonlocal n_ok
        row = episode_row(r)
        for sink in sinks:
            sink.write(r, row)
        r.frames, r.trajectory = [], None  # streamed out: memory stays bounded by one wave of envs
        n_ok += int(r.success)
        bar.update(1)
        bar.set_postfix(success=n_ok, refresh=False)

    for sink in sinks:
        sink.begin([kept[s.seed] for s in specs if s.seed in kept])
    t0 = time.time()
    vec = make_vector_env(env_id, env_kwargs or {}, n_envs, cfg.vector)
    try:
        check_image_size(world_model, vec, env_id)
        planner.prepare(env_id, env_kwargs or {})
        results = run_mpc(vec, world_model, planner, todo, max_steps=int(cfg.max_steps), replan_every=replan_every,
                context_frames=int(cfg.context_frames), record=bool(cfg.video), on_episode=on_episode,
                compact=bool(cfg.compact), record_trajectory=bool(trajectories))
        memory = peak_rss_mb(vec)  # before close: the workers are gone after it
    finally:
        vec.close()
        bar.close()
        for sink in sinks:
            sink.close()
    new = {r.seed: episode_row(r) for r in results}
    rows = [kept[s.seed] if s.seed in kept else new[s.seed] for s in specs]  # episode order
    summary = summarize(rows)
    summary.update({
        "goals": goals.protocol, **goals.describe(), **planner.describe(), "env_id": env_id, "seeds": [s.seed for s in specs], "batched_envs": n_envs,
        "replan_every": replan_every, "vector": resolve_vector(cfg.vector), "wall_time_s": time.time() - t0,
        "peak_rss_mb": memory, "resumed_episodes": len(kept),
    })
    return EvalResult(summary, rows)
