"""Goal policy (goal-conditioned BC in latent space): hindsight sampling, training, the planner prior,
the policy planner, the file format and its errors."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from conftest import run_script
from wmplan.checks import ConfigError, NonFiniteError
from wmplan.planners import Goal, PlanContext, build_planner
from wmplan.worldmodel.ensemble import EnsembleWorldModel
from wmplan.worldmodel.goal_policy import GoalPolicy, GoalPolicyConfig, policy_rollout, space_of
from wmplan.worldmodel.latent_cache import LatentCache
from wmplan.worldmodel.policy_training import HindsightSampler, policy_loss
from wmplan.worldmodel.pretrained_models import resolve_model_path, resolve_policy_path
from wmplan.worldmodel.utils import CheckpointError, atomic_save
from wmplan.worldmodel.world_model import WorldModel


@pytest.fixture(scope="module")
def pointmaze() -> WorldModel:
    return WorldModel.load(resolve_model_path("pretrained:pointmaze"), device="cpu")


def numbered_cache(lengths: list[int], a_env: int = 2) -> LatentCache:
    """Episodes whose latents and actions carry their own global index (latent of frame f = f)."""
    fo = torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor([n + 1 for n in lengths]).cumsum(0)])  # T+1 frames
    ao = torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor(lengths).cumsum(0)])
    frames, actions = int(fo[-1]), int(ao[-1])
    return LatentCache(latents=torch.arange(frames, dtype=torch.float32).view(-1, 1, 1).expand(-1, 1, 3).clone(),
                       frame_offsets=fo, actions=torch.arange(actions, dtype=torch.float32)[:, None].expand(-1, a_env).clone(),
                       action_offsets=ao, proprio=torch.zeros(frames, 1), episode_ids=list(range(len(lengths))),
                       grid=(1, 1), pool_k=None, encoder_sha256="test")


def test_hindsight_goals_lie_ahead_in_the_same_episode_and_targets_are_the_actions_taken():
    fs, max_offset = 3, 4
    cache = numbered_cache([10, 30, 7])
    wm = SimpleNamespace(frameskip=fs, latent_mean=None, latent_std=None, proprio_dim=None,
                         action_mean=torch.zeros(fs * 2), action_std=torch.ones(fs * 2))
    sampler = HindsightSampler(cache, [0, 1, 2], wm, max_offset)
    assert len(sampler) == (10 - fs + 1) + (30 - fs + 1) + (7 - fs + 1)
    b = sampler.sample(4000, torch.Generator().manual_seed(0))
    f, g = b.latents[:, 0, 0].long(), b.goal[:, 0, 0].long()
    fo, ao = cache.frame_offsets, cache.action_offsets
    ep = torch.bucketize(f, fo[1:], right=True)
    assert torch.equal(ep, torch.bucketize(g, fo[1:], right=True)), "a goal crossed into another episode"
    j, rem = torch.div(g - f, fs, rounding_mode="floor"), (g - f) % fs
    assert bool((rem == 0).all()) and int(j.min()) == 1 and int(j.max()) == max_offset
    t = f - fo[ep]
    first = ao[ep] + t  # the global index of the first action taken from frame f
    expect = (first[:, None] + torch.arange(fs)).float().repeat_interleave(2, 1)
    assert torch.equal(b.actions, expect)
    assert bool((t + fs <= ao[ep + 1] - ao[ep]).all()), "a window ran past its episode's actions"
    assert b.proprio is None


def random_policy_and_inputs(world_model: WorldModel, envs: int) -> tuple[GoalPolicy, PlanContext, Goal]:
    """An untrained policy of the world model's latent space, and random one-frame contexts and goals."""
    torch.manual_seed(0)
    policy = GoalPolicy(GoalPolicyConfig(**space_of(world_model), hidden=32, depth=2))
    return policy, PlanContext(torch.randn(envs, 1, 4, 64), torch.randn(envs, 1, 4)), Goal(torch.randn(envs, 4, 64))


def test_policy_rollout_acts_then_follows_the_model(pointmaze, one_thread):
    policy, ctx, goal = random_policy_and_inputs(pointmaze, 3)
    z = ctx.latents
    plan = policy_rollout(pointmaze, policy, ctx, goal, horizon=4)
    assert plan.shape == (3, 4, pointmaze.action_dim)
    assert bool((plan >= pointmaze.action_low).all() and (plan <= pointmaze.action_high).all())
    assert torch.allclose(plan[:, 0], policy.act(pointmaze, z[:, -1], goal.latents, ctx.proprio[:, -1]))
    r = pointmaze.rollout(ctx.latents, ctx.proprio, plan[:, :1])  # step 2 acts on the model's next latents
    assert torch.allclose(plan[:, 1], policy.act(pointmaze, r.latents[:, -1], goal.latents, r.proprio[:, -1]), atol=1e-5)


def test_training_lowers_the_loss_and_the_file_round_trips(pointmaze, tiny_dataset, tmp_path, one_thread):
    proc = run_script("train_policy.py", f"data_dir={tiny_dataset}", "world_model=pretrained:pointmaze",
                      f"out_dir={tmp_path}", "steps=300", "hidden=64", "depth=2", "batch_size=64", "eval_every=100",
                      "val_fraction=0.34")
    assert "val MSE" in proc.stdout
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [100, 200, 300]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["seed"] == 0 and metrics["train_episodes"] == 4 and metrics["val_episodes"] == 2
    policy = GoalPolicy.load(tmp_path / "policy.pt")
    assert policy.config.action_dim == pointmaze.action_dim and policy.meta["world_model_sha256"]
    # the trained policy fits its training windows much better than a fresh one
    cache = LatentCache.from_dict(torch.load(tmp_path / "latent_cache.pt", weights_only=True), tmp_path / "latent_cache.pt")
    batch = HindsightSampler(cache, [0, 1, 2, 3, 4, 5], pointmaze, 10).sample(2048, torch.Generator().manual_seed(5))
    torch.manual_seed(1)
    fresh = GoalPolicy(GoalPolicyConfig(**space_of(pointmaze), hidden=64, depth=2))
    with torch.no_grad():
        assert float(policy_loss(policy, batch)) < 0.7 * float(policy_loss(fresh, batch))


def test_prior_seeds_the_search_and_the_policy_planner_returns_its_rollout(pointmaze, one_thread):
    policy, ctx, goal = random_policy_and_inputs(pointmaze, 2)
    expect = policy_rollout(pointmaze, policy, ctx, goal, horizon=3)
    just_policy = build_planner({"name": "policy", "horizon": 3}, prior=policy).plan(pointmaze, ctx, goal)
    assert torch.allclose(just_policy.actions, expect, atol=1e-6)
    cem = build_planner({"name": "cem", "horizon": 3, "samples": 8, "elites": 2, "iterations": 1}, prior=policy)
    searched = cem.plan(pointmaze, ctx, goal)
    # the policy's plan is the first candidate (include_mean), so the search can only do as well or better
    assert bool((searched.energy <= just_policy.energy + 1e-5).all())
    given = torch.zeros(2, 3, pointmaze.action_dim)  # an explicit init still overrides the prior
    assert torch.equal(build_planner({"name": "policy", "horizon": 3}, prior=policy).plan(
        pointmaze, ctx, goal, init=given).actions, given)


def test_plan_runs_the_policy_planner_and_records_the_prior(pointmaze, tmp_path, one_thread):
    torch.manual_seed(0)
    path = tmp_path / "policy.pt"
    GoalPolicy(GoalPolicyConfig(**space_of(pointmaze), hidden=16, depth=1)).save(path)
    out = tmp_path / "run"
    run_script("plan.py", "planner=policy", f"prior={path}", "episodes=2", "num_envs=2", "max_steps=10",
               "video=false", f"out_dir={out}")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prior"] == str(path) and len(summary["prior_sha256"]) == 64 and summary["episodes"] == 2
    assert "PolicyConfig" in summary["planner_built"]


def test_bad_priors_and_files_are_refused_by_name(pointmaze, tmp_path):
    with pytest.raises(ConfigError, match="needs an action prior"):
        build_planner({"name": "policy"})
    other = GoalPolicy(GoalPolicyConfig(**{**space_of(pointmaze), "tokens": 16}, hidden=8, depth=1))
    planner = build_planner({"name": "policy", "horizon": 2}, prior=other)
    with pytest.raises(ConfigError, match="tokens=16"):
        planner.plan(pointmaze, PlanContext(torch.zeros(1, 1, 4, 64), torch.zeros(1, 1, 4)), Goal(torch.zeros(1, 4, 64)))
    fits, ctx, goal = random_policy_and_inputs(pointmaze, 1)
    with pytest.raises(ConfigError, match="single wmplan WorldModel"):
        build_planner({"name": "policy", "horizon": 2}, prior=fits).plan(EnsembleWorldModel([pointmaze, pointmaze]), ctx, goal)
    other.save(tmp_path / "other.pt")
    proc = run_script("plan.py", "planner=policy", f"prior={tmp_path / 'other.pt'}", "episodes=1", "video=false",
                      f"out_dir={tmp_path / 'run'}", check=False)
    assert proc.returncode != 0 and "tokens=16" in proc.stderr and "other.pt" in proc.stderr
    with pytest.raises(CheckpointError, match="kind"):
        GoalPolicy.load(resolve_model_path("pretrained:pointmaze"))
    bad = GoalPolicy(GoalPolicyConfig(**space_of(pointmaze), hidden=8, depth=1))
    with torch.no_grad():
        bad.net[0].weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError):
        bad.save(tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
    atomic_save({"kind": "wmplan-goal-policy", "config": {"tokens": 4}}, tmp_path / "torn.pt")
    with pytest.raises(CheckpointError, match="state_dict"):
        GoalPolicy.load(tmp_path / "torn.pt")


def test_a_policy_is_refused_by_a_world_model_of_another_latent_space_of_the_same_shapes():
    policy = GoalPolicy.load(resolve_policy_path("pretrained:arm_pick_place"))
    own = WorldModel.load(resolve_model_path("pretrained:arm_pick_place"))
    other = WorldModel.load(resolve_model_path("pretrained:arm_push"))
    assert space_of(own) == space_of(other)  # same token grid, widths and action/proprio dims
    policy.check_fits(own, "bundled")
    with pytest.raises(ConfigError, match="another latent space"):
        policy.check_fits(other, "prior=pretrained:arm_pick_place")
    with pytest.raises(FileNotFoundError, match=r"no bundled goal policy .nope.; bundled goal policies: \[.arm_pick_place.\]"):
        resolve_policy_path("pretrained:nope")


def test_train_policy_refuses_data_of_another_env(tiny_dataset, tmp_path):
    proc = run_script("train_policy.py", f"data_dir={tiny_dataset}", "world_model=pretrained:reacher",
                      f"out_dir={tmp_path}", "steps=10", check=False)
    assert proc.returncode != 0 and "PointMaze" in proc.stderr and "Reacher" in proc.stderr
    assert not (tmp_path / "policy.pt").exists()
