"""ViT encoder, checkpoints, V-JEPA pretraining pieces, probe, and an end-to-end script smoke test."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wmplan.worldmodel.masks import DEFAULT_SPECS, MaskSpec, sample_masks
from wmplan.worldmodel.probe import fit_ridge, r2_score
from wmplan.worldmodel.utils import CheckpointError, TensorBoardLog, atomic_save, read_tensorboard_scalars
from wmplan.worldmodel.vit import ViTConfig, VisionTransformer, load_encoder, save_encoder, token_positions
from wmplan.worldmodel.vjepa import VJEPA, effective_rank, ema_momentum, ema_update, latent_std, warmup_cosine_lr

REPO = Path(__file__).resolve().parents[1]
TINY = ViTConfig(img_size=32, patch_size=8, tubelet=2, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: shared 2-core machines


def moving_disk(n_eps: int, length: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic episodes: a red disk drifting on a grey canvas with a dark bar (a 'wall').

    Returns frames uint8 ``[n_eps, length, size, size, 3]`` and centres float32 ``[n_eps, length, 2]``.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    r = size / 10
    frames = np.empty((n_eps, length, size, size, 3), np.uint8)
    xy = np.empty((n_eps, length, 2), np.float32)
    for e in range(n_eps):
        p = rng.uniform(r, size - r, 2)
        v = rng.normal(0, size / 20, 2)
        for t in range(length):
            img = np.full((size, size, 3), 200, np.uint8)
            img[size // 2 - 1 : size // 2 + 1, size // 4 : 3 * size // 4] = (40, 50, 140)
            img[(xx - p[0]) ** 2 + (yy - p[1]) ** 2 <= r * r] = (230, 40, 30)
            frames[e, t], xy[e, t] = img, p
            v = np.where((p + v < r) | (p + v > size - r), -v, v)
            p = p + v
    return frames, xy


# ---------------------------------------------------------------- config and shapes
def test_config_round_trip_and_unknown_field() -> None:
    assert ViTConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unknown field.*'depht'"):
        ViTConfig.from_dict({**TINY.to_dict(), "depht": 3})
    with pytest.raises(ValueError, match="divisible"):
        ViTConfig(img_size=30, patch_size=8)


def test_token_positions_order() -> None:
    pos = token_positions(2, 3, 4)
    assert pos.shape == (24, 3)
    assert pos[0].tolist() == [0, 0, 0] and pos[5].tolist() == [0, 1, 1] and pos[12].tolist() == [1, 0, 0]


def test_forward_shapes_and_keep_all_equals_full() -> None:
    torch.manual_seed(0)
    vit = VisionTransformer(TINY).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    full = vit(x)
    assert full.shape == (2, 2 * 16, 32)
    keep_all = torch.arange(32).expand(2, -1)
    torch.testing.assert_close(vit(x, keep=keep_all), full)
    keep = torch.tensor([[0, 5, 17], [3, 4, 31]])
    sub = vit(x, keep=keep)
    assert sub.shape == (2, 3, 32)
    # The subset is not just a slice of the full output (attention sees fewer tokens)...
    assert not torch.allclose(sub, torch.gather(full, 1, keep.unsqueeze(-1).expand(-1, -1, 32)), atol=1e-4)


def test_keep_uses_true_relative_positions() -> None:
    """A kept pair of tokens (contents A, B) depends on their offset, not on where they sit."""
    torch.manual_seed(0)
    vit = VisionTransformer(TINY).eval()
    a, b = torch.randn(3, 2, 8, 8), torch.randn(3, 2, 8, 8)
    x = torch.randn(1, 3, 2, 32, 32)
    for idx, patch in ((0, a), (1, b), (5, a), (6, b), (15, b)):  # token idx -> (h, w) = divmod(idx, 4)
        h, w = divmod(idx, 4)
        x[0, :, :, 8 * h : 8 * h + 8, 8 * w : 8 * w + 8] = patch
    pair = lambda i, j: vit(x, keep=torch.tensor([[i, j]]))  # noqa: E731
    torch.testing.assert_close(pair(0, 1), pair(5, 6))  # both offset (0, 0, 1)
    assert not torch.allclose(pair(0, 1), pair(0, 15), atol=1e-4)  # offset (0, 3, 3)


def test_abs_pos_embed_breaks_translation_invariance() -> None:
    """One kept token sees only itself: RoPE-only output is position-free, sin-cos is not."""
    x = torch.randn(1, 3, 2, 8, 8).repeat(1, 1, 1, 4, 4)  # every patch identical
    for abs_pos, same in ((False, True), (True, False)):
        torch.manual_seed(0)
        vit = VisionTransformer(ViTConfig(**{**TINY.to_dict(), "abs_pos_embed": abs_pos})).eval()
        a, b = vit(x, keep=torch.tensor([[0]])), vit(x, keep=torch.tensor([[5]]))
        assert torch.allclose(a, b, atol=1e-5) == same
    old = {k: v for k, v in TINY.to_dict().items() if k != "abs_pos_embed"}
    assert ViTConfig.from_dict(old).abs_pos_embed is False  # older configs still load


@pytest.mark.parametrize("abs_pos", [False, True])
def test_encode_is_per_frame_repeated_tubelet(abs_pos: bool) -> None:
    torch.manual_seed(0)
    vit = VisionTransformer(ViTConfig(**{**TINY.to_dict(), "abs_pos_embed": abs_pos})).eval()
    frames, _ = moving_disk(2, 3)
    frames = torch.from_numpy(frames)  # [2, 3, 32, 32, 3]
    z = vit.encode(frames)
    assert z.shape == (2, 3, vit.num_patches, 32) and vit.grid == (4, 4)
    x = vit.frames_to_input(frames[1:2, 2:3]).repeat(1, 1, 2, 1, 1)  # frame (1, 2) as a static tubelet
    torch.testing.assert_close(z[1, 2], vit(x)[0])
    torch.testing.assert_close(vit.encode(frames, chunk_size=4), z)
    assert not torch.allclose(z[0, 0], z[0, 2])  # the disk moved


def test_frames_to_input_normalisation() -> None:
    vit = VisionTransformer(TINY)
    frames = torch.zeros(1, 2, 32, 32, 3, dtype=torch.uint8)
    frames[..., 0] = 255
    x = vit.frames_to_input(frames)
    assert x.shape == (1, 3, 2, 32, 32)
    assert x[0, 0].mean().item() == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
    assert x[0, 2].mean().item() == pytest.approx(-0.406 / 0.225, rel=1e-5)


# ---------------------------------------------------------------- checkpoints
def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vit = VisionTransformer(TINY).eval()
    path = tmp_path / "enc.pt"
    save_encoder(vit, path, {"seed": 3, "note": "x"})
    loaded = load_encoder(path, device="cpu")
    frames = torch.from_numpy(moving_disk(1, 2)[0])
    torch.testing.assert_close(loaded.encode(frames), vit.encode(frames), rtol=0, atol=0)
    assert loaded.cfg == TINY and loaded.meta == {"seed": 3, "note": "x"}
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_wrong_checkpoint_kind_raises(tmp_path: Path) -> None:
    bad = tmp_path / "predictor.pt"
    atomic_save({"kind": "wmplan-predictor", "state_dict": {}}, bad)
    with pytest.raises(CheckpointError, match="predictor.pt"):
        load_encoder(bad)
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_encoder(tmp_path / "missing.pt")
    typo = tmp_path / "typo.pt"
    atomic_save({"kind": "wmplan-encoder", "config": {**TINY.to_dict(), "dpeth": 2}, "state_dict": {}}, typo)
    with pytest.raises(CheckpointError, match="typo.pt.*dpeth"):
        load_encoder(typo)


# ---------------------------------------------------------------- V-JEPA pieces
def test_ema_update_exact() -> None:
    torch.manual_seed(0)
    online, target = VisionTransformer(TINY), VisionTransformer(TINY)
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for b, t, o in zip(before, target.parameters(), online.parameters()):
        torch.testing.assert_close(t - b, 0.1 * (o - b), rtol=1e-5, atol=1e-6)
    snap = [p.clone() for p in target.parameters()]
    ema_update(target, online, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(snap, target.parameters()))


def test_schedules() -> None:
    assert ema_momentum(0, 100) == pytest.approx(0.996) and ema_momentum(100, 100) == pytest.approx(1.0)
    assert ema_momentum(50, 100, 0.99, 1.0) == pytest.approx(0.995)
    assert warmup_cosine_lr(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert warmup_cosine_lr(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert warmup_cosine_lr(100, 100, 1.0, 10, final_ratio=0.01) == pytest.approx(0.01)
    lrs = [warmup_cosine_lr(s, 100, 1.0, 10) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_collapse_diagnostics() -> None:
    g = torch.Generator().manual_seed(0)
    diverse = torch.randn(512, 32, generator=g)
    collapsed = torch.randn(1, 32, generator=g).expand(512, -1) + 1e-4 * torch.randn(512, 32, generator=g)
    assert latent_std(diverse) > 0.9 and latent_std(collapsed) < 0.01
    assert effective_rank(diverse) > 25 and effective_rank(collapsed) < 1.1
    low_rank = torch.randn(512, 2, generator=g) @ torch.randn(2, 32, generator=g)
    assert effective_rank(low_rank) < 2.01


def test_vjepa_loss_decreases_and_target_gets_no_grad() -> None:
    torch.manual_seed(0)
    model = VJEPA(TINY, pred_dim=24, pred_depth=1, pred_heads=2)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    frames = torch.from_numpy(moving_disk(8, 8, seed=1)[0])  # [8, 8, 32, 32, 3]
    g = torch.Generator().manual_seed(0)
    specs = [MaskSpec(4, (0.15, 0.15)), MaskSpec(1, (0.5, 0.5))]
    losses = []
    for step in range(30):
        t0 = int(torch.randint(0, 5, (), generator=g))
        x = model.encoder.frames_to_input(frames[:, t0 : t0 + 4])
        masks = [sample_masks(8, 2, 4, 4, s, g) for s in specs]
        loss = model.loss(x, [m[0] for m in masks], [m[1] for m in masks])
        opt.zero_grad()
        loss.backward()
        if step == 0:
            assert all(p.grad is None for p in model.target_encoder.parameters())
            assert model.predictor.mask_token.grad is not None
        opt.step()
        ema_update(model.target_encoder, model.encoder, 0.99)
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_single_mask_tensor_loss_and_predictor_shape() -> None:
    torch.manual_seed(0)
    model = VJEPA(TINY, pred_dim=24, pred_depth=1, pred_heads=2)
    x = torch.randn(3, 3, 4, 32, 32)
    ctx, tgt = sample_masks(3, 2, 4, 4, DEFAULT_SPECS[0], torch.Generator().manual_seed(0))
    z = model.encoder(x, keep=ctx)
    assert model.predictor(z, ctx, tgt, (2, 4, 4)).shape == (3, tgt.shape[1], 32)
    assert model.loss(x, ctx, tgt).dim() == 0


def test_ridge_probe_recovers_linear_map() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 10, generator=g) * torch.arange(1, 11)  # unequal scales: standardised inside
    w = torch.randn(10, 2, generator=g)
    y = x @ w + 0.01 * torch.randn(300, 2, generator=g)
    ridge = fit_ridge(x[:200], y[:200], [1e-6, 1e-3, 1.0])
    assert r2_score(ridge.predict(x[200:]), y[200:]) > 0.999
    wide = torch.randn(50, 400, generator=g)  # more features than rows: dual form
    assert r2_score(fit_ridge(wide, wide[:, :2], 1e-6).predict(wide), wide[:, :2]) > 0.99
    assert r2_score(y.mean(0).expand_as(y), y) == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------- scripts end to end
def write_tiny_dataset(root: Path, n_eps: int = 6, length: int = 12) -> None:
    """The on-disk episode format (meta.json + episodes/ep_XXXXXX.npz), written with numpy."""
    frames, xy = moving_disk(n_eps, length + 1, size=32, seed=2)
    (root / "episodes").mkdir(parents=True)
    meta = {"env_id": "synthetic/MovingDisk", "image_size": 32, "action_dim": 2, "proprio_dim": 4,
            "action_low": [-1.0, -1.0], "action_high": [1.0, 1.0], "seed": 0, "policy": "bounce"}
    (root / "meta.json").write_text(json.dumps(meta))
    for e in range(n_eps):
        proprio = np.concatenate([xy[e], np.zeros_like(xy[e])], axis=1).astype(np.float32)
        np.savez_compressed(
            root / "episodes" / f"ep_{e:06d}.npz", frames=frames[e],
            actions=np.zeros((length, 2), np.float32), proprio=proprio,
            states=proprio.astype(np.float64), rewards=np.zeros(length, np.float32),
            success=np.zeros(length, bool),
        )


def run_script(name: str, args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def test_pretrain_and_probe_scripts_end_to_end(tmp_path: Path) -> None:
    data, out, work = tmp_path / "data", tmp_path / "run", tmp_path / "cwd"
    write_tiny_dataset(data)
    work.mkdir()
    tiny = ["encoder.img_size=32", "encoder.embed_dim=24", "encoder.depth=1", "encoder.num_heads=2",
            "jepa_predictor.dim=24", "jepa_predictor.depth=1", "jepa_predictor.num_heads=2",
            f"data_dir={data}", f"out_dir={out}", "batch_size=4", "log_every=2", "ckpt_every=2",
            "warmup_steps=1", "val_fraction=0.34"]
    text = run_script("pretrain_encoder.py", [*tiny, "steps=3"], work)
    assert "resuming" not in text and "latent_std" in text
    enc = load_encoder(out / "encoder.pt", device="cpu")
    assert enc.meta["steps"] == 3 and np.isfinite(enc.meta["final_loss"])
    z = enc.encode(torch.zeros(1, 2, 32, 32, 3, dtype=torch.uint8))
    assert z.shape == (1, 2, 16, 24)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [2, 3]

    text = run_script("pretrain_encoder.py", [*tiny, "steps=5"], work)
    assert "resuming from step 3" in text
    assert load_encoder(out / "encoder.pt", device="cpu").meta["steps"] == 5
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [2, 3, 4, 5]
    curves = read_tensorboard_scalars(out / "tb")  # the same entries, as TensorBoard curves
    assert {"train/loss", "train/lr", "train/ema_momentum", "collapse/latent_std", "collapse/eff_rank",
            "collapse/pooled_std", "perf/sec_per_step"} <= set(curves)
    assert [(st, pytest.approx(v, rel=1e-6)) for st, v in curves["collapse/latent_std"]] == \
        [(e["step"], e["latent_std"]) for e in log]

    probe_out = tmp_path / "probe"
    text = run_script("probe_encoder.py", [f"encoder_path={out / 'encoder.pt'}", f"data_dir={data}",
                                           f"out_dir={probe_out}", "val_fraction=0.34", "pool_k=2"], work)
    report = json.loads((probe_out / "probe.json").read_text())
    assert {"r2_trained", "r2_random"} <= set(report)
    assert all(np.isfinite(report[k]) for k in ("r2_trained", "r2_random"))
    assert "random" in text and "trained" in text
    assert report["target"] == "proprio"

    # steps=0 writes the random-init encoder: the pretraining ablation's baseline. It is the very
    # init the probe's "random" row rebuilds, so probing it gives the same R^2 on both rows.
    rand_out = tmp_path / "rand"
    run_script("pretrain_encoder.py", [*tiny[:-7], f"data_dir={data}", f"out_dir={rand_out}", "batch_size=4",
                                       "warmup_steps=1", "val_fraction=0.34", "steps=0"], work)
    rand = load_encoder(rand_out / "encoder.pt", device="cpu")
    assert rand.meta["steps"] == 0 and rand.meta["final_loss"] is None
    trained = load_encoder(out / "encoder.pt", device="cpu")
    assert any(not torch.equal(a, b) for a, b in zip(rand.state_dict().values(), trained.state_dict().values()))
    run_script("probe_encoder.py", [f"encoder_path={rand_out / 'encoder.pt'}", f"data_dir={data}",
                                    f"out_dir={probe_out}", "val_fraction=0.34", "pool_k=2",
                                    "target=state", "target_dims=[0]"], work)
    report = json.loads((probe_out / "probe.json").read_text())
    assert report["target"] == "state" and report["r2_trained"] == pytest.approx(report["r2_random"], abs=1e-9)
    assert list(work.iterdir()) == []  # nothing written to the working directory


def test_tensorboard_missing_prints_one_line_and_continues(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    tb = TensorBoardLog(tmp_path / "tb", enabled=True)
    tb.scalars(1, {"loss": 1.0})
    tb.close()
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "pip install 'wmplan[tensorboard]'" in out
    assert not (tmp_path / "tb").exists()
    TensorBoardLog(tmp_path / "tb", enabled=False).scalars(1, {"loss": 1.0})
    assert capsys.readouterr().out == "" and not (tmp_path / "tb").exists()
