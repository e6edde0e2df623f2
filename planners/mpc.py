"""Model-predictive control runner: plan for E envs in one batched call, execute, replan.

Env API (the wmplan task base class, gymnasium 1.x): ``reset(seed, options) -> (obs, info)``
with ``obs = {"pixels": uint8 [H,W,3], "proprio": float32 [P]}`` and info keys
``goal_image`` uint8 [H,W,3], ``goal_proprio`` float32 [P], ``success`` bool, ``distance``
float; ``step(action float32 [A_env])`` returns the gymnasium 5-tuple with the same info.

Batching: every replan is ONE planner call over the envs still running. By default the batch
is compacted when envs finish (``compact=True``: no compute spent on finished envs; the
planner's warm-start state is compacted with ``planner.select``). Because each env draws its
noise from its own generator (seeded from its episode seed), compaction does not change the
other envs' plans. ``compact=False`` keeps the batch static (useful with ``torch.compile``,
which would otherwise recompile for each new batch size); finished envs are planned but not
stepped.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .base import Goal, PlanContext, Planner, WorldModelLike


@dataclass
class EpisodeResult:
    """One episode of MPC. ``plan_times_ms``: wall time of each batched plan call this env
    took part in (planner call + copying actions to host). ``frames``: [H, 2W, 3] uint8 views
    (current frame | goal image), one at reset and one per env step, when recorded."""

    seed: int
    success: bool
    steps: int
    final_distance: float
    plan_times_ms: list[float] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)  # after reset and after every step
    plan_energies: list[float] = field(default_factory=list)  # planner energy of each plan
    frames: list[np.ndarray] = field(default_factory=list)
    reset_options: dict | None = None


def _frameskip(world_model: WorldModelLike, env: Any) -> tuple[int, int]:
    """(frameskip, env action dim); the planner's A must be a multiple of the env's."""
    a_env = int(np.prod(env.action_space.shape))
    a_pred = int(world_model.action_dim)
    if a_pred % a_env != 0:
        raise ValueError(f"world model action dim {a_pred} is not a multiple of env action dim {a_env}")
    fs = a_pred // a_env
    declared = getattr(world_model, "frameskip", None)
    if declared is not None and int(declared) != fs:
        raise ValueError(f"world model frameskip {declared} != action dims ratio {a_pred}/{a_env}")
    return fs, a_env


def _view(pixels: np.ndarray, goal: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(pixels, dtype=np.uint8), np.asarray(goal, dtype=np.uint8)], axis=1)


def run_mpc(
    envs: Sequence[Any],
    world_model: WorldModelLike,
    planner: Planner,
    seeds: Sequence[int],
    max_steps: int,
    replan_every: int = 1,
    horizon: int | None = None,
    context_frames: int = 1,
    reset_options: Sequence[dict | None] | None = None,
    record: bool = True,
    progress: Callable[[dict], None] | None = None,
    compact: bool = True,
) -> list[EpisodeResult]:
    """Run one episode per seed, ``len(envs)`` episodes at a time, and return them in seed order.

    replan_every: env steps executed from each plan (k); must be a multiple of the frameskip
    (planner action dim / env action dim) and at most horizon * frameskip. Planner actions
    [B,H,A] are split into H*frameskip env actions of size A_env; the plan is shifted by
    k/frameskip predictor steps for warm start. Episodes end at ``info["success"]``,
    terminated/truncated, or after ``max_steps`` env steps. ``context_frames`` Tc > 1 gives
    the planner the last Tc observations spaced frameskip env steps apart (the first frame
    repeated at episode start) and the actions between them (``PlanContext.actions``
    [B,Tc-1,A], zeros before the episode has that many). ``progress`` is called with a dict after every replan
    (``event="replan"``) and when an episode ends (``event="episode"``, ``result=...``).
    """
    if not envs:
        raise ValueError("run_mpc needs at least one env")
    if reset_options is not None and len(reset_options) != len(seeds):
        raise ValueError(f"{len(reset_options)} reset_options for {len(seeds)} seeds")
    fs, a_env = _frameskip(world_model, envs[0])
    h = int(horizon) if horizon is not None else int(planner.config.horizon)
    k = int(replan_every)
    if k < 1 or k % fs != 0 or k > h * fs:
        raise ValueError(f"replan_every={k} must be a positive multiple of frameskip {fs} and <= horizon*frameskip {h * fs}")
    results: list[EpisodeResult] = []
    for start in range(0, len(seeds), len(envs)):
        wave = list(seeds[start : start + len(envs)])
        opts = list(reset_options[start : start + len(wave)]) if reset_options is not None else [None] * len(wave)
        results += _run_wave(
            envs[: len(wave)], world_model, planner, wave, opts, max_steps, k, fs, a_env, h,
            context_frames, record, progress, compact,
        )
    return results


def _run_wave(
    envs, world_model, planner, seeds, opts, max_steps, k, fs, a_env, h, tc, record, progress, compact
) -> list[EpisodeResult]:
    """One batch of episodes, env i running seed i."""
    n = len(envs)
    dev = torch.as_tensor(world_model.action_low).device
    use_proprio = getattr(world_model, "proprio_dim", None) is not None
    hist_len = (tc - 1) * fs + 1
    frames_hist: list[deque] = []
    prop_hist: list[deque] = []
    act_hist: list[deque] = [deque(maxlen=max(hist_len - 1, 1)) for _ in range(n)]
    goal_imgs, goal_props, res = [], [], []
    for env, seed, opt in zip(envs, seeds, opts):
        obs, info = env.reset(seed=int(seed), options=opt)
        frames_hist.append(deque([obs["pixels"]], maxlen=hist_len))
        prop_hist.append(deque([obs["proprio"]], maxlen=hist_len))
        goal_imgs.append(np.asarray(info["goal_image"], dtype=np.uint8))
        goal_props.append(np.asarray(info["goal_proprio"], dtype=np.float32))
        r = EpisodeResult(seed=int(seed), success=bool(info["success"]), steps=0,
                          final_distance=float(info["distance"]), reset_options=opt)
        r.distances.append(r.final_distance)
        if record:
            r.frames.append(_view(obs["pixels"], goal_imgs[-1]))
        res.append(r)

    with torch.no_grad():  # not inference_mode: the gradient planner re-enables grad inside
        goal_lat = world_model.encode(torch.from_numpy(np.stack(goal_imgs)[:, None]).to(dev))[:, -1]
    goal_prop = torch.from_numpy(np.stack(goal_props)).to(dev) if use_proprio else None
    gens = [torch.Generator(device=dev).manual_seed(int(s)) for s in seeds]
    low = [env.action_space.low.astype(np.float32).reshape(-1) for env in envs]
    high = [env.action_space.high.astype(np.float32).reshape(-1) for env in envs]

    done = [r.success for r in res]
    for i in range(n):
        if done[i] and progress is not None:
            progress({"event": "episode", "result": res[i]})
    planner.reset()
    rows = [i for i in range(n) if not done[i]] if compact else list(range(n))
    replans = 0
    while not all(done):
        idx = torch.tensor(rows, dtype=torch.long, device=dev)
        ctx_frames = np.stack([_context(frames_hist[i], tc, fs) for i in rows])  # [B,Tc,H,W,3]
        t0 = time.perf_counter()
        with torch.no_grad():
            lat = world_model.encode(torch.from_numpy(ctx_frames).to(dev))
            ctx_p = ctx_a = None
            if use_proprio:
                ctx_p = torch.from_numpy(np.stack([_context(prop_hist[i], tc, fs) for i in rows])).to(dev)
            if tc > 1:
                ctx_a = torch.from_numpy(np.stack([_context_actions(act_hist[i], tc, fs, a_env) for i in rows])).to(dev)
            goal = Goal(goal_lat.index_select(0, idx), None if goal_prop is None else goal_prop.index_select(0, idx))
        t_plan = time.perf_counter()
        result = planner.plan(world_model, PlanContext(lat, ctx_p, ctx_a), goal, generator=[gens[i] for i in rows], horizon=h)
        actions = result.actions.detach().float().cpu().numpy()  # host sync once per replan
        energy = result.energy.detach().float().cpu().numpy()
        ms = (time.perf_counter() - t_plan) * 1e3
        replans += 1
        for row, i in enumerate(rows):
            if done[i]:
                continue
            r = res[i]
            r.plan_times_ms.append(ms)
            r.plan_energies.append(float(energy[row]))
            env_actions = actions[row].reshape(h * fs, a_env)
            for j in range(k):
                a = np.clip(env_actions[j], low[i], high[i]).astype(np.float32)
                obs, _, terminated, truncated, info = envs[i].step(a.reshape(envs[i].action_space.shape))
                r.steps += 1
                act_hist[i].append(a.reshape(-1))
                frames_hist[i].append(obs["pixels"])
                prop_hist[i].append(obs["proprio"])
                r.final_distance = float(info["distance"])
                r.distances.append(r.final_distance)
                r.success = bool(info["success"])
                if record:
                    r.frames.append(_view(obs["pixels"], goal_imgs[i]))
                if r.success or terminated or truncated or r.steps >= max_steps:
                    done[i] = True
                    if progress is not None:
                        progress({"event": "episode", "result": r})
                    break
        planner.shift(k // fs)
        if compact:
            keep = [row for row, i in enumerate(rows) if not done[i]]
            if len(keep) < len(rows) and keep:
                planner.select(keep)
            rows = [rows[row] for row in keep]
        if progress is not None:
            progress({"event": "replan", "replan": replans, "active": sum(not d for d in done),
                      "plan_ms": ms, "step": max(r.steps for r in res)})
    return res


def _context_actions(hist: deque, tc: int, fs: int, a_env: int) -> np.ndarray:
    """Planner-unit actions between the ``tc`` context frames: [Tc-1, fs*A_env] float32.

    The env actions executed between consecutive picks of ``_context`` (fs each); before the
    history is long enough (episode start, where frames are padded with the first one) the
    missing actions are zeros.
    """
    need = (tc - 1) * fs
    items = list(hist)[-need:]
    pad = [np.zeros(a_env, dtype=np.float32)] * (need - len(items))
    return np.stack(pad + items).astype(np.float32).reshape(tc - 1, fs * a_env)


def _context(hist: deque, tc: int, fs: int) -> np.ndarray:
    """Last ``tc`` entries spaced ``fs`` apart (oldest first), padding with the oldest: [Tc,...]."""
    items = list(hist)
    picks = [items[max(len(items) - 1 - j * fs, 0)] for j in range(tc - 1, -1, -1)]
    return np.stack(picks)
