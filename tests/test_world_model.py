"""WorldModel bundle (encode / rollout / save / load), latent cache and the training script."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from wmplan.worldmodel.data import Episode, EpisodeDataset, write_episode, write_meta
from wmplan.worldmodel.latent_cache import CACHE_NAME, build_latent_cache
from wmplan.worldmodel.predictor import ACPredictor, ACPredictorConfig
from wmplan.worldmodel.registry import (FrameEncoder, build_encoder, build_predictor, encoder_fingerprint,
                                        load_encoder, register_encoder, save_encoder)
from wmplan.worldmodel.utils import CheckpointError, atomic_save, read_tensorboard_scalars
from wmplan.worldmodel.vit import ViTConfig, VisionTransformer
from wmplan.worldmodel.world_model import WorldModel

REPO = Path(__file__).resolve().parents[1]
IMG, A_ENV, P, FS = 16, 2, 3, 2


def tiny_encoder(seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    cfg = ViTConfig(img_size=IMG, patch_size=4, embed_dim=24, depth=1, num_heads=2, mlp_ratio=2.0)
    return VisionTransformer(cfg).eval().requires_grad_(False)


def tiny_world_model(proprio: bool = True, ensemble: int = 2) -> WorldModel:
    enc = tiny_encoder()
    torch.manual_seed(1)
    pcfg = ACPredictorConfig(latent_dim=24, tokens_per_frame=4, grid=(2, 2), action_dim=FS * A_ENV,
                             proprio_dim=P if proprio else None, embed_dim=24, depth=2, num_heads=2, ensemble=ensemble)
    stats = {"action_mean": torch.full((FS * A_ENV,), 0.1), "action_std": torch.full((FS * A_ENV,), 0.5),
             "proprio_mean": torch.arange(P).float() if proprio else None,
             "proprio_std": torch.full((P,), 2.0) if proprio else None}
    return WorldModel(enc, ACPredictor(pcfg), pool_k=2, frameskip=FS, action_low=[-1.0, -2.0], action_high=[1.0, 2.0],
                      stats=stats, meta={"seed": 3, "data_dir": "/nowhere"})


def random_frames(B: int, T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, T, IMG, IMG, 3), dtype=torch.uint8, generator=g)


def make_dataset(root: Path, n_eps: int = 6, T: int = 20, seed: int = 0) -> None:
    """A moving dot driven by 2-D actions; proprio = (x, y, speed)."""
    rng = np.random.default_rng(seed)
    write_meta(root, {"env_id": "test-dot", "env_kwargs": {}, "image_size": IMG, "action_dim": A_ENV,
                      "proprio_dim": P, "action_low": [-1.0, -1.0], "action_high": [1.0, 1.0], "seed": seed})
    yy, xx = np.mgrid[0:IMG, 0:IMG]
    for e in range(n_eps):
        pos = rng.uniform(0.3, 0.7, 2)
        acts = rng.uniform(-1, 1, (T, A_ENV)).astype(np.float32)
        frames, prop = [], []
        for t in range(T + 1):
            f = np.zeros((IMG, IMG, 3), np.uint8)
            f[(xx - pos[0] * IMG) ** 2 + (yy - pos[1] * IMG) ** 2 < 6] = 255
            frames.append(f)
            prop.append([pos[0], pos[1], 0.0 if t == 0 else float(np.abs(acts[t - 1]).sum())])
            if t < T:
                pos = np.clip(pos + 0.05 * acts[t], 0.1, 0.9)
        prop = np.asarray(prop, np.float32)
        write_episode(root, e, Episode(np.stack(frames), acts, prop, prop.astype(np.float64),
                                       np.zeros(T, np.float32), np.zeros(T, bool)))


# ---- WorldModel API ------------------------------------------------------------------------
def test_encode_and_rollout_shapes_and_units():
    wm = tiny_world_model()
    assert wm.action_dim == 4 and wm.proprio_dim == P and wm.frameskip == FS
    torch.testing.assert_close(wm.action_low, torch.tensor([-1.0, -2.0, -1.0, -2.0]))
    assert wm.device.type == "cpu" and wm.dtype == torch.float32 and wm.num_params() > 0
    z = wm.encode(random_frames(2, 3))
    assert z.shape == (2, 3, 4, 24) and not z.requires_grad
    assert torch.allclose(z.mean(-1), torch.zeros(()), atol=1e-5)  # layer-normed
    prop = torch.randn(2, 1, P)
    acts = torch.rand(6, 5, 4) * 2 - 1  # 3 samples per env
    r = wm.rollout(z[:, -1:], prop, acts)
    assert r.latents.shape == (6, 5, 4, 24) and r.proprio.shape == (6, 5, P) and r.disagreement.shape == (6, 5)
    # normalisation happens inside: same as the raw predictor on normalised inputs
    raw = wm.predictor.rollout(z[:, -1:], (prop - wm.proprio_mean) / 2.0, (acts - 0.1) / 0.5)
    torch.testing.assert_close(r.latents, raw.latents)
    torch.testing.assert_close(r.proprio, raw.proprio * 2.0 + wm.proprio_mean)
    # multi-frame context with the actions between the context frames
    r2 = wm.rollout(z, torch.randn(2, 3, P), acts, ctx_actions=torch.zeros(2, 2, 4))
    assert r2.latents.shape == (6, 5, 4, 24)
    # gradients reach the actions (gradient planners), never the frozen weights
    a = acts.clone().requires_grad_(True)
    wm.rollout(z[:, -1:], prop, a).latents.sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert all(p.grad is None for p in wm.parameters())
    # teacher-forced one-step predictions (TeacherForcedModel protocol)
    tf = wm.predict_next(z, torch.randn(2, 3, P), torch.zeros(2, 3, 4))
    assert tf.latents.shape == (2, 3, 4, 24) and tf.disagreement.shape == (2, 3)
    with pytest.raises(ValueError, match="proprio"):
        wm.rollout(z[:, -1:], None, acts)


def test_save_load_round_trip(tmp_path):
    wm = tiny_world_model()
    path = tmp_path / "wm.pt"
    wm.save(path)
    raw = torch.load(path, weights_only=True)  # only tensors / plain python
    assert raw["kind"] == "wmplan-world-model" and raw["frameskip"] == FS and raw["pool_k"] == 2
    wm2 = WorldModel.load(path, device="auto" if not torch.cuda.is_available() else "cpu")
    assert wm2.meta == {"seed": 3, "data_dir": "/nowhere"} and wm2.image_size == IMG
    torch.testing.assert_close(wm2.action_high, wm.action_high)
    frames = random_frames(2, 1, seed=5)
    z, z2 = wm.encode(frames), wm2.encode(frames)
    assert torch.equal(z, z2)
    acts, prop = torch.randn(4, 3, 4), torch.randn(2, 1, P)
    r, r2 = wm.rollout(z, prop, acts), wm2.rollout(z2, prop, acts)
    assert torch.equal(r.latents, r2.latents) and torch.equal(r.proprio, r2.proprio)
    assert torch.equal(r.disagreement, r2.disagreement)
    # a model without proprio round-trips too
    wm3 = tiny_world_model(proprio=False, ensemble=1)
    wm3.save(tmp_path / "np.pt")
    r3 = WorldModel.load(tmp_path / "np.pt").rollout(z, None, acts)
    assert r3.proprio is None and r3.disagreement is None
    assert torch.equal(r3.latents, wm3.rollout(z, None, acts).latents)


def test_load_errors_name_file_and_field(tmp_path):
    wm = tiny_world_model()
    good = tmp_path / "wm.pt"
    wm.save(good)
    enc = tmp_path / "enc.pt"
    save_encoder(wm.encoder, enc)
    with pytest.raises(CheckpointError, match=r"enc\.pt.*kind"):
        WorldModel.load(enc)
    torn = tmp_path / "torn.pt"
    torn.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"torn\.pt"):
        WorldModel.load(torn)
    ckpt = torch.load(good, weights_only=True)
    del ckpt["frameskip"]
    atomic_save(ckpt, tmp_path / "nofs.pt")
    with pytest.raises(CheckpointError, match=r"nofs\.pt.*frameskip"):
        WorldModel.load(tmp_path / "nofs.pt")
    ckpt = torch.load(good, weights_only=True)
    ckpt["predictor"]["config"]["typo_field"] = 1
    atomic_save(ckpt, tmp_path / "badcfg.pt")
    with pytest.raises(CheckpointError, match=r"badcfg\.pt.*predictor.*typo_field"):
        WorldModel.load(tmp_path / "badcfg.pt")
    with pytest.raises(CheckpointError, match="not found"):
        WorldModel.load(tmp_path / "missing.pt")


# ---- encoder / predictor seam ----------------------------------------------------------------
@dataclass
class PatchMeanConfig:
    img_size: int = IMG
    patch_size: int = 8
    embed_dim: int = 24

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PatchMeanConfig":
        return cls(**d)


@register_encoder("test_patch_mean")
class PatchMeanEncoder(torch.nn.Module):
    """A non-ViT encoder: mean colour of each patch, linearly projected. [B,T,H,W,3] -> [B,T,N,D]."""

    config_class = PatchMeanConfig

    def __init__(self, config: PatchMeanConfig):
        super().__init__()
        self.config = config
        self.proj = torch.nn.Linear(3, config.embed_dim)
        g = config.img_size // config.patch_size
        self.grid, self.embed_dim, self.image_size = (g, g), config.embed_dim, config.img_size

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        B, T, H, W, _ = frames.shape
        p, g = self.config.patch_size, self.grid[0]
        x = frames.float().div(255).reshape(B * T, g, p, g, p, 3).mean(dim=(2, 4))  # [BT, g, g, 3]
        return self.proj(x).reshape(B, T, g * g, self.embed_dim)


def test_checkpoints_carry_type_tags_and_untagged_ones_load_as_vit_ac(tmp_path):
    wm = tiny_world_model()
    wm.save(tmp_path / "wm.pt")
    ckpt = torch.load(tmp_path / "wm.pt", weights_only=True)
    assert ckpt["encoder"]["type"] == "vit" and ckpt["predictor"]["type"] == "ac"
    frames, prop, acts = random_frames(1, 2, seed=4), torch.randn(1, 1, P), torch.randn(3, 2, 4)
    want = wm.rollout(wm.encode(frames)[:, -1:], prop, acts)
    for part in ("encoder", "predictor"):  # the layout of every bundled model: no tags
        del ckpt[part]["type"]
    atomic_save(ckpt, tmp_path / "untagged.pt")
    old = WorldModel.load(tmp_path / "untagged.pt")
    assert isinstance(old.encoder, VisionTransformer) and isinstance(old.predictor, ACPredictor)
    got = old.rollout(old.encode(frames)[:, -1:], prop, acts)
    assert torch.equal(got.latents, want.latents) and torch.equal(got.proprio, want.proprio)
    ckpt["encoder"]["type"] = "no_such_encoder"
    atomic_save(ckpt, tmp_path / "unknown.pt")
    with pytest.raises(CheckpointError, match=r"unknown\.pt.*'encoder'.*no_such_encoder.*vit"):
        WorldModel.load(tmp_path / "unknown.pt")
    assert isinstance(build_encoder("vit", wm.encoder.config.to_dict()), VisionTransformer)
    assert isinstance(build_predictor("ac", wm.predictor.config.to_dict()), ACPredictor)
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("vit")(PatchMeanEncoder)
    with pytest.raises(ValueError, match="lower-case"):
        register_encoder("Bad-Tag")


def test_vit_is_found_by_its_tag_without_being_imported():
    """An unregistered tag is looked up as the module wmplan.worldmodel.<tag> (one new file)."""
    code = ("import sys; from wmplan.worldmodel import registry; assert 'wmplan.worldmodel.vit' not in sys.modules; "
            "e = registry.build_encoder('vit', {'img_size': 16, 'patch_size': 4, 'embed_dim': 24, 'depth': 1, "
            "'num_heads': 2}); print(type(e).__name__, e.grid)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.split() == ["VisionTransformer", "(4,", "4)"], p.stderr


def test_new_encoder_type_round_trips_through_world_model_and_encoder_files(tmp_path):
    torch.manual_seed(0)
    enc = PatchMeanEncoder(PatchMeanConfig()).eval().requires_grad_(False)
    pcfg = ACPredictorConfig(latent_dim=24, tokens_per_frame=1, grid=(1, 1), action_dim=FS * A_ENV, embed_dim=24,
                             depth=1, num_heads=2)
    stats = {"action_mean": torch.zeros(FS * A_ENV), "action_std": torch.ones(FS * A_ENV)}
    wm = WorldModel(enc, ACPredictor(pcfg), 1, FS, [-1.0, -1.0], [1.0, 1.0], stats)
    wm.save(tmp_path / "wm.pt")
    assert torch.load(tmp_path / "wm.pt", weights_only=True)["encoder"]["type"] == "test_patch_mean"
    wm2 = WorldModel.load(tmp_path / "wm.pt")
    assert isinstance(wm2.encoder, PatchMeanEncoder) and wm2.image_size == IMG
    assert isinstance(enc, FrameEncoder) and isinstance(tiny_encoder(), FrameEncoder)  # EncoderLike + grid etc.
    frames = random_frames(2, 3, seed=1)
    z = wm2.encode(frames)
    assert z.shape == (2, 3, 1, 24) and torch.equal(z, wm.encode(frames))
    acts = torch.rand(2, 4, FS * A_ENV)
    assert torch.equal(wm2.rollout(z[:, -1:], None, acts).latents, wm.rollout(z[:, -1:], None, acts).latents)
    save_encoder(enc, tmp_path / "enc.pt")
    enc2 = load_encoder(tmp_path / "enc.pt", device="cpu")
    assert isinstance(enc2, PatchMeanEncoder) and not any(p.requires_grad for p in enc2.parameters())
    # without an encoder file the latent cache is keyed by the encoder's type, config and weights
    make_dataset(tmp_path / "ds", n_eps=2, T=4)
    c = build_latent_cache(EpisodeDataset(tmp_path / "ds"), enc, None, 1, tmp_path / "out", dtype=torch.float32)
    assert c.encoder_sha256 == encoder_fingerprint(enc2) != encoder_fingerprint(tiny_encoder())
    enc2.proj.bias.add_(1.0)
    assert encoder_fingerprint(enc2) != c.encoder_sha256


# ---- latent cache ----------------------------------------------------------------------------
def test_latent_cache_reuse_and_invalidation(tmp_path, capsys):
    make_dataset(tmp_path / "ds", n_eps=3, T=8)
    ds = EpisodeDataset(tmp_path / "ds")
    enc = tiny_encoder()
    enc_path = tmp_path / "enc.pt"
    save_encoder(enc, enc_path)
    c = build_latent_cache(ds, enc, enc_path, 2, tmp_path / "out", batch_size=4, dtype=torch.float32)
    assert c.latents.shape == (27, 4, 24) and c.frame_offsets.tolist() == [0, 9, 18, 27]
    assert c.actions.shape == (24, A_ENV) and c.proprio.shape == (27, P)
    ep = ds.load_episode(1)
    want = enc.encode(torch.from_numpy(ep.frames)[None])
    from wmplan.worldmodel.pooling import pool_latents
    torch.testing.assert_close(c.latents[9:18], pool_latents(want, enc.grid, 2)[0])
    mtime = (tmp_path / "out" / CACHE_NAME).stat().st_mtime_ns
    capsys.readouterr()
    build_latent_cache(ds, enc, enc_path, 2, tmp_path / "out", dtype=torch.float32)
    assert "reusing" in capsys.readouterr().out
    assert (tmp_path / "out" / CACHE_NAME).stat().st_mtime_ns == mtime
    c1 = build_latent_cache(ds, enc, enc_path, 1, tmp_path / "out", dtype=torch.float32)  # pool_k changed
    assert "stale" in capsys.readouterr().out and c1.latents.shape == (27, 1, 24)
    save_encoder(tiny_encoder(seed=9), enc_path)  # different encoder file
    build_latent_cache(ds, tiny_encoder(seed=9), enc_path, 1, tmp_path / "out", dtype=torch.float32)
    assert "stale" in capsys.readouterr().out


def test_latent_standardisation_stats_sampler_and_model(tmp_path):
    """latent_norm: train windows are standardised with train stats, and the saved model's
    encode() applies the same map, so planner latents match what the predictor learned on."""
    from wmplan.worldmodel.ac_training import WindowSampler, compute_stats
    from wmplan.worldmodel.pooling import pool_latents

    make_dataset(tmp_path / "ds", n_eps=3, T=8)
    ds = EpisodeDataset(tmp_path / "ds")
    enc = tiny_encoder()
    save_encoder(enc, tmp_path / "enc.pt")
    c = build_latent_cache(ds, enc, tmp_path / "enc.pt", 2, tmp_path / "out", dtype=torch.float32)
    assert compute_stats(c, [0, 1, 2], FS, True).latent_mean is None  # off by default
    st = compute_stats(c, [0, 1, 2], 1, True, latent_norm=True)
    assert st.latent_mean.shape == st.latent_std.shape == (4, 24)
    torch.testing.assert_close(st.latent_mean, c.latents.mean(0))
    assert bool((st.latent_std >= 0.1 * c.latents.std(0, unbiased=False).mean() - 1e-6).all())  # floored
    g = compute_stats(c, [0, 1, 2], 1, True, latent_norm="global")
    torch.testing.assert_close(g.latent_mean, st.latent_mean)
    assert g.latent_std.unique().numel() == 1  # one scale: energy geometry unchanged up to scale
    with pytest.raises(ValueError, match="latent_norm"):
        compute_stats(c, [0, 1, 2], 1, True, latent_norm="channel")
    s = WindowSampler(c, [0, 1, 2], 1, 9, st, True, torch.device("cpu"))
    w = s.gather(torch.arange(len(s)))  # one 9-frame window per episode = every frame, once
    lat = w.latents.flatten(0, 1)
    torch.testing.assert_close(lat, (c.latents - st.latent_mean) / st.latent_std)
    assert lat.mean(0).abs().max() < 1e-4
    wm = tiny_world_model()
    wm_n = WorldModel(wm.encoder, wm.predictor, 2, FS, [-1.0, -2.0], [1.0, 2.0],
                      {**{k: getattr(wm, k) for k in ("action_mean", "action_std", "proprio_mean", "proprio_std")},
                       "latent_mean": st.latent_mean, "latent_std": st.latent_std})
    frames = random_frames(1, 2)
    raw = pool_latents(wm.encoder.encode(frames), wm.encoder.grid, 2)
    torch.testing.assert_close(wm_n.encode(frames), (raw - st.latent_mean) / st.latent_std)
    wm_n.save(tmp_path / "wm.pt")
    assert torch.equal(WorldModel.load(tmp_path / "wm.pt").encode(frames), wm_n.encode(frames))
    with pytest.raises(ValueError, match=r"stats\.latent_mean.*shape \(24,\).*\(4, 24\)"):
        WorldModel(wm.encoder, wm.predictor, 2, FS, [-1.0, -2.0], [1.0, 2.0],
                   {"action_mean": wm.action_mean, "action_std": wm.action_std, "proprio_mean": wm.proprio_mean,
                    "proprio_std": wm.proprio_std, "latent_mean": torch.zeros(24), "latent_std": torch.ones(24)})


# ---- training script (smoke) -----------------------------------------------------------------
def run_train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, str(REPO / "scripts" / "train_predictor.py"), f"data_dir={tmp_path / 'ds'}",
           f"encoder_path={tmp_path / 'enc.pt'}", f"out_dir={tmp_path / 'run'}", "predictor=ac_tiny",
           "batch_size=4", "context=2", "rollout_steps=2", "val_fraction=0.34", "val_windows=8",
           "log_every=1", "eval_every=2", "threads=1", "warmup_steps=1", *overrides]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def test_train_script_smoke_and_resume(tmp_path):
    make_dataset(tmp_path / "ds", n_eps=6, T=20)
    save_encoder(tiny_encoder(), tmp_path / "enc.pt")
    run_train(tmp_path, "steps=4", "ckpt_every=2", "latent_norm=dim")
    out = tmp_path / "run"
    wm = WorldModel.load(out / "world_model.pt")
    assert wm.frameskip == 2 and wm.action_dim == 4 and wm.proprio_dim == P and wm.pool_k == 2
    assert wm.latent_mean is not None and wm.latent_std.shape == (4, 24)
    assert wm.meta["seed"] == 0 and "metrics" in wm.meta
    metrics = json.loads((out / "metrics.json").read_text())
    for k in ("val_open_loop_l1_5step", "val_copy_last_l1_5step", "val_ratio_5step"):
        assert np.isfinite(metrics[k]), k
    assert metrics["val_copy_last_l1_5step"] > 0
    steps = [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text().splitlines()]
    assert max(steps) == 4
    assert (out / "latent_cache.pt").is_file() and not (tmp_path / "outputs").exists()
    # rerun with more steps: resumes, reuses the latent cache, continues the log
    p = run_train(tmp_path, "steps=6", "ckpt_every=2", "latent_norm=dim")
    assert "resuming from step 4" in p.stdout and "reusing latent cache" in p.stdout
    steps = [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text().splitlines()]
    assert max(steps) == 6 and steps.count(5) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and 0 < metrics["val_pred_std"] and 0 < metrics["val_target_std"]
    # TensorBoard curves beside the JSON logs; the resumed run continues them without duplicates
    curves = read_tensorboard_scalars(out / "tb")
    assert {"train/loss", "train/lr", "train/tf", "train/rollout", "val/open_loop_l1", "val/copy_last_l1",
            "val/ratio_to_copy_last", "val/pred_std", "val/target_std"} <= set(curves)
    assert [st for st, _ in curves["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert curves["val/ratio_to_copy_last"][-1] == (6, pytest.approx(metrics["val_ratio_5step"], rel=1e-5))


def test_train_script_builds_encoder_from_config_without_tensorboard(tmp_path):
    """encoder=<config> instead of encoder_path: a seeded encoder of any registered type, no file needed."""
    make_dataset(tmp_path / "ds", n_eps=3, T=8)
    enc = ["encoder_path=null", "encoder=vit_tiny", f"encoder.img_size={IMG}", "encoder.patch_size=4",
           "encoder.embed_dim=24", "encoder.depth=1", "encoder.num_heads=2", "encoder.abs_pos_embed=false"]
    run_train(tmp_path, "steps=2", "eval_steps=2", "val_windows=4", "tensorboard=false", *enc)
    out = tmp_path / "run"
    wm = WorldModel.load(out / "world_model.pt")
    assert isinstance(wm.encoder, VisionTransformer) and wm.meta["encoder_path"] is None
    torch.manual_seed(0)  # seed=0: the run built the same encoder
    want = build_encoder("vit", {**wm.encoder.config.to_dict()})
    assert all(torch.equal(a, b) for a, b in zip(want.state_dict().values(), wm.encoder.state_dict().values()))
    assert wm.meta["encoder_sha256"] == encoder_fingerprint(wm.encoder)
    assert not (out / "tb").exists()
