"""Model-predictive control runner: plan for all envs of a vector env in one batched call,
execute, replan.

Env API (the wmplan task base class, gymnasium 1.x): ``reset(seed, options) -> (obs, info)``
with ``obs = {"pixels": uint8 [H,W,3], "proprio": float32 [P]}`` and info keys
``goal_image`` uint8 [H,W,3], ``goal_proprio`` float32 [P], ``success`` bool, ``distance``
float; ``step(action float32 [A_env])`` returns the gymnasium 5-tuple with the same info.
The task's own metrics are scalar info entries that its ``metadata["info_metrics"]`` names,
each read at "reset" (PointMaze's ``crosses_wall``) or at the "final" step (PushT's
``angle_error``, recorded as ``final_angle_error``).

The envs are a gymnasium ``VectorEnv`` with autoreset disabled (``AsyncVectorEnv`` steps
and renders them in worker processes; a plain list of envs is wrapped in a
``SyncVectorEnv``). Episodes run in waves of ``num_envs``. Every replan is ONE planner call
over the envs still running: by default the batch is compacted when envs finish
(``compact=True``; the planner's warm-start state follows with ``planner.select``). Because
each env draws its noise from its own generator (seeded from its episode seed), compaction
does not change the other envs' plans. ``compact=False`` keeps the batch static (better with
``torch.compile``, which would otherwise recompile for each batch size). A vector env steps
all its envs together: envs that have finished get zero actions and their results are
ignored.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

from ..protocols import Goal, PlanContext, WorldModelLike
from .base import Planner

@dataclass
class EpisodeSpec:
    """One evaluation episode: the reset seed, reset options for the task (None: the task
    samples start and goal from the seed) and an optional step budget of its own."""

    seed: int
    options: dict[str, Any] | None = None
    max_steps: int | None = None


@dataclass
class EpisodeResult:
    """One episode of MPC. ``plan_times_ms``: wall time of each batched plan call this env
    took part in (planner call + copying actions to host). ``frames``: [H, 2W, 3] uint8 views
    (current frame | goal image), one at reset and one per env step, when recorded.
    ``metrics``: the task's scalar info entries (at reset; ``final_<key>`` at the last step).
    ``trajectory``, when recorded: the raw episode as lists, ``pixels`` uint8 [H,W,3], ``proprio``
    [P] and ``state`` [S] at reset and after every step (T+1 each), ``action`` [A_env] (T, as
    executed, clipped to the env's box), ``distance`` and ``success`` after every step (T each)."""

    seed: int
    success: bool
    steps: int
    final_distance: float
    plan_times_ms: list[float] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)  # after reset and after every step
    plan_energies: list[float] = field(default_factory=list)  # planner energy of each plan
    frames: list[np.ndarray] = field(default_factory=list)
    reset_options: dict | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    trajectory: dict[str, list] | None = None


def as_vector_env(envs: VectorEnv | Sequence[gym.Env]) -> VectorEnv:
    """A vector env as is, or a list of env instances wrapped (same instances) in a
    ``SyncVectorEnv`` with autoreset disabled."""
    if isinstance(envs, VectorEnv):
        mode = envs.metadata.get("autoreset_mode")
        if mode not in (None, AutoresetMode.DISABLED):
            raise ValueError(f"the MPC runner needs a vector env with autoreset_mode=DISABLED, got {mode}")
        return envs
    envs = list(envs)
    if not envs:
        raise ValueError("run_mpc needs at least one env")
    return SyncVectorEnv([(lambda e=e: e) for e in envs], autoreset_mode=AutoresetMode.DISABLED)


def _frameskip(world_model: WorldModelLike, action_space: gym.spaces.Box) -> tuple[int, int]:
    """(frameskip, env action dim); the planner's A must be a multiple of the env's."""
    a_env = int(np.prod(action_space.shape))
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


def _metrics(info: dict[str, Any], i: int, keys: dict[str, str], when: str) -> dict[str, Any]:
    """Env i's task metrics read ``when`` ("reset" | "final") from a vector env's info dict."""
    out = {}
    for key, at in keys.items():
        if at != when:
            continue
        if key not in info or not info.get(f"_{key}", np.ones(len(info[key]), bool))[i]:
            raise KeyError(f"env metadata['info_metrics'] names {key!r} ({at}), but the env's info has no such entry")
        out[key if when == "reset" else f"final_{key}"] = np.asarray(info[key][i]).item()
    return out


def run_mpc(
    envs: VectorEnv | Sequence[gym.Env],
    world_model: WorldModelLike,
    planner: Planner,
    episodes: Sequence[EpisodeSpec],
    max_steps: int,
    replan_every: int = 1,
    horizon: int | None = None,
    context_frames: int = 1,
    record: bool = True,
    on_episode: Callable[[EpisodeResult], None] | None = None,
    progress: Callable[[dict], None] | None = None,
    compact: bool = True,
    record_trajectory: bool = False,
) -> list[EpisodeResult]:
    """Run the episodes, ``num_envs`` at a time, and return their results in order.

    Units: ``horizon`` is in predictor steps (each = frameskip env steps); ``replan_every``
    (k) and ``max_steps`` are in env steps. k must be a multiple of the frameskip (planner
    action dim / env action dim) and at most horizon * frameskip. Planner actions [B,H,A]
    are split into H*frameskip env actions of size A_env; the plan is shifted by
    k/frameskip predictor steps for warm start. Episodes end at ``info["success"]``,
    terminated/truncated, or after their step budget. ``context_frames`` Tc > 1 gives the
    planner the last Tc observations spaced frameskip env steps apart (the first frame
    repeated at episode start) and the actions between them (``PlanContext.actions``
    [B,Tc-1,A], zeros before the episode has that many). ``on_episode`` is called with each
    result as its episode ends (stream it out there and drop ``frames`` to bound memory);
    ``progress`` with a dict after every replan (``event="replan"``). ``record_trajectory``
    keeps each episode's raw frames, proprio, states and actions (``EpisodeResult.trajectory``:
    the planner's own experience, to train on).
    """
    vec = as_vector_env(envs)
    fs, a_env = _frameskip(world_model, vec.single_action_space)
    h = int(horizon) if horizon is not None else int(planner.config.horizon)
    k = int(replan_every)
    if k < 1 or k % fs != 0 or k > h * fs:
        raise ValueError(f"replan_every={k} must be a positive multiple of frameskip {fs} and <= horizon*frameskip {h * fs}")
    n = vec.num_envs
    if 0 < len(episodes) < n or any(e.options is not None for e in episodes):
        vec.reset()  # masked resets and steps need every env to have been reset once
    results: list[EpisodeResult] = []
    for start in range(0, len(episodes), n):
        wave = list(episodes[start : start + n])
        results += _Wave(vec, world_model, planner, wave, max_steps, k, fs, a_env, h, context_frames,
                         record, on_episode, progress, compact, record_trajectory).run()
    return results


class _Wave:
    """One batch of episodes, env i running ``specs[i]``."""

    def __init__(self, vec, world_model, planner, specs, max_steps, k, fs, a_env, h, tc, record, on_episode,
                 progress, compact, record_trajectory=False):
        self.vec, self.wm, self.planner, self.specs = vec, world_model, planner, specs
        self.k, self.fs, self.a_env, self.h, self.tc = k, fs, a_env, h, tc
        self.budget = [int(s.max_steps if s.max_steps is not None else max_steps) for s in specs]
        self.record, self.on_episode, self.progress, self.compact = record, on_episode, progress, compact
        self.record_trajectory = bool(record_trajectory)
        self.dev = torch.as_tensor(world_model.action_low).device
        self.use_proprio = getattr(world_model, "proprio_dim", None) is not None
        space = vec.single_action_space
        self.metric_keys: dict[str, str] = dict(vec.metadata.get("info_metrics") or {})
        self.low = space.low.astype(np.float32).reshape(-1)
        self.high = space.high.astype(np.float32).reshape(-1)

    def _reset(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset envs 0..m-1 with their specs; returns the vector env's (obs, info)."""
        n, m = self.vec.num_envs, len(self.specs)
        seeds = [int(s.seed) for s in self.specs] + [None] * (n - m)
        if all(s.options is None for s in self.specs):
            # every env, the spare ones too: a spare env left over from the last wave may have
            # hit its time limit while idling, and stepping it un-reset is an error
            return self.vec.reset(seed=seeds)
        if m < n:
            self.vec.reset(options={"reset_mask": np.arange(n) >= m})
        # per-env options: a vector env passes one options dict to all envs, so reset one at a time
        obs_rows, info_rows = [], []
        for i, spec in enumerate(self.specs):
            mask = np.arange(n) == i
            obs, info = self.vec.reset(seed=seeds, options={**(spec.options or {}), "reset_mask": mask})
            obs_rows.append({key: v[i] for key, v in obs.items()})
            info_rows.append(info)
        obs = {key: np.stack([o[key] for o in obs_rows]) for key in obs_rows[0]}
        info = {key: np.stack([inf[key][i] for i, inf in enumerate(info_rows)])
                for key in info_rows[0] if not key.startswith("_")}
        return obs, info

    def _finish(self, i: int) -> None:
        self.done[i] = True
        if self.on_episode is not None:
            self.on_episode(self.res[i])

    def run(self) -> list[EpisodeResult]:
        m, fs, tc = len(self.specs), self.fs, self.tc
        hist_len = (tc - 1) * fs + 1
        obs, info = self._reset()
        self.frames = [deque([obs["pixels"][i]], maxlen=hist_len) for i in range(m)]
        self.props = [deque([obs["proprio"][i]], maxlen=hist_len) for i in range(m)]
        self.acts = [deque(maxlen=max(hist_len - 1, 1)) for _ in range(m)]
        self.goal_imgs = [np.asarray(info["goal_image"][i], dtype=np.uint8) for i in range(m)]
        self.res = []
        for i, spec in enumerate(self.specs):
            r = EpisodeResult(seed=int(spec.seed), success=bool(info["success"][i]), steps=0,
                              final_distance=float(info["distance"][i]), reset_options=spec.options,
                              metrics=_metrics(info, i, self.metric_keys, "reset"))
            r.distances.append(r.final_distance)
            if self.record:
                r.frames.append(_view(obs["pixels"][i], self.goal_imgs[i]))
            if self.record_trajectory:
                r.trajectory = {"pixels": [obs["pixels"][i]], "proprio": [obs["proprio"][i]], "state": [_state(info, i)],
                                "action": [], "distance": [], "success": []}
            self.res.append(r)
        with torch.no_grad():  # not inference_mode: the gradient planner re-enables grad inside
            goal_lat = self.wm.encode(torch.from_numpy(np.stack(self.goal_imgs)[:, None]).to(self.dev))[:, -1]
        goal_prop = None
        if self.use_proprio:
            goal_prop = torch.from_numpy(np.stack([info["goal_proprio"][i] for i in range(m)]).astype(np.float32)).to(self.dev)
        self.gens = [torch.Generator(device=self.dev).manual_seed(int(s.seed)) for s in self.specs]

        self.done = [False] * m
        for i, r in enumerate(self.res):
            if r.success:  # solved at reset: no step will report the final metrics
                r.metrics.update(_metrics(info, i, self.metric_keys, "final"))
                self._finish(i)
        self.planner.reset()
        rows = [i for i in range(m) if not self.done[i]] if self.compact else list(range(m))
        replans = 0
        while not all(self.done):
            ms = self._plan_and_act(rows, goal_lat, goal_prop)
            replans += 1
            self.planner.shift(self.k // fs)
            if self.compact:
                keep = [row for row, i in enumerate(rows) if not self.done[i]]
                if len(keep) < len(rows) and keep:
                    self.planner.select(keep)
                rows = [rows[row] for row in keep]
            if self.progress is not None:
                self.progress({"event": "replan", "replan": replans, "active": sum(not d for d in self.done),
                               "plan_ms": ms, "step": max(r.steps for r in self.res)})
        return self.res

    def _plan_and_act(self, rows: list[int], goal_lat, goal_prop) -> float:
        """One batched plan for envs ``rows``, then up to k env steps; returns the plan's ms."""
        fs, tc, dev = self.fs, self.tc, self.dev
        idx = torch.tensor(rows, dtype=torch.long, device=dev)
        ctx_frames = np.stack([_context(self.frames[i], tc, fs) for i in rows])  # [B,Tc,H,W,3]
        with torch.no_grad():
            lat = self.wm.encode(torch.from_numpy(ctx_frames).to(dev))
            ctx_p = ctx_a = None
            if self.use_proprio:
                ctx_p = torch.from_numpy(np.stack([_context(self.props[i], tc, fs) for i in rows])).to(dev)
            if tc > 1:
                ctx_a = torch.from_numpy(np.stack([_context_actions(self.acts[i], tc, fs, self.a_env) for i in rows])).to(dev)
            goal = Goal(goal_lat.index_select(0, idx), None if goal_prop is None else goal_prop.index_select(0, idx))
        t_plan = time.perf_counter()
        result = self.planner.plan(self.wm, PlanContext(lat, ctx_p, ctx_a), goal,
                                   generator=[self.gens[i] for i in rows], horizon=self.h)
        actions = result.actions.detach().float().cpu().numpy()  # host sync once per replan
        energy = result.energy.detach().float().cpu().numpy()
        ms = (time.perf_counter() - t_plan) * 1e3
        active = [(row, i) for row, i in enumerate(rows) if not self.done[i]]
        for row, i in active:
            self.res[i].plan_times_ms.append(ms)
            self.res[i].plan_energies.append(float(energy[row]))
        env_actions = actions.reshape(len(rows), self.h * fs, self.a_env)
        shape = self.vec.single_action_space.shape
        for j in range(self.k):
            active = [(row, i) for row, i in active if not self.done[i]]
            if not active:
                break
            batch = np.zeros((self.vec.num_envs, self.a_env), np.float32)  # finished envs idle on zeros
            for row, i in active:
                batch[i] = np.clip(env_actions[row, j], self.low, self.high)
            obs, _, terminated, truncated, info = self.vec.step(batch.reshape(self.vec.num_envs, *shape))
            for row, i in active:
                self._record_step(i, batch[i], obs, info, bool(terminated[i] or truncated[i]))
        return ms

    def _record_step(self, i: int, action: np.ndarray, obs, info, ended: bool) -> None:
        r = self.res[i]
        r.steps += 1
        self.acts[i].append(action.copy())
        self.frames[i].append(obs["pixels"][i])
        self.props[i].append(obs["proprio"][i])
        r.final_distance = float(info["distance"][i])
        r.distances.append(r.final_distance)
        r.success = bool(info["success"][i])
        if self.record:
            r.frames.append(_view(obs["pixels"][i], self.goal_imgs[i]))
        if r.trajectory is not None:
            for key, v in (("pixels", obs["pixels"][i]), ("proprio", obs["proprio"][i]), ("state", _state(info, i)),
                           ("action", action.copy()), ("distance", r.final_distance), ("success", r.success)):
                r.trajectory[key].append(v)
        if r.success or ended or r.steps >= self.budget[i]:
            r.metrics.update(_metrics(info, i, self.metric_keys, "final"))
            self._finish(i)


def _state(info: dict[str, Any], i: int) -> np.ndarray:
    """Env i's full physics state from a vector info dict; [0] for an env that reports none."""
    return np.asarray(info["state"][i], np.float64) if "state" in info else np.zeros(0)


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
