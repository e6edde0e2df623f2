"""Rollouts bounded by a memory budget (issue 11, item 6): ``PlannerConfig.memory_budget_mb``
chunks the B*S candidate rows of ``Planner._evaluate``; plans equal the unchunked ones, every
rollout call respects the rows the budget allows, goals are not copied per sample, and the
option is range-checked."""
from __future__ import annotations

import pytest
import torch

from test_world_model import tiny_world_model  # the module pytest imported (tests. would run it twice)
from wmplan.checks import ConfigError
from wmplan.planners import Goal, PlanContext, build_planner
from wmplan.planners.analytic import LinearLatentWorldModel
from wmplan.planners.base import row_bytes
from wmplan.protocols import GoalRows

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class CountingModel:
    """Wraps a world model; records the rows [M] of every rollout call (and forwards the rest)."""

    def __init__(self, inner):
        self.inner, self.rows = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def rollout(self, ctx, ctx_proprio, actions, **kw):
        self.rows.append(int(actions.shape[0]))
        return self.inner.rollout(ctx, ctx_proprio, actions, **kw)


def _problem(wm, b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n, d = 4, 24
    lat = torch.randn(b, 1, n, d, generator=g)
    prop = torch.randn(b, 1, 3, generator=g) if wm.proprio_dim else None
    return PlanContext(lat, prop), Goal(torch.randn(b, n, d, generator=g))


PLANNERS = {
    "cem": {"name": "cem", "samples": 48, "elites": 6, "iterations": 2},
    "icem": {"name": "cem", "samples": 48, "elites": 6, "iterations": 2, "keep_elites": 0.3, "noise_beta": 0.5},
    "mppi": {"name": "mppi", "samples": 48, "iterations": 2},
    "random_shooting": {"name": "random_shooting", "samples": 48},
}


@pytest.mark.parametrize("key", sorted(PLANNERS))
def test_chunked_plans_equal_unchunked_and_calls_respect_the_budget(key):
    wm = tiny_world_model(proprio=True, ensemble=2).eval()
    b, h = 3, 3
    ctx, goal = _problem(wm, b)
    per_row, fixed = row_bytes(wm, ctx, h), wm.rollout_bytes_fixed(h)
    # 20 rows (less than one env's 48 samples: chunks inside an env) and 100 (whole envs)
    for rows_allowed in (20, 100):
        budget = (fixed + rows_allowed * per_row) / 2**20
        ref_wm, wm_c = CountingModel(wm), CountingModel(wm)
        ref = build_planner({**PLANNERS[key], "horizon": h}, energy={"goal": {"metric": "l1"}})
        chk = build_planner({**PLANNERS[key], "horizon": h, "memory_budget_mb": budget}, energy={"goal": {"metric": "l1"}})
        r0 = ref.plan(ref_wm, ctx, goal, generator=torch.Generator().manual_seed(1))
        r1 = chk.plan(wm_c, ctx, goal, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(r1.actions, r0.actions, atol=1e-6, rtol=0)
        torch.testing.assert_close(r1.energy, r0.energy, atol=1e-6, rtol=0)
        assert max(wm_c.rows) <= rows_allowed < max(ref_wm.rows), (wm_c.rows, ref_wm.rows)
        assert max(wm_c.rows) >= rows_allowed // 2  # the budget is used, not just one row per call
        assert sum(wm_c.rows) == sum(ref_wm.rows)  # same rows scored, only split


def test_without_an_estimator_the_fallback_bounds_rows():
    wm = LinearLatentWorldModel(torch.eye(2), torch.eye(2), torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0]))
    ctx, goal = PlanContext(torch.zeros(2, 1, 1, 2)), Goal(torch.ones(2, 1, 2))
    per_row = row_bytes(wm, ctx, 4)
    assert per_row == 4 * (4 * 4 * 2 + 2)  # 2 outputs of the model + 2 of the energy + the goal row
    counting = CountingModel(wm)
    p = build_planner({"name": "cem", "samples": 64, "elites": 8, "iterations": 1, "horizon": 4,
                       "memory_budget_mb": 10 * per_row / 2**20})
    p.plan(counting, ctx, goal)
    assert max(counting.rows) <= 10


def test_estimator_grows_with_horizon_and_rows_scale_inversely():
    wm = tiny_world_model()
    b1, b4 = wm.rollout_bytes_per_row(1), wm.rollout_bytes_per_row(4)
    assert 0 < b1 < b4 and wm.rollout_bytes_fixed(4) > 0
    pc = wm.predictor.config
    assert b4 >= 4 * pc.depth * 2 * 4 * wm.predictor.group * pc.embed_dim  # at least the fp32 KV caches


def test_goal_rows_are_lazy_and_slice_without_copies():
    g = Goal(torch.randn(3, 4, 5), torch.randn(3, 2))
    rows = g.broadcast(7)
    assert isinstance(rows, GoalRows)
    part = rows.rows(8, 13)  # inside env 1: a stride-0 view of env 1's goal
    assert part.latents.stride(0) == 0 and part.latents.data_ptr() == g.latents[1].data_ptr()
    assert rows._full is None  # nothing materialised by slicing
    full = g.latents.repeat_interleave(7, 0)
    assert torch.equal(rows.rows(3, 21).latents, full[3:21]) and torch.equal(rows.latents, full)
    assert torch.equal(rows.proprio, g.proprio.repeat_interleave(7, 0))
    one = Goal(torch.randn(1, 4, 5)).broadcast(6)
    assert one.latents.shape == (6, 4, 5) and one.latents.stride(0) == 0


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "x"])
def test_budget_is_range_checked(bad):
    with pytest.raises(ConfigError, match="memory_budget_mb"):
        build_planner({"name": "cem", "memory_budget_mb": bad})


@pytest.mark.parametrize("collocation", [False, True])
def test_gradient_planner_backprops_in_budgeted_chunks(collocation):
    """The gradient planner's backward passes are chunked by the budget too, with the world
    model's gradient estimates (autograd keeps the graph): the same plan, and no call above the
    rows the budget allows it."""
    wm = tiny_world_model(proprio=True, ensemble=2).eval()
    b, h = 3, 3
    ctx, goal = _problem(wm, b)
    grad_row, grad_fixed = row_bytes(wm, ctx, h, grad=True), wm.gradient_bytes_fixed(h)
    assert grad_row > row_bytes(wm, ctx, h) and grad_fixed > wm.rollout_bytes_fixed(h)
    budget = (grad_fixed + 5 * grad_row) / 2**20  # 5 rows per backward pass, 8 restarts per env
    no_grad_rows = int((budget * 2**20 - wm.rollout_bytes_fixed(h)) // row_bytes(wm, ctx, h))
    cfg = {"name": "gradient", "samples": 8, "iterations": 3, "horizon": h, "collocation": collocation}
    energy = {"goal": {"metric": "l1"}, **({"jepa_residual": {"weight": 10.0, "metric": "l2"}} if collocation else {})}

    class GradCounting(CountingModel):
        def __init__(self, inner):
            super().__init__(inner)
            self.grad_rows = []

        def rollout(self, ctx, ctx_proprio, actions, **kw):
            if torch.is_grad_enabled() and actions.requires_grad:
                self.grad_rows.append(int(actions.shape[0]))
            return super().rollout(ctx, ctx_proprio, actions, **kw)

        def predict_next(self, latents, proprio, actions):
            self.grad_rows.append(int(actions.shape[0]))
            return self.inner.predict_next(latents, proprio, actions)

    ref_wm, wm_c = GradCounting(wm), GradCounting(wm)
    r0 = build_planner(cfg, energy=energy).plan(ref_wm, ctx, goal, generator=torch.Generator().manual_seed(1))
    r1 = build_planner({**cfg, "memory_budget_mb": budget}, energy=energy).plan(
        wm_c, ctx, goal, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(r1.actions, r0.actions, atol=1e-5, rtol=0)
    torch.testing.assert_close(r1.energy, r0.energy, atol=1e-5, rtol=0)
    assert max(ref_wm.grad_rows) == b * 8 and 3 <= max(wm_c.grad_rows) <= 5, (ref_wm.grad_rows, wm_c.grad_rows)
    assert 5 < max(wm_c.rows) <= no_grad_rows  # the no-grad calls keep their larger share
    assert sum(wm_c.grad_rows) == sum(ref_wm.grad_rows)  # same rows, only split
