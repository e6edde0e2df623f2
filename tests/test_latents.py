"""Training-time latents are planning-time latents: one code path, checked on real frames.

A real PointMaze dataset (``tiny_dataset``: scripts/collect.py) and the bundled PointMaze
encoder; ``train_predictor.py`` builds its latent cache and saves a world model with
``latent_norm=dim`` statistics. The windows the predictor trains on must equal
``WorldModel.encode`` of the same frames, and the probe's features the unstandardised ones.
"""
from __future__ import annotations

import pytest
import torch

from tests.conftest import run_script
from wmplan.worldmodel.ac_training import Stats, WindowSampler
from wmplan.worldmodel.data import EpisodeDataset
from wmplan.worldmodel.latent_cache import CACHE_KIND, CACHE_NAME, LatentCache, build_latent_cache
from wmplan.worldmodel.pretrained_models import resolve_model_path
from wmplan.worldmodel.probe import encode_features
from wmplan.worldmodel.registry import save_encoder
from wmplan.worldmodel.utils import load_checkpoint
from wmplan.worldmodel.world_model import WorldModel

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
EXACT = {"atol": 1e-6, "rtol": 0.0}


def bundled_pointmaze() -> WorldModel:
    return WorldModel.load(resolve_model_path("pretrained:pointmaze"), device="cpu")


def test_training_windows_equal_planning_latents(tiny_dataset, tmp_path):
    enc, out = tmp_path / "enc.pt", tmp_path / "run"
    save_encoder(bundled_pointmaze().encoder, enc)
    run_script("train_predictor.py", f"data_dir={tiny_dataset}", f"encoder_path={enc}", f"out_dir={out}",
               "predictor=ac_tiny", "steps=1", "batch_size=2", "frameskip=2", "pool_k=2", "latent_norm=dim",
               "cache_dtype=float32", "context=1", "rollout_steps=1", "eval_steps=2", "val_windows=2",
               "warmup_steps=1", "log_every=1", "eval_every=0", "ckpt_every=0", "threads=1", "tensorboard=false")
    wm = WorldModel.load(out / "world_model.pt", device="cpu")
    cache = LatentCache.from_dict(load_checkpoint(out / CACHE_NAME, kind=CACHE_KIND), out / CACHE_NAME)
    assert wm.latent_mean is not None and cache.latents.dtype == torch.float32
    ds, fs = EpisodeDataset(tiny_dataset), wm.frameskip
    stats = Stats(wm.action_mean, wm.action_std, None, None, wm.latent_mean, wm.latent_std)
    for e, eid in enumerate(cache.episode_ids):
        T = cache.episode_length(e)
        # the one window covering the whole episode: frames 0, fs, 2fs, ... as the predictor sees them
        sampler = WindowSampler(cache, [e], fs, T // fs + 1, stats, False, torch.device("cpu"))
        train = sampler.gather(torch.zeros(1, dtype=torch.long)).latents  # [1, W, N, D]
        frames = torch.from_numpy(ds.load_episode(eid).frames)[None, : (T // fs) * fs + 1 : fs]
        plan = wm.encode(frames)  # [1, W, N, D]
        assert plan.shape == train.shape == (1, T // fs + 1, 4, 64)
        torch.testing.assert_close(train, plan, **EXACT)
        assert plan.std() > 0.5  # standardised, not a constant


def test_probe_features_and_float16_cache_are_the_same_latents(tiny_dataset, tmp_path):
    wm = bundled_pointmaze()  # latent_norm=none: its planning latents are the unstandardised ones
    assert wm.latent_mean is None
    ds = EpisodeDataset(tiny_dataset)
    frames = torch.from_numpy(ds.load_episode(ds.episode_ids[0]).frames)  # [T+1, H, W, 3]
    plan = wm.encode(frames[None])[0]  # [T+1, N, D]
    feats = encode_features(wm.encoder, frames.numpy(), "pooled", wm.pool_k, batch_size=7)
    torch.testing.assert_close(feats, plan.flatten(1), **EXACT)
    # the default float16 cache differs from planning latents by storage rounding only
    c16 = build_latent_cache(ds, wm.encoder, None, wm.pool_k, tmp_path, batch_size=5, verbose=False)
    assert c16.latents.dtype == torch.float16
    got = c16.latents[: frames.shape[0]].float()
    assert ((got - plan).abs() <= plan.abs() * 2.0**-11 + 2.0**-24).all()
    assert not torch.equal(got, plan)  # fp16 really is coarser: the bound above is what is tested
