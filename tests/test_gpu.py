"""GPU lane (issue 11, item 7): ``pytest -m gpu`` (scripts/gpu_check.sh runs it on a lent GPU).
Every test here needs CUDA and skips without it; the CPU suite never depends on them.

- SDPA (the CUDA branch of ``attend_cached``) against the CPU bmm + softmax kernel;
- bf16 autocast rollouts (``planner.amp``) against fp32 energies, within tolerance;
- ``memory_budget_mb`` honoured on the device: ``torch.cuda.max_memory_allocated`` of one plan
  call stays under the budget, and chunked plans equal unchunked ones.
"""
from __future__ import annotations

import pytest
import torch

from test_world_model import tiny_world_model  # the module pytest imported (tests. would run it twice)
from wmplan.planners import Goal, PlanContext, build_planner
from wmplan.worldmodel.kv_cache import attend_cached
from wmplan.worldmodel.predictor import ACPredictor, ACPredictorConfig

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (GPU lane: pytest -m gpu)")]
DEV = torch.device("cuda")


def test_sdpa_matches_the_cpu_kernel():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(6, 2, 5, 16, generator=g) for _ in range(3))
    mask = torch.zeros(5)
    mask[4:] = float("-inf")
    ref = attend_cached(q, k, v, mask, None)
    got = attend_cached(q.to(DEV), k.to(DEV), v.to(DEV), mask.to(DEV), None).cpu()
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def _problem(b: int, n: int = 4, d: int = 24):
    g = torch.Generator().manual_seed(0)
    return (PlanContext(torch.randn(b, 1, n, d, generator=g).to(DEV), torch.randn(b, 1, 3, generator=g).to(DEV)),
            Goal(torch.randn(b, n, d, generator=g).to(DEV)))


def test_bf16_energies_match_fp32():
    wm = tiny_world_model().to(DEV).eval()
    ctx, goal = _problem(4)
    cfg = {"name": "random_shooting", "samples": 256, "horizon": 3}
    fp32 = build_planner(cfg).plan(wm, ctx, goal, generator=torch.Generator(DEV).manual_seed(0))
    bf16 = build_planner({**cfg, "amp": True}).plan(wm, ctx, goal, generator=torch.Generator(DEV).manual_seed(0))
    torch.testing.assert_close(bf16.energy, fp32.energy, atol=0.05, rtol=0.05)


def test_memory_budget_is_honoured_on_the_device():
    torch.manual_seed(0)
    n, d = 64, 128
    pred = ACPredictor(ACPredictorConfig(latent_dim=d, tokens_per_frame=n, grid=(8, 8), action_dim=4,
                                         embed_dim=256, depth=4, num_heads=4)).to(DEV).eval().requires_grad_(False)

    class Model:  # the planner protocol over the bare predictor
        action_dim, action_low, action_high = 4, -torch.ones(4, device=DEV), torch.ones(4, device=DEV)
        rollout_bytes_per_row = staticmethod(pred.rollout_bytes_per_row)
        rollout_bytes_fixed = staticmethod(pred.rollout_bytes_fixed)

        def encode(self, frames):
            raise NotImplementedError

        def rollout(self, ctx, ctx_proprio, actions):
            return pred.rollout(ctx, ctx_proprio, actions)

    g = torch.Generator().manual_seed(0)
    ctx = PlanContext(torch.randn(8, 1, n, d, generator=g).to(DEV))
    goal = Goal(torch.randn(8, n, d, generator=g).to(DEV))
    cfg = {"name": "cem", "samples": 300, "elites": 30, "iterations": 2, "horizon": 5}
    budget_mb = 256.0
    results = {}
    for budget in (None, budget_mb):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        results[budget] = build_planner({**cfg, "memory_budget_mb": budget}).plan(
            Model(), ctx, goal, generator=torch.Generator(DEV).manual_seed(1))
        torch.cuda.synchronize()
        results[f"peak{budget}"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    assert results[f"peak{budget_mb}"] < budget_mb < results["peakNone"], results
    torch.testing.assert_close(results[budget_mb].actions, results[None].actions, atol=1e-5, rtol=0)
