"""The library evaluator: streaming sinks, bounded frames, task metrics from info, summaries."""
from __future__ import annotations

import json

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest

import wmplan.envs  # noqa: F401
from tests.test_mpc import PointEnv, _planner, point_world_model
from wmplan.planners import EvalConfig, EpisodeSink, JsonlSink, SampledGoals, VideoSink, build_goal_source, evaluate
from wmplan.planners.evaluator import summarize, wilson_interval

if "wmplan_test/Point-v0" not in gym.registry:
    gym.register("wmplan_test/Point-v0", entry_point=PointEnv, max_episode_steps=40)


class Spy(EpisodeSink):
    """Records what each episode looked like when it reached the sink."""

    def __init__(self, jsonl):
        self.jsonl, self.seen, self.results = jsonl, [], []

    def write(self, result, row):
        lines = self.jsonl.read_text().count("\n") if self.jsonl.exists() else 0
        self.seen.append((row["seed"], len(result.frames), result.steps, lines))
        self.results.append(result)


def test_streams_each_episode_and_drops_its_frames(tmp_path):
    jsonl = tmp_path / "episodes.jsonl"
    spy = Spy(jsonl)
    cfg = EvalConfig(episodes=5, num_envs=2, max_steps=30, replan_every=2, vector="sync")
    res = evaluate(point_world_model(), _planner(), "wmplan_test/Point-v0", {}, cfg, SampledGoals(),
                   [JsonlSink(jsonl), spy, VideoSink(tmp_path / "videos", scale=2)])
    assert [r["seed"] for r in res.rows] == [0, 1, 2, 3, 4]
    # each episode reached the sinks with its frames, the JSONL already one line longer per episode
    assert sorted(s[0] for s in spy.seen) == [0, 1, 2, 3, 4]
    assert all(n_frames == steps + 1 for _, n_frames, steps, _ in spy.seen)
    assert [s[3] for s in spy.seen] == [1, 2, 3, 4, 5]
    assert all(r.frames == [] for r in spy.results)  # dropped once streamed out
    lines = [json.loads(l) for l in jsonl.read_text().splitlines()]
    assert sorted(l["seed"] for l in lines) == [0, 1, 2, 3, 4]
    gif = imageio.mimread(tmp_path / "videos" / "ep_0000.gif")
    assert gif[0].shape[:2] == (48, 96)
    s = res.summary
    assert s["episodes"] == 5 and s["protocol"] == "sampled" and s["batched_envs"] == 2
    assert s["successes"] == sum(r["success"] for r in res.rows) and s["seeds"] == [0, 1, 2, 3, 4]


def test_task_metrics_from_info_async(tmp_path):
    """PointMaze declares crosses_wall (read at reset) in its metadata; the evaluator records
    it from info in async worker processes, and it matches a fresh env's reset info."""
    from wmplan.worldmodel.pretrained_models import resolve_model_path
    from wmplan.worldmodel.world_model import WorldModel

    wm = WorldModel.load(resolve_model_path("pretrained:pointmaze"), device="cpu")
    from wmplan.planners import build_planner

    planner = build_planner({"name": "cem", "samples": 8, "elites": 2, "iterations": 1, "horizon": 2})
    cfg = EvalConfig(episodes=3, num_envs=3, max_steps=5, seed=7, video=False, vector="async")
    res = evaluate(wm, planner, "wmplan/PointMaze-v0", {"image_size": 64, "cross_wall_prob": 0.5}, cfg)
    env = gym.make("wmplan/PointMaze-v0", cross_wall_prob=0.5)
    expect = [bool(env.reset(seed=s)[1]["crosses_wall"]) for s in (7, 8, 9)]
    assert [r["crosses_wall"] for r in res.rows] == expect
    assert res.summary["metrics"]["crosses_wall"]["fraction"] == pytest.approx(np.mean(expect))
    assert all(r["steps"] <= 5 for r in res.rows)


def test_summarize_metrics():
    rows = [{"seed": i, "success": ok, "steps": 10, "final_distance": d, "plans": 2, "plan_ms": [1.0, 3.0],
             "crosses_wall": cw, "final_angle_error": a}
            for i, (ok, d, cw, a) in enumerate([(True, 0.1, True, 0.5), (False, 0.3, True, 1.5), (True, 0.2, False, 1.0)])]
    s = summarize(rows)
    assert s["successes"] == 2 and s["success_rate"] == pytest.approx(2 / 3)
    assert s["metrics"]["crosses_wall"] == {"fraction": pytest.approx(2 / 3), "success_rate": 0.5}
    assert s["metrics"]["final_angle_error"] == {"mean": pytest.approx(1.0)}
    assert s["plan_ms_p50"] == 2.0 and s["ms_per_action"] == pytest.approx(12 / 30)
    with pytest.raises(ValueError):
        summarize([])


def test_wilson_interval():
    """The interval brackets the rate, stays inside [0, 1] at 0/n and n/n (where the normal
    approximation collapses) and matches the textbook value for 22/50."""
    lo, hi = wilson_interval(22, 50)
    assert lo == pytest.approx(0.3116, abs=1e-3) and hi == pytest.approx(0.5770, abs=1e-3)
    lo0, hi0 = wilson_interval(0, 50)
    assert lo0 == 0.0 and 0.05 < hi0 < 0.08
    lo1, hi1 = wilson_interval(50, 50)
    assert hi1 == 1.0 and 0.92 < lo1 < 0.95
    assert wilson_interval(5, 10)[1] - wilson_interval(5, 10)[0] > wilson_interval(50, 100)[1] - wilson_interval(50, 100)[0]
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0, 0)


def test_goal_sources():
    assert [e.seed for e in build_goal_source("sampled").episodes(3, 5)] == [5, 6, 7]
    with pytest.raises(ValueError, match="episodes=0"):
        SampledGoals().episodes(0, 0)
    with pytest.raises(ValueError, match="unknown goal source"):
        build_goal_source("nope")


def test_vector_mode():
    import os

    from wmplan.planners.evaluator import resolve_vector

    assert resolve_vector("auto") == ("async" if (os.cpu_count() or 1) >= 4 else "sync")
    assert resolve_vector("sync") == "sync"
    with pytest.raises(ValueError, match="vector='threads'"):
        resolve_vector("threads")
