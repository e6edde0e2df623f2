"""Ensembles of independently trained world models: mean prediction and member spread, checks
that the members share one latent space, and plan.py's ``world_model=ensemble:<a>+<b>``."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_script
from wmplan.worldmodel.ensemble import EnsembleWorldModel
from wmplan.worldmodel.predictor import ACPredictor, ACPredictorConfig
from wmplan.worldmodel.vit import ViTConfig, VisionTransformer
from wmplan.worldmodel.world_model import WorldModel

# own helpers: importing tests/test_world_model.py here would register its test encoder type twice
IMG, A_ENV, P, FS = 16, 2, 3, 2


def tiny_encoder(seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    cfg = ViTConfig(img_size=IMG, patch_size=4, embed_dim=24, depth=1, num_heads=2, mlp_ratio=2.0)
    return VisionTransformer(cfg).eval().requires_grad_(False)


def random_frames(b: int, t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, IMG, IMG, 3), dtype=torch.uint8, generator=g)


def member(predictor_seed: int, encoder_seed: int = 0, frameskip: int = FS, latent_shift: float | None = None) -> WorldModel:
    enc = tiny_encoder(encoder_seed)
    torch.manual_seed(predictor_seed)
    pcfg = ACPredictorConfig(latent_dim=24, tokens_per_frame=4, grid=(2, 2), action_dim=frameskip * A_ENV,
                             proprio_dim=P, embed_dim=24, depth=2, num_heads=2, ensemble=1)
    stats = {"action_mean": torch.zeros(frameskip * A_ENV), "action_std": torch.ones(frameskip * A_ENV),
             "proprio_mean": torch.zeros(P), "proprio_std": torch.ones(P)}
    if latent_shift is not None:  # standardised latents, as latent_norm=dim trains them (stats of its data)
        stats["latent_mean"] = torch.full((4, 24), latent_shift)
        stats["latent_std"] = torch.full((4, 24), 1.0 + latent_shift)
    return WorldModel(enc, ACPredictor(pcfg), pool_k=2, frameskip=frameskip, action_low=[-1.0, -2.0],
                      action_high=[1.0, 2.0], stats=stats, meta={"env_id": "test-dot"})


def test_rollout_is_the_member_mean_and_spread(one_thread):
    a, b = member(1), member(2)
    ens = EnsembleWorldModel([a, b])
    ctx = a.encode(random_frames(2, 1))
    torch.testing.assert_close(ctx, b.encode(random_frames(2, 1)))  # one latent space
    prop = torch.randn(2, 1, P)
    actions = torch.rand(6, 3, FS * A_ENV) * 2 - 1
    out = ens.rollout(ctx, prop, actions)
    ra, rb = a.rollout(ctx, prop, actions), b.rollout(ctx, prop, actions)
    torch.testing.assert_close(out.latents, (ra.latents + rb.latents) / 2)
    want = ((ra.latents - rb.latents) / 2).pow(2).mean(dim=(2, 3))  # population variance of 2 members
    torch.testing.assert_close(out.disagreement, want)
    assert out.disagreement.shape == (6, 3) and bool((out.disagreement > 0).all())
    same = EnsembleWorldModel([a, member(1)]).rollout(ctx, prop, actions)
    assert float(same.disagreement.abs().max()) == 0.0  # identical members never disagree


def test_members_trained_on_other_data_are_mapped_into_one_space(one_thread):
    a, b = member(1, latent_shift=0.1), member(2, latent_shift=0.5)  # their data gave other latent stats
    frames, prop = random_frames(2, 1), torch.randn(2, 1, P)
    actions = torch.rand(4, 2, FS * A_ENV) * 2 - 1
    out = EnsembleWorldModel([a, b]).rollout(a.encode(frames), prop, actions)
    ra = a.rollout(a.encode(frames), prop, actions).latents
    rb = b.rollout(b.encode(frames), prop, actions).latents  # b in its own space
    rb_in_a = (rb * b.latent_std + b.latent_mean - a.latent_mean) / a.latent_std
    torch.testing.assert_close(out.latents, (ra + rb_in_a) / 2, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="latent standardisation"):
        EnsembleWorldModel([a, member(3)])


def test_members_must_share_the_latent_space():
    with pytest.raises(ValueError, match="member 1 differs from member 0 in encoder weights"):
        EnsembleWorldModel([member(1), member(2, encoder_seed=5)])
    with pytest.raises(ValueError, match="frameskip"):
        EnsembleWorldModel([member(1), member(2, frameskip=1)])
    with pytest.raises(ValueError, match="at least 2"):
        EnsembleWorldModel([member(1)])


def test_plan_with_an_ensemble_and_its_disagreement_energy(tmp_path):
    out = tmp_path / "run"
    run_script("plan.py", "world_model=ensemble:pretrained:pointmaze+pretrained:pointmaze", "energy=ensemble",
               "episodes=1", "num_envs=1", "max_steps=5", "planner.samples=16", "planner.iterations=1",
               "planner.elites=4", "video=false", "threads=1", f"out_dir={out}")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_model"].count("pointmaze.pt") == 2 and summary["episodes"] == 1
