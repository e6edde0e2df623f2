"""Per-task figures: scripted-expert success and per-frame costs (render, physics + control).

    python scripts/task_figures.py                      # every registered task, 50 episodes each
    python scripts/task_figures.py tasks=[wmplan/PushT-v0] episodes=10

For each task the noise-free expert runs ``episodes`` seeded episodes (seeds
``seed .. seed+episodes-1``, the task's registered episode length); an episode
counts as solved when ``info["success"]`` holds at any step. Render cost is the
median (over chunks) time of one ``image_size`` camera frame; step cost is
``env.step`` minus that render (physics, controller, proprio, info). Prints a markdown table and writes ``out`` (JSON).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import gymnasium as gym
import hydra
import numpy as np
from omegaconf import DictConfig

from wmplan import envs
def expert_success(env_id: str, episodes: int, seed: int, image_size: int) -> dict[str, float]:
    """Success of the noise-free expert over seeded episodes of the registered length."""
    env = gym.make(env_id, disable_env_checker=True, image_size=image_size)
    u = env.unwrapped
    steps = envs.TASKS[env_id][1]
    solved, final, first = [], [], []
    for s in range(seed, seed + episodes):
        env.reset(seed=s)
        hit = None
        for t in range(steps):
            _, _, _, _, info = u.step(u.expert_action())
            if info["success"] and hit is None:
                hit = t + 1
        solved.append(hit is not None)
        final.append(bool(info["success"]))
        if hit is not None:
            first.append(hit)
    env.close()
    return {
        "success_any": float(np.mean(solved)),
        "success_final": float(np.mean(final)),
        "steps_to_success_mean": float(np.mean(first)) if first else float("nan"),
        "episode_steps": steps,
    }


def frame_costs(env_id: str, frames: int, image_size: int, chunk: int = 25) -> dict[str, float]:
    """ms per rendered frame and per env step excluding the render.

    Times chunks of ``chunk`` calls, alternating steps and renders, and takes the median
    chunk (robust to other processes' bursts on a shared machine).
    """
    env = gym.make(env_id, disable_env_checker=True, image_size=image_size)
    u = env.unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    low, high = env.action_space.low, env.action_space.high
    for _ in range(10):  # warm-up (renderer context, caches)
        u.step(rng.uniform(low, high).astype(np.float32))
    step_t, render_t = [], []
    for _ in range(max(frames // chunk, 1)):
        acts = rng.uniform(low, high, (chunk, len(low))).astype(np.float32)
        t0 = time.perf_counter()
        for a in acts:
            u.step(a)
        step_t.append((time.perf_counter() - t0) / chunk * 1e3)
        t0 = time.perf_counter()
        for _ in range(chunk):
            u._render_pixels()
        render_t.append((time.perf_counter() - t0) / chunk * 1e3)
    env.close()
    step_ms, render_ms = float(np.median(step_t)), float(np.median(render_t))
    return {
        "render_ms": render_ms,
        "step_ms": step_ms,
        "step_wo_render_ms": max(step_ms - render_ms, 0.0),
        "render_ms_best": float(np.min(render_t)),  # least-contended chunk
        "step_ms_best": float(np.min(step_t)),
    }


def gallery(tasks: list[str], path: str, seed: int, scale: int = 2) -> None:
    """One column per task: first observation (top) over goal image (bottom), seed ``seed``."""
    import imageio.v2 as imageio

    cols = []
    for env_id in tasks:
        env = gym.make(env_id, disable_env_checker=True)
        obs, info = env.reset(seed=seed)
        px = obs["pixels"]
        cols.append(np.concatenate([px, np.full_like(px[:2], 255), info["goal_image"]], 0))
        env.close()
    sep = np.full_like(cols[0][:, :2], 255)
    grid = np.concatenate([x for c in cols for x in (c, sep)][:-1], 1)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(path, grid.repeat(scale, 0).repeat(scale, 1))
    print(f"[task_figures] wrote {path} (columns: {', '.join(tasks)}; start above goal)")


@hydra.main(version_base="1.3", config_path="../configs", config_name="task_figures")
def main(cfg: DictConfig) -> None:
    tasks = list(cfg.tasks) if cfg.tasks else sorted(envs.TASKS)
    rows = {}
    for env_id in tasks:
        r = {**frame_costs(env_id, cfg.frames, cfg.image_size)}
        if cfg.episodes > 0:
            r.update(expert_success(env_id, cfg.episodes, cfg.seed, cfg.image_size))
        rows[env_id] = r
        print(f"[task_figures] {env_id}: {r}", flush=True)
    print(f"\n| task | expert success ({cfg.episodes} eps, any step) | at last step | mean steps to success "
          f"| render ms/frame ({cfg.image_size}px), median (best) | step ms w/o render |")
    print("|---|---|---|---|---|---|")
    for env_id, r in rows.items():
        print(f"| {env_id} | {r.get('success_any', float('nan')):.2f} | {r.get('success_final', float('nan')):.2f} | "
              f"{r.get('steps_to_success_mean', float('nan')):.1f} / {r.get('episode_steps', '-')} | "
              f"{r['render_ms']:.2f} ({r['render_ms_best']:.2f}) | {r['step_wo_render_ms']:.2f} |")
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text(json.dumps(rows, indent=2))
    if cfg.gallery:
        gallery(tasks, cfg.gallery, cfg.seed)


if __name__ == "__main__":
    main()
