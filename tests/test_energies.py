"""Energy terms on hand-computed examples."""
import math

import pytest
import torch

from wmplan.planners import (
    ActionMagnitude,
    ActionSmoothness,
    CompositeEnergy,
    EnsembleDisagreement,
    Goal,
    GoalEnergy,
    JEPAResidual,
    Rollout,
    build_energy,
)


def _roll():
    # M=1, H=2, N=1, D=2: step 0 = (1, 2), step 1 = (3, -1); goal = (1, 1)
    lat = torch.tensor([[[[1.0, 2.0]], [[3.0, -1.0]]]])
    return Rollout(lat), Goal(torch.tensor([[[1.0, 1.0]]]))


def test_l1_l2_last_and_all():
    r, g = _roll()
    a = torch.zeros(1, 2, 1)
    # per-step L1 means: step0 (0+1)/2 = 0.5, step1 (2+2)/2 = 2
    assert GoalEnergy("l1", "last")(r, g, a, {}).item() == pytest.approx(2.0)
    assert GoalEnergy("l1", "all")(r, g, a, {}).item() == pytest.approx(1.25)
    # squared L2 means: step0 (0+1)/2 = 0.5, step1 (4+4)/2 = 4
    assert GoalEnergy("l2", "last")(r, g, a, {}).item() == pytest.approx(4.0)
    assert GoalEnergy("l2", "all")(r, g, a, {}).item() == pytest.approx(2.25)
    # linear weights 1/3, 2/3
    assert GoalEnergy("l2", "all", "linear")(r, g, a, {}).item() == pytest.approx(0.5 / 3 + 8 / 3)
    assert GoalEnergy("l1", "all", [0.0, 1.0])(r, g, a, {}).item() == pytest.approx(2.0)


def test_min_over_steps():
    r, g = _roll()
    a = torch.zeros(1, 2, 1)
    # the closest step counts: step 0 (L1 0.5, L2 0.5), not the last
    assert GoalEnergy("l1", "min")(r, g, a, {}).item() == pytest.approx(0.5)
    assert GoalEnergy("l2", "min")(r, g, a, {}).item() == pytest.approx(0.5)
    # with proprio the two terms are summed per step before the min: step0 0.5 + 1.0, step1 2 + 0
    r.proprio = torch.tensor([[[0.0], [1.0]]])
    g.proprio = torch.tensor([[1.0]])
    assert GoalEnergy("l1", "min", proprio_weight=1.0)(r, g, a, {}).item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="steps must be one of"):
        GoalEnergy("l1", "first")


def test_cosine():
    r, g = _roll()
    a = torch.zeros(1, 2, 1)
    c0 = 1 - (1 + 2) / (math.sqrt(5) * math.sqrt(2))
    c1 = 1 - (3 - 1) / (math.sqrt(10) * math.sqrt(2))
    assert GoalEnergy("cosine", "last")(r, g, a, {}).item() == pytest.approx(c1, abs=1e-6)
    assert GoalEnergy("cosine", "all")(r, g, a, {}).item() == pytest.approx((c0 + c1) / 2, abs=1e-6)


def test_multi_token_and_rows():
    # M=2 rows, N=2 tokens: l1 is the mean over tokens and dims; rows independent
    pred = torch.zeros(2, 1, 2, 3)
    pred[1] = 1.0
    goal = Goal(torch.zeros(2, 2, 3))
    e = GoalEnergy("l1")(Rollout(pred), goal, torch.zeros(2, 1, 1), {})
    assert e.tolist() == [0.0, 1.0]


def test_proprio_term():
    r, g = _roll()
    r.proprio = torch.tensor([[[0.0], [2.0]]])
    g.proprio = torch.tensor([[1.0]])
    e = GoalEnergy("l1", "last", proprio_weight=0.5)(r, g, torch.zeros(1, 2, 1), {})
    assert e.item() == pytest.approx(2.0 + 0.5 * 1.0)
    with pytest.raises(ValueError):
        GoalEnergy("l1", proprio_weight=1.0)(Rollout(r.latents), g, torch.zeros(1, 2, 1), {})


def test_action_terms():
    a = torch.tensor([[[1.0, -1.0], [3.0, 1.0]]])  # M=1, H=2, A=2
    assert ActionMagnitude()(None, None, a, {}).item() == pytest.approx((1 + 1 + 9 + 1) / 4)
    assert ActionMagnitude(p=1)(None, None, a, {}).item() == pytest.approx(6 / 4)
    assert ActionSmoothness()(None, None, a, {}).item() == pytest.approx((4 + 4) / 2)
    assert ActionSmoothness()(None, None, a[:, :1], {}).item() == 0.0


def test_composite_and_build():
    r, g = _roll()
    a = torch.tensor([[[1.0], [3.0]]])
    e = build_energy({"goal": {"weight": 2.0, "metric": "l1"}, "action_smoothness": {"weight": 0.5},
                      "action_magnitude": {"weight": 0.0}})
    assert isinstance(e, CompositeEnergy) and len(e.terms) == 2  # zero weight dropped
    total, parts = e.evaluate(r, g, a, {})
    assert total.item() == pytest.approx(2 * 2.0 + 0.5 * 4.0)
    assert parts["goal"].item() == pytest.approx(2.0) and parts["action_smoothness"].item() == pytest.approx(4.0)
    two = build_energy({"g_last": {"type": "goal", "steps": "last"}, "g_all": {"type": "goal", "steps": "all"}})
    assert two(r, g, a, {}).item() == pytest.approx(2.0 + 1.25)
    with pytest.raises(ValueError):
        build_energy({"nope": {}})
    with pytest.raises(ValueError):
        build_energy({"goal": {"metric": "l3"}})


def test_ensemble_disagreement():
    lat = torch.zeros(3, 4, 1, 2)
    dis = torch.tensor([[0.0] * 4, [1.0] * 4, [0.0, 0.0, 0.0, 4.0]])
    e = EnsembleDisagreement()(Rollout(lat, None, dis), None, torch.zeros(3, 4, 1), {})
    assert e.tolist() == [0.0, 1.0, 1.0]
    assert EnsembleDisagreement("last")(Rollout(lat, None, dis), None, torch.zeros(3, 4, 1), {}).tolist() == [0.0, 1.0, 4.0]
    with pytest.raises(ValueError):
        EnsembleDisagreement()(Rollout(lat), None, torch.zeros(3, 4, 1), {})


def test_ensemble_disagreement_from_linear_heads():
    """Zero when all heads agree; grows with the spread of the heads."""
    from wmplan.planners.analytic import LinearLatentWorldModel

    ctx = torch.zeros(1, 1, 1, 2)
    acts = torch.ones(1, 3, 2)
    vals = []
    for spread in (0.0, 0.1, 0.3):
        heads = [torch.eye(2) * (1 + spread), torch.eye(2) * (1 - spread)]
        wm = LinearLatentWorldModel(torch.eye(2), torch.eye(2), -torch.ones(2), torch.ones(2), heads=heads)
        roll = wm.rollout(ctx, None, acts)
        vals.append(EnsembleDisagreement()(roll, None, acts, {}).item())
    assert vals[0] == 0.0 and 0 < vals[1] < vals[2]


def test_jepa_residual():
    pred = torch.zeros(2, 3, 1, 2)
    tgt = torch.zeros(2, 3, 1, 2)
    tgt[1, :, :, 0] = 1.0  # each step: mean |r| = 0.5, summed over 3 steps
    e = JEPAResidual()(None, None, torch.zeros(2, 3, 1), {"jepa_pred": pred, "jepa_target": tgt})
    assert e.tolist() == [0.0, pytest.approx(1.5)]
    assert JEPAResidual()(None, None, torch.zeros(2, 3, 1), {}).tolist() == [0.0, 0.0]
