"""Planners on analytic problems: linear latent dynamics with known optimal actions."""
import os
from pathlib import Path

import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from wmplan.planners import PLANNERS, Goal, PlanContext, Planner, build_energy, build_planner, shift_actions
from wmplan.planners.analytic import LinearLatentWorldModel
from wmplan.checks import ConfigError
from wmplan.planners.base import BestSoFar
from wmplan.planners.constraints import project_actions, project_l1_ball
from wmplan.planners.noise import colour_noise

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _wm(low=(-1.0, -1.0), high=(1.0, 1.0)):
    """z_{t+1} = z_t + a_t in 2-D."""
    return LinearLatentWorldModel(torch.eye(2), torch.eye(2), torch.tensor(low), torch.tensor(high))


Z0 = torch.tensor([[0.0, 0.0], [0.2, -0.3], [0.5, 0.5]])
G = torch.tensor([[0.4, -0.2], [0.0, 0.0], [0.1, 0.9]])


def _problem(b=3):
    return PlanContext(Z0[:b, None, None]), Goal(G[:b, None])


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


# Per-planner settings that solve the analytic problems quickly (small budgets keep CI light).
PLANNER_CFGS = {
    "cem": {"name": "cem", "samples": 128, "elites": 16, "iterations": 20, "min_std": 0.02},
    "icem": {"name": "cem", "samples": 128, "elites": 16, "iterations": 20, "min_std": 0.02,
             "keep_elites": 0.3, "noise_beta": 0.5},
    "mppi": {"name": "mppi", "samples": 128, "iterations": 20, "temperature": 0.05, "noise_std": 0.3,
             "noise_decay": 0.85},
    "gradient": {"name": "gradient", "samples": 4, "iterations": 60, "lr": 0.1},
    "collocation": {"name": "gradient", "samples": 4, "iterations": 150, "lr": 0.1, "latent_lr": 0.1,
                    "collocation": True},
    # random shooting cannot refine: it gets a 2-D problem (horizon 1) and many samples
    "random_shooting": {"name": "random_shooting", "samples": 4096, "horizon": 1},
}
EXTRA_ENERGY = {"collocation": {"jepa_residual": {"weight": 10.0, "metric": "l2"}}}


def _planner(key, horizon=4, energy=None, **over):
    cfg = {"horizon": horizon, **PLANNER_CFGS[key], **over}
    energy = dict(energy or {"goal": {"metric": "l2", "steps": "all"}}, **EXTRA_ENERGY.get(key, {}))
    return build_planner(cfg, energy=energy)


@pytest.mark.parametrize("key", list(PLANNER_CFGS))
def test_reaches_known_optimum(key):
    """Sum over steps of ||z_t - g||^2 with A = I: optimum moves to g in one step, then stays
    (a_0 = g - z0, a_t = 0), which is inside the bounds for this problem."""
    ctx, goal = _problem()
    p = _planner(key)
    h = p.config.horizon
    res = p.plan(_wm(), ctx, goal, generator=_gens([1, 2, 3]))
    a_opt = torch.zeros(3, h, 2)
    a_opt[:, 0] = G - Z0
    assert res.actions.shape == (3, h, 2)
    assert (res.actions - a_opt).abs().max().item() < 0.1
    assert res.energy.max().item() < 2e-3
    # the reported energy is the energy of the returned actions
    roll = _wm().rollout(ctx.latents, None, res.actions)
    e = (roll.latents - goal.latents[:, None]).pow(2).mean(dim=(2, 3)).mean(1)
    torch.testing.assert_close(e, res.energy, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("key", list(PLANNER_CFGS))
def test_reaches_goal_last_step(key):
    """Goal at the last step only: many minimisers, all with zero energy."""
    ctx, goal = _problem()
    res = _planner(key, horizon=3, energy={"goal": {"metric": "l2", "steps": "last"}}).plan(
        _wm(), ctx, goal, generator=_gens([4, 5, 6])
    )
    z_last = _wm().rollout(ctx.latents, None, res.actions).latents[:, -1, 0]
    assert (z_last - G).abs().max().item() < 0.05


@pytest.mark.parametrize("key", list(PLANNER_CFGS))
def test_same_seed_same_plan(key):
    ctx, goal = _problem()
    a = _planner(key).plan(_wm(), ctx, goal, generator=_gens([7, 8, 9]))
    b = _planner(key).plan(_wm(), ctx, goal, generator=_gens([7, 8, 9]))
    c = _planner(key).plan(_wm(), ctx, goal, generator=torch.Generator().manual_seed(3))
    d = _planner(key).plan(_wm(), ctx, goal, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.actions, b.actions) and torch.equal(a.energy, b.energy)
    assert torch.equal(c.actions, d.actions)


@pytest.mark.parametrize("key", list(PLANNER_CFGS))
def test_actions_within_bounds(key):
    """An unreachable goal pushes actions against asymmetric bounds; they must stay inside."""
    low, high = (-0.3, -1.0), (0.2, 0.7)
    wm = _wm(low, high)
    ctx = PlanContext(torch.zeros(2, 1, 1, 2))
    goal = Goal(torch.tensor([[[5.0, -5.0]], [[-5.0, 5.0]]]))
    res = _planner(key).plan(wm, ctx, goal, generator=_gens([1, 2]))
    lo, hi = torch.tensor(low), torch.tensor(high)
    assert bool((res.actions >= lo).all()) and bool((res.actions <= hi).all())
    # and it saturates in the right direction (random shooting only samples, it cannot saturate)
    if key != "random_shooting":
        # (first steps: the last step moves only the last latent, so MPPI's averaging may lag there)
        assert res.actions[0, :2, 0].min().item() > 0.15 and res.actions[1, :2, 1].min().item() > 0.6


@pytest.mark.parametrize("key", list(PLANNER_CFGS))
def test_batched_equals_one_by_one(key):
    ctx, goal = _problem()
    p = _planner(key)
    batched = p.plan(_wm(), ctx, goal, generator=_gens([11, 12, 13]))
    for i, s in enumerate([11, 12, 13]):
        p.reset()
        one = p.plan(_wm(), PlanContext(ctx.latents[i : i + 1]), Goal(goal.latents[i : i + 1]), generator=_gens([s]))
        torch.testing.assert_close(one.actions[0], batched.actions[i], atol=1e-6, rtol=0)
        torch.testing.assert_close(one.energy[0], batched.energy[i], atol=1e-6, rtol=0)


@pytest.mark.parametrize("key", list(PLANNER_CFGS))
def test_single_rollout_call_per_iteration(key):
    """All B envs x S samples go through the world model as one batch per iteration."""
    wm = _wm()
    ctx, goal = _problem()
    p = _planner(key)
    p.plan(wm, ctx, goal, generator=_gens([1, 2, 3]))
    assert wm.rollout_calls <= getattr(p.config, "iterations", 0) + 1


def test_warm_start_shift_and_select():
    ctx, goal = _problem()
    p = _planner("icem")
    first = p.plan(_wm(), ctx, goal, generator=_gens([1, 2, 3]))
    p.shift(1)
    torch.testing.assert_close(p._warm["mean"][:, :-1], first.actions[:, 1:])
    assert p._warm["elites"].shape[:2] == (3, 5)
    p.select([0, 2])
    assert p._warm["mean"].shape[0] == 2
    second = p.plan(_wm(), PlanContext(ctx.latents[[0, 2]]), Goal(goal.latents[[0, 2]]), generator=_gens([4, 5]))
    # the shifted warm plan is a candidate, so the energy cannot get worse than re-evaluating it
    assert second.energy.shape == (2,)
    p.reset()
    assert p._warm == {}


def test_init_overrides_warm_start():
    ctx, goal = _problem(1)
    p = _planner("cem", iterations=1, samples=2, elites=1)
    init = torch.full((1, 4, 2), 0.25)
    res = p.plan(_wm(), ctx, goal, init=init, generator=_gens([0]))
    assert res.actions.shape == (1, 4, 2)


def test_shift_actions():
    x = torch.arange(6.0).reshape(1, 3, 2)
    assert shift_actions(x, 1).tolist() == [[[2, 3], [4, 5], [4, 5]]]
    assert shift_actions(x, 2, "zero").tolist() == [[[4, 5], [0, 0], [0, 0]]]
    assert torch.equal(shift_actions(x, 0), x)


def test_l1_projection():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(200, 5, generator=g) * 2
    p = project_l1_ball(v, 1.0)
    norms = p.abs().sum(-1)
    inside = v.abs().sum(-1) <= 1.0
    assert torch.allclose(p[inside], v[inside])
    assert torch.allclose(norms[~inside], torch.ones_like(norms[~inside]), atol=1e-5)
    # optimality: no random point of the ball is closer than the projection
    cand = project_l1_ball(torch.randn(200, 64, 5, generator=g), 1.0)
    d_proj = (p - v).norm(dim=-1)
    d_cand = (cand - v[:, None]).norm(dim=-1).min(1).values
    assert bool((d_proj <= d_cand + 1e-5).all())
    # grouped l1 + box
    low, high = -torch.ones(4), torch.ones(4)
    a = project_actions(torch.tensor([[0.9, 0.9, -2.0, 0.0]]), low, high, "l1", 1.0, 2)
    assert a[0, :2].abs().sum().item() == pytest.approx(1.0)
    assert a[0, 2:].abs().sum().item() <= 1.0 + 1e-6 and bool((a.abs() <= 1).all())


def test_l1_constraint_in_planner():
    ctx = PlanContext(torch.zeros(1, 1, 1, 2))
    goal = Goal(torch.tensor([[[5.0, 5.0]]]))
    p = _planner("cem", constraint="l1", l1_radius=0.8)
    res = p.plan(_wm(), ctx, goal, generator=_gens([0]))
    assert bool((res.actions.abs().sum(-1) <= 0.8 + 1e-5).all())
    assert res.actions.abs().sum(-1).min().item() > 0.7


def _load_configs(group: str) -> dict:
    """configs/<group>/*.yaml by stem: plain, or composed with Hydra when they place a
    structured schema (``defaults: [/schema/...]``, registered by ``wmplan.config_store``)."""
    paths = sorted((CONFIGS / group).glob("*.yaml"))
    raw = {p.stem: OmegaConf.load(p) for p in paths}
    if not any("defaults" in c for c in raw.values()):
        return raw
    from hydra import compose, initialize_config_dir  # only this layout needs Hydra + the schemas

    import wmplan.config_store  # noqa: F401

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return {stem: compose(config_name=f"{group}/{stem}")[group] for stem in raw}


def test_build_from_yaml_configs():
    energies = _load_configs("energy")
    for name, e in energies.items():
        if OmegaConf.missing_keys(e):  # needs a file from the command line (object_l2_all: the projection)
            with pytest.raises(MissingMandatoryValue, match="projection"):
                build_energy(e)
            continue
        build_energy(e)
    for path, cfg in _load_configs("planner").items():
        if cfg.get("name") == "subgoal":  # its bank is the task config's waypoint_bank
            cfg.bank = "bundled:point_maze"
        if cfg.get("name") == "policy":  # its goal policy comes from plan.py prior=<file>
            with pytest.raises(ConfigError, match="needs an action prior"):
                build_planner(cfg, energy=energies["goal_l1"])
            continue
        if cfg.get("collocation"):
            if cfg.get("energy") is not None:
                build_planner(cfg)  # its own default energy (goal + jepa_residual)
            with pytest.raises(ValueError, match="jepa_residual"):
                build_planner(cfg, energy=energies["goal_l1"])
            p = build_planner(cfg, energy=energies["collocation"])
        else:
            p = build_planner(cfg, energy=energies["goal_l1"])
        assert p.config.horizon > 0, path
    with pytest.raises(ValueError, match="unknown option"):
        build_planner({"name": "cem", "sampels": 3})
    with pytest.raises(ValueError, match="unknown planner"):
        build_planner({"name": "nope"})


def test_amp_flag_is_ignored_off_cuda():
    ctx, goal = _problem()
    a = _planner("cem").plan(_wm(), ctx, goal, generator=_gens([1, 2, 3]))
    b = _planner("cem", amp=True).plan(_wm(), ctx, goal, generator=_gens([1, 2, 3]))
    assert torch.equal(a.actions, b.actions)


class _Detached(LinearLatentWorldModel):
    def rollout(self, *args, **kwargs):
        r = super().rollout(*args, **kwargs)
        r.latents = r.latents.detach()
        return r


def test_gradient_needs_differentiable_rollout():
    ctx, goal = _problem(1)
    wm = _Detached(torch.eye(2), torch.eye(2), -torch.ones(2), torch.ones(2))
    with pytest.raises(RuntimeError, match="differentiable"):
        _planner("gradient").plan(wm, ctx, goal)


def test_collocation_without_predict_next_uses_one_step_rollouts():
    """Fallback path: batched one-step rollouts as the teacher-forced predictor (same optimum)."""

    class NoTF(LinearLatentWorldModel):
        predict_next = property(lambda self: (_ for _ in ()).throw(AttributeError))

    wm = NoTF(torch.eye(2), torch.eye(2), -torch.ones(2), torch.ones(2))
    assert not hasattr(wm, "predict_next")
    ctx, goal = _problem()
    res = _planner("collocation").plan(wm, ctx, goal, generator=_gens([1, 2, 3]))
    assert res.energy.max().item() < 2e-3


@pytest.mark.skipif(not os.environ.get("WMPLAN_SLOW_TESTS"), reason="torch.compile takes ~1 min on CPU")
@pytest.mark.parametrize("name", ["cem", "mppi"])
def test_compiled_step_matches_eager(name):
    ctx, goal = _problem()
    cfg = {"name": name, "samples": 32, "iterations": 3, "horizon": 3}
    if name == "cem":
        cfg["elites"] = 4
    eager = build_planner(cfg).plan(_wm(), ctx, goal, generator=_gens([1, 2, 3]))
    comp = build_planner(dict(cfg, compile=True)).plan(_wm(), ctx, goal, generator=_gens([1, 2, 3]))
    torch.testing.assert_close(eager.actions, comp.actions, atol=1e-5, rtol=1e-5)


def test_colour_noise():
    white = torch.randn(4000, 16, 3, generator=torch.Generator().manual_seed(0))
    red = colour_noise(white, 2.0, dim=-2)
    assert red.shape == white.shape and torch.equal(colour_noise(white, 0.0), white)
    assert abs(red.var().item() - 1.0) < 0.05  # exact normalisation keeps unit variance
    lag1 = lambda x: (x[:, 1:] * x[:, :-1]).mean().item() / x.var().item()  # noqa: E731
    assert abs(lag1(white)) < 0.05 and lag1(red) > 0.5  # smooth along time


def test_random_shooting_chunks_match_one_shot():
    ctx, goal = _problem()
    a = _planner("random_shooting", samples=64).plan(_wm(), ctx, goal, generator=_gens([1, 2, 3]))
    b = _planner("random_shooting", samples=64, chunk=24).plan(_wm(), ctx, goal, generator=_gens([1, 2, 3]))
    assert torch.equal(a.actions, b.actions)
    torch.testing.assert_close(a.energy, b.energy)


def test_best_so_far_keeps_the_lowest_energy_per_row():
    best = BestSoFar(torch.zeros(2, 3, 1))
    assert torch.isinf(best.energy).all() and best.terms == {}
    better = best.update(torch.ones(2, 3, 1), torch.tensor([1.0, 2.0]), {"goal": torch.tensor([0.5, 0.6])})
    assert better.tolist() == [True, True]
    better = best.update(torch.full((2, 3, 1), 2.0), torch.tensor([0.5, 3.0]), {"goal": torch.tensor([0.1, 0.2])})
    assert better.tolist() == [True, False]
    assert best.actions[:, 0, 0].tolist() == [2.0, 1.0] and best.energy.tolist() == [0.5, 2.0]
    assert best.terms["goal"].tolist() == [pytest.approx(0.1), pytest.approx(0.6)]


def test_planner_without_optimise_says_so():
    class Bare(Planner):
        pass

    ctx, goal = _problem(1)
    with pytest.raises(NotImplementedError, match="_optimise"):
        Bare().plan(_wm(), ctx, goal)


def test_registries_are_full_after_importing_only_the_registry():
    """A fresh interpreter that imports only ``registry`` can build every planner: importing it
    runs the package __init__, which imports all planner and energy modules (no lazy imports)."""
    code = ("from wmplan.planners.registry import ENERGIES, PLANNERS, build_planner\n"
            "assert {'cem', 'mppi', 'gradient', 'random_shooting'} <= set(PLANNERS), PLANNERS\n"
            "assert {'goal', 'jepa_residual', 'action_smoothness'} <= set(ENERGIES), ENERGIES\n"
            "build_planner({'name': 'mppi', 'samples': 4}, energy={'action_smoothness': {}})\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert set(PLANNERS) >= {"cem", "mppi", "gradient", "random_shooting"}
