"""Planners, energies, the evaluator and the envs refuse what they cannot work with (issue 9):
each error names the field and the value; nothing non-finite reaches a plan or ``env.step``."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import wmplan.envs  # noqa: F401  (registers the wmplan/* ids)
from tests.test_mpc import PointEnv, point_world_model
from wmplan.checks import ConfigError, NonFiniteError
from wmplan.planners import EvalConfig, Goal, PlanContext, SampledGoals, build_energy, build_planner, evaluate
from wmplan.planners.analytic import LinearLatentWorldModel
from wmplan.protocols import Rollout

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

if "wmplan_test/Point-v0" not in gym.registry:
    gym.register("wmplan_test/Point-v0", entry_point=PointEnv, max_episode_steps=40)

SMALL = {
    "cem": {"name": "cem", "samples": 16, "elites": 4, "iterations": 2, "horizon": 3},
    "mppi": {"name": "mppi", "samples": 16, "iterations": 2, "horizon": 3},
    "gradient": {"name": "gradient", "samples": 2, "iterations": 3, "horizon": 3},
    "random_shooting": {"name": "random_shooting", "samples": 16, "horizon": 3},
}


def _wm(low=(-1.0, -1.0), high=(1.0, 1.0)):
    return LinearLatentWorldModel(torch.eye(2), torch.eye(2), torch.tensor(low), torch.tensor(high))


def _ctx_goal(b=2):
    return PlanContext(torch.zeros(b, 1, 1, 2)), Goal(torch.full((b, 1, 2), 0.5))


# ------------------------------------------------------------------ settings, named when built
@pytest.mark.parametrize("name,field,value", [
    ("cem", "init_std", float("nan")), ("cem", "init_std", -1.0), ("cem", "momentum", 2.0),
    ("cem", "noise_beta", float("nan")), ("cem", "keep_elites", -0.5), ("cem", "iterations", 0),
    ("cem", "elites", 17), ("cem", "horizon", 0), ("cem", "min_std", float("inf")),
    ("mppi", "temperature", 0.0), ("mppi", "smoothing", 2), ("mppi", "noise_std", float("nan")),
    ("gradient", "lr", float("nan")), ("gradient", "beta2", 1.0), ("gradient", "iterations", 0),
    ("random_shooting", "distribution", "sobol"), ("random_shooting", "samples", 1),
])
def test_bad_planner_setting_is_named(name, field, value):
    with pytest.raises(ConfigError) as e:
        build_planner({**SMALL[name], field: value})
    msg = str(e.value)
    assert f"'{field}'" in msg and repr(value) in msg and "planner" in msg


@pytest.mark.parametrize("spec,field", [
    ({"goal": {"weight": float("inf")}}, "weight"),
    ({"goal": {"weight": -1.0}}, "weight"),
    ({"goal": {"proprio_weight": float("nan")}}, "proprio_weight"),
    ({"goal": {"steps": "all", "step_weights": [1.0, float("nan"), 1.0]}}, "step_weights"),
    ({"goal": {}, "action_smoothness": {"weight": 0.1, "p": 0.0}}, "p"),
])
def test_bad_energy_setting_is_named(spec, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        build_energy(spec)


# ------------------------------------------------------------------ plan inputs
@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("what", ["goal_nan", "context_inf", "proprio_nan", "init_nan"])
def test_non_finite_inputs_are_refused(name, what):
    ctx, goal = _ctx_goal()
    init = None
    if what == "goal_nan":
        goal.latents[1, 0, 0] = float("nan")
    elif what == "context_inf":
        ctx.latents[0, 0, 0, 1] = float("inf")
    elif what == "proprio_nan":
        ctx = PlanContext(ctx.latents, torch.tensor([[[0.0, float("nan")]], [[0.0, 0.0]]]))
    else:
        init = torch.zeros(2, 3, 2)
        init[0, 2, 1] = float("nan")
    field = {"goal_nan": "goal.latents", "context_inf": "context.latents", "proprio_nan": "context.proprio",
             "init_nan": "init"}[what]
    with pytest.raises(NonFiniteError, match=f"field '{field}'"):
        build_planner(SMALL[name]).plan(_wm(), ctx, goal, init=init)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_bad_bounds_are_refused(name):
    ctx, goal = _ctx_goal()
    with pytest.raises(ConfigError, match=r"low > high on dim\(s\) \[1\]"):
        build_planner(SMALL[name]).plan(_wm(low=(-1.0, 1.0), high=(1.0, -1.0)), ctx, goal)
    with pytest.raises(NonFiniteError, match="bounds hold NaN"):
        build_planner(SMALL[name]).plan(_wm(low=(-1.0, float("nan"))), ctx, goal)


def test_unbounded_dims_still_plan():
    ctx, goal = _ctx_goal()
    r = build_planner(SMALL["cem"]).plan(_wm(low=(-1.0, -float("inf")), high=(1.0, float("inf"))), ctx, goal)
    assert torch.isfinite(r.actions).all()


def test_shape_mismatches_and_empty_batch_are_refused():
    p = build_planner(SMALL["cem"])
    ctx = PlanContext(torch.zeros(2, 1, 4, 2))  # N=4 tokens per frame
    with pytest.raises(ValueError, match=r"'goal.latents' has shape \[2, 1, 2\], expected \[2, 4, 2\]"):
        p.plan(_wm(), ctx, Goal(torch.zeros(2, 1, 2)))  # 1 goal token instead of 4: no silent broadcast
    with pytest.raises(ValueError, match="a batch of 0 envs"):
        p.plan(_wm(), PlanContext(torch.zeros(0, 1, 1, 2)), Goal(torch.zeros(0, 1, 2)))
    with pytest.raises(ValueError, match=r"'init' has shape \[2, 5, 2\], expected \[2, 3, 2\]"):
        p.plan(_wm(), *_ctx_goal(), init=torch.zeros(2, 5, 2), horizon=3)


class NaNModel(LinearLatentWorldModel):
    """A broken model: its rollout predicts NaN latents (what a NaN weight does)."""

    def rollout(self, ctx_latents, ctx_proprio, actions, **kw):
        r = super().rollout(ctx_latents, ctx_proprio, actions, **kw)
        return Rollout(r.latents * float("nan"), r.proprio, r.disagreement)  # still differentiable


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_model_that_returns_nan_gives_no_plan(name):
    wm = NaNModel(torch.eye(2), torch.eye(2), -torch.ones(2), torch.ones(2))
    with pytest.raises(NonFiniteError, match="non-finite energy"):
        build_planner(SMALL[name]).plan(wm, *_ctx_goal())


# ------------------------------------------------------------------ env actions
@pytest.mark.parametrize("env_id", ["wmplan/PointMaze-v0", "wmplan/Reacher-v0", "wmplan/PushT-v0",
                                    "wmplan/ArmReach-v0", "wmplan/ArmPush-v0", "wmplan/ArmPickPlace-v0"])
def test_envs_reject_non_finite_actions(env_id):
    env = gym.make(env_id, image_size=16, disable_env_checker=True)
    env.reset(seed=0)
    state = env.unwrapped.get_state()
    a = np.zeros(env.action_space.shape, np.float32)
    a[-1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite value\(s\) at index \[%d\]" % (a.size - 1)):
        env.step(a)
    np.testing.assert_array_equal(env.unwrapped.get_state(), state)  # nothing was applied
    with pytest.raises(ValueError, match="non-finite"):
        env.unwrapped.set_state(np.full_like(state, np.inf))
    env.close()


# ------------------------------------------------------------------ evaluation settings
@pytest.mark.parametrize("field,value", [("episodes", 0), ("context_frames", 0), ("max_steps", 0),
                                         ("num_envs", 0), ("replan_every", 0), ("vector", "threads")])
def test_bad_evaluation_setting_is_named_before_any_env_starts(field, value, monkeypatch):
    from wmplan.planners import evaluator

    def no_env(*a, **k):
        raise AssertionError("an env was started")

    monkeypatch.setattr(evaluator, "make_vector_env", no_env)
    cfg = EvalConfig(**{"episodes": 2, "num_envs": 2, "vector": "sync", field: value})
    with pytest.raises(ConfigError, match=f"'{field}'.*{value!r}"):
        evaluate(point_world_model(), build_planner(SMALL["cem"]), "wmplan_test/Point-v0", {}, cfg, SampledGoals())


def test_model_env_image_size_mismatch_is_named():
    wm = point_world_model()
    wm.image_size = 32  # PointEnv renders 24x24
    cfg = EvalConfig(episodes=1, num_envs=1, max_steps=4, vector="sync", video=False)
    with pytest.raises(ConfigError, match=r"renders 24x24 .* expects 32x32; set env.kwargs.image_size=32"):
        evaluate(wm, build_planner(SMALL["cem"]), "wmplan_test/Point-v0", {}, cfg, SampledGoals())


def test_plan_script_exits_non_zero_naming_the_setting(tmp_path):
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "scripts/plan.py", "planner.keep_elites=-0.5", f"out_dir={tmp_path}/run"],
                       cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "'keep_elites' must be >= 0, got -0.5" in p.stdout + p.stderr
    assert not (tmp_path / "run" / "episodes.jsonl").exists()  # refused before any work
