"""Official V-JEPA 2 / V-JEPA 2-AC files: loading, RoPE layout, pose update, cached rollout, planning.

Every file here is written by the tests themselves from wmplan's own small random models,
in the release's on-disk layout: a dict with ``encoder``/``target_encoder``/``predictor``/
``opt``/``scaler``/``epoch``/... whose keys carry ``module.backbone.`` (pretraining files) or
``module.`` (the AC file). A comparison against the official code itself runs only when
``VJEPA2_OFFICIAL_CHECKOUT`` names a checkout of facebookresearch/vjepa2 (skipped otherwise).
"""
from __future__ import annotations

import json
import math
import os
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import run_script
from wmplan.planners.cem import CEMConfig, CEMPlanner
from wmplan.protocols import Goal, PlanContext
from wmplan.worldmodel.latents import encode_latents
from wmplan.worldmodel.registry import component_class, encoder_fingerprint, load_encoder, save_encoder
from wmplan.worldmodel.rope import apply_rope, rope_cos_sin
from wmplan.worldmodel.rope_official import apply_official_rope, official_rope_tables
from wmplan.worldmodel.utils import CheckpointError
from wmplan.worldmodel.vit import ViTConfig, VisionTransformer
from wmplan.worldmodel.vjepa2 import (
    OfficialWorldModel, compute_new_pose, load_official_ac_predictor, load_official_encoder, load_official_world_model,
)
from wmplan.worldmodel.vjepa2_predictor import OfficialACConfig, OfficialACPredictor

IMG, PATCH, D, E, HEADS = 32, 8, 48, 32, 2  # 4x4 grid; head dims 24 (no tail) and 16 (chunk 4, tail 4)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))


def _encoder_sd(seed: int = 0, depth: int = 2) -> dict[str, torch.Tensor]:
    """A wmplan ``vit`` encoder's weights: the same names and shapes as the release's."""
    vit = VisionTransformer(ViTConfig(img_size=IMG, patch_size=PATCH, embed_dim=D, depth=depth, num_heads=HEADS, mlp_ratio=3.0))
    _randomise(vit, seed)
    return vit.state_dict()


def _predictor_sd(action_dim: int = 7, state_dim: int = 7, seed: int = 1) -> dict[str, torch.Tensor]:
    pred = OfficialACPredictor(OfficialACConfig(latent_dim=D, embed_dim=E, depth=2, num_heads=HEADS, mlp_hidden=4 * E,
                                                action_dim=action_dim, state_dim=state_dim, grid=(IMG // PATCH,) * 2,
                                                extrinsics_dim=action_dim - 1))
    _randomise(pred, seed)
    return pred.state_dict()


def _official_file(path: Path, enc: dict, pred: dict | None, prefix: str, target: dict | None = None) -> Path:
    wrap = lambda sd: {prefix + k: v.clone() for k, v in sd.items()}  # noqa: E731
    torch.save({"encoder": wrap(enc), "target_encoder": wrap(target if target is not None else enc),
                "predictor": wrap(pred) if pred is not None else {"module.backbone.mask_tokens.0": torch.zeros(1, 1, E)},
                "opt": {"state": {}, "param_groups": []}, "scaler": None, "epoch": 7, "loss": 0.5,
                "batch_size": 2, "world_size": 1, "lr": 1e-4}, path)
    return path


@pytest.fixture
def ac_file(tmp_path: Path) -> Path:
    return _official_file(tmp_path / "vjepa2-ac-tiny.pt", _encoder_sd(), _predictor_sd(), "module.")


@pytest.fixture
def wm(ac_file: Path) -> OfficialWorldModel:
    return load_official_world_model(ac_file, encoder_num_heads=HEADS, predictor_num_heads=HEADS, img_size=IMG)


# ------------------------------------------------------------------------- RoPE
def _reference_rope(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Independent loop form of the release's RoPE: x [L, dh], pos [L, 3] -> [L, dh]."""
    L, dh = x.shape
    d = 2 * ((dh // 3) // 2)
    out = x.clone()
    for axis in range(3):
        for k in range(d // 2):  # pair (2k, 2k+1) of the axis chunk
            i, j = axis * d + 2 * k, axis * d + 2 * k + 1
            fi = 1.0 / 10000 ** (((2 * k) % (d // 2)) / (d / 2))  # frequency of channel 2k ("repeat" layout)
            fj = 1.0 / 10000 ** (((2 * k + 1) % (d // 2)) / (d / 2))
            for n in range(L):
                ai, aj = float(pos[n, axis]) * fi, float(pos[n, axis]) * fj
                out[n, i] = x[n, i] * math.cos(ai) - x[n, j] * math.sin(ai)
                out[n, j] = x[n, j] * math.cos(aj) + x[n, i] * math.sin(aj)
    return out


@pytest.mark.parametrize("head_dim", [24, 32, 16])
def test_official_rope_matches_independent_pairwise_rotation(head_dim: int) -> None:
    g = torch.Generator().manual_seed(head_dim)
    x = torch.randn(7, head_dim, generator=g, dtype=torch.float64)
    pos = torch.randint(0, 9, (7, 3), generator=g)
    cos, sin = official_rope_tables(pos, head_dim)
    got = apply_official_rope(x.float(), cos, sin).double()
    assert torch.allclose(got, _reference_rope(x, pos), atol=1e-5)
    # tail channels untouched; time-only positions (t, 0, 0) leave the h and w chunks as they are
    d = 2 * ((head_dim // 3) // 2)
    assert torch.equal(got[:, 3 * d:], x[:, 3 * d:].float().double())
    pos_t = pos.clone()
    pos_t[:, 1:] = 0
    c2, s2 = official_rope_tables(pos_t, head_dim)
    assert torch.equal(apply_official_rope(x.float(), c2, s2)[:, d:], x[:, d:].float())
    # ...and it is not wmplan's rotate-half RoPE (which the bundled models keep)
    c3, s3 = rope_cos_sin(pos.float()[None], head_dim)
    assert not torch.allclose(apply_rope(x.float()[None, None], c3, s3)[0, 0].double(), got, atol=1e-3)


# ------------------------------------------------------------------------- loading
def test_encoder_round_trip_pretraining_layout(tmp_path: Path) -> None:
    target, online = _encoder_sd(0), _encoder_sd(5)
    path = _official_file(tmp_path / "vitl-tiny.pt", online, None, "module.backbone.", target=target)
    enc = load_official_encoder(path, num_heads=HEADS, img_size=IMG)
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    assert all(torch.equal(v, target[k]) for k, v in enc.state_dict().items())  # target_encoder by default
    enc_online = load_official_encoder(path, checkpoint_key="encoder", num_heads=HEADS, img_size=IMG)
    assert all(torch.equal(v, online[k]) for k, v in enc_online.state_dict().items())
    c = enc.cfg
    assert (c.embed_dim, c.depth, c.patch_size, c.tubelet, c.mlp_hidden) == (D, 2, PATCH, 2, 3 * D)

    clip = torch.randn(2, 3, 4, IMG, IMG)
    assert enc(clip).shape == (2, 2 * (IMG // PATCH) ** 2, D)
    frames = torch.randint(0, 256, (2, 3, IMG, IMG, 3), dtype=torch.uint8)
    z = enc.encode(frames)
    assert z.shape == (2, 3, (IMG // PATCH) ** 2, D)
    one = enc.frames_to_input(frames[:1, 1:2]).repeat(1, 1, 2, 1, 1)  # frame repeated into one tubelet
    assert torch.allclose(z[0, 1], enc(one)[0], atol=1e-6)


def test_ac_file_world_model(ac_file: Path, wm: OfficialWorldModel) -> None:
    pred = load_official_ac_predictor(ac_file, num_heads=HEADS, img_size=IMG)
    ref = _predictor_sd()
    assert all(torch.equal(v, ref[k]) for k, v in pred.state_dict().items())
    N = (IMG // PATCH) ** 2
    x, a, s = torch.randn(2, 3 * N, D), torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    out = pred(x, a, s)
    assert out.shape == (2, 3 * N, D)
    x2, a2 = x.clone(), a.clone()
    x2[:, 2 * N:] += 1.0
    a2[:, 2] += 1.0
    assert torch.allclose(pred(x2, a2, s)[:, :2 * N], out[:, :2 * N], atol=1e-6)  # block-causal
    assert not torch.allclose(pred(x2, a2, s)[:, 2 * N:], out[:, 2 * N:], atol=1e-3)

    frames = torch.randint(0, 256, (1, 2, IMG, IMG, 3), dtype=torch.uint8)
    z = wm.encode(frames)
    assert torch.allclose(z, F.layer_norm(wm.encoder.encode(frames), (D,)), atol=1e-6)
    assert (wm.action_dim, wm.proprio_dim, wm.frameskip, wm.image_size, wm.pose_update) == (7, 7, 1, IMG, "pose7")
    assert wm.action_low[3:6].abs().sum() == 0 and wm.action_high[3:6].abs().sum() == 0  # rotation not searched
    r = wm.rollout(z[:, :1], torch.rand(1, 1, 7), torch.zeros(4, 3, 7))
    assert r.latents.shape == (4, 3, N, D) and r.proprio.shape == (4, 3, 7)


def test_loader_errors_name_the_key(tmp_path: Path) -> None:
    enc, pred = _encoder_sd(), _predictor_sd()
    kw = dict(encoder_num_heads=HEADS, predictor_num_heads=HEADS, img_size=IMG)
    bad = dict(enc)
    del bad["blocks.1.attn.proj.bias"]
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attn\.proj\.bias"):
        load_official_world_model(_official_file(tmp_path / "a.pt", bad, pred, "module."), **kw)
    bad = dict(enc, **{"blocks.0.norm2.weight": torch.ones(D + 1)})
    with pytest.raises(CheckpointError, match=r"blocks\.0\.norm2\.weight.*\(49,\).*\(48,\)"):
        load_official_encoder(_official_file(tmp_path / "b.pt", bad, pred, "module."), num_heads=HEADS)
    bad_pred = dict(pred)
    del bad_pred["state_encoder.weight"]
    with pytest.raises(CheckpointError, match=r"state_encoder\.weight"):
        load_official_ac_predictor(_official_file(tmp_path / "c.pt", enc, bad_pred, "module."), num_heads=HEADS)
    with pytest.raises(CheckpointError, match=r"unexpected tensor.*blocks\.0\.attn\.extra"):
        load_official_encoder(_official_file(tmp_path / "d.pt", dict(enc, **{"blocks.0.attn.extra": torch.zeros(1)}), pred,
                                             "module."), num_heads=HEADS)
    with pytest.raises(CheckpointError, match=r"missing tensor 'patch_embed\.proj\.weight'.*prefixes"):
        load_official_encoder(_official_file(tmp_path / "e.pt", enc, pred, "model."), num_heads=HEADS)  # unknown prefix
    with pytest.raises(CheckpointError, match=r"width 48 .*num_heads"):
        load_official_encoder(tmp_path / "a.pt")  # not a released width: heads must be given
    with pytest.raises(CheckpointError, match=r"mask-denoising predictor"):
        load_official_ac_predictor(_official_file(tmp_path / "f.pt", enc, None, "module.backbone."), num_heads=HEADS)
    with pytest.raises(CheckpointError, match=r"not found"):
        load_official_encoder(tmp_path / "missing.pt")
    nan = dict(enc, **{"norm.bias": torch.full((D,), float("nan"))})
    with pytest.raises(CheckpointError, match=r"norm\.bias.*not finite"):
        load_official_encoder(_official_file(tmp_path / "g.pt", nan, pred, "module."), num_heads=HEADS)
    # a position table the RoPE model does not use is ignored, as the release does
    ok = load_official_encoder(_official_file(tmp_path / "h.pt", dict(enc, pos_embed=torch.zeros(1, 16, D)), pred,
                                              "module.backbone."), num_heads=HEADS, img_size=IMG)
    assert ok.cfg.depth == 2


# ------------------------------------------------------------------------- pose update
def test_compute_new_pose_hand_computed() -> None:
    h = math.pi / 2
    pose = torch.tensor([[[0.1, 0.2, 0.3, 0.0, 0.0, 0.3, 0.8]],
                         [[0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.2]],
                         [[1.0, -1.0, 0.5, 0.0, 0.0, h, 0.5]]])
    act = torch.tensor([[[0.01, -0.02, 0.03, 0.0, 0.0, 0.2, 0.5]],  # z rotations add; gripper clipped to 1
                        [[0.0, 0.0, 0.0, 0.2, 0.0, 0.0, -0.5]],  # x rotations add; gripper clipped to 0
                        [[0.0, 0.0, 0.0, h, 0.0, 0.0, 0.0]]])  # Rx(90) Rz(90): gimbal lock, y = -90, z = 0
    want = torch.tensor([[[0.11, 0.18, 0.33, 0.0, 0.0, 0.5, 1.0]],
                         [[0.0, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0]],
                         [[1.0, -1.0, 0.5, h, -h, 0.0, 0.5]]])
    got = compute_new_pose(pose, act)
    assert got.shape == (3, 1, 7) and got.dtype == pose.dtype
    assert torch.allclose(got, want, atol=1e-6)


def test_compute_new_pose_composes_rotations() -> None:
    from wmplan.worldmodel.vjepa2 import _euler_xyz_to_matrix

    g = torch.Generator().manual_seed(0)
    pose = torch.cat([torch.randn(64, 1, 3, generator=g), torch.rand(64, 1, 3, generator=g) * 2 - 1,
                      torch.rand(64, 1, 1, generator=g)], -1).double()
    act = torch.randn(64, 1, 7, generator=g).double() * 0.3
    new = compute_new_pose(pose, act)
    want = _euler_xyz_to_matrix(act[..., 3:6]) @ _euler_xyz_to_matrix(pose[..., 3:6])
    assert torch.allclose(_euler_xyz_to_matrix(new[..., 3:6]), want, atol=1e-12)
    assert new[..., 4].abs().max() <= math.pi / 2 and new[..., [3, 5]].abs().max() <= math.pi
    scipy_tf = pytest.importorskip("scipy.spatial.transform")
    for i in range(64):
        r = scipy_tf.Rotation.from_matrix(want[i, 0].numpy()).as_euler("xyz")
        assert torch.allclose(new[i, 0, 3:6], torch.from_numpy(r), atol=1e-9)


# ------------------------------------------------------------------------- rollouts
@pytest.mark.parametrize("tc", [1, 2])
@pytest.mark.parametrize("dims", [(7, 7), (3, 3), (2, 5)])
def test_cached_rollout_equals_full_recomputation(tmp_path: Path, tc: int, dims: tuple[int, int]) -> None:
    a_dim, s_dim = dims
    path = _official_file(tmp_path / "ac.pt", _encoder_sd(), _predictor_sd(a_dim, s_dim), "module.")
    wm = load_official_world_model(path, encoder_num_heads=HEADS, predictor_num_heads=HEADS, img_size=IMG)
    assert wm.pose_update == {(7, 7): "pose7", (3, 3): "additive", (2, 5): "constant"}[dims]
    g = torch.Generator().manual_seed(tc)
    B, S, H, N = 2, 3, 3, (IMG // PATCH) ** 2
    ctx = F.layer_norm(torch.randn(B, tc, N, D, generator=g), (D,))
    st = torch.rand(B, tc, s_dim, generator=g)
    acts = torch.randn(B * S, H, a_dim, generator=g) * 0.1
    kw = {"ctx_actions": torch.randn(B, tc - 1, a_dim, generator=g) * 0.1} if tc > 1 else {}
    wm.use_cache = False
    full = wm.rollout(ctx, st, acts, **kw)
    wm.use_cache = True
    cached = wm.rollout(ctx, st, acts, **kw)
    assert torch.allclose(cached.latents, full.latents, atol=2e-5)
    assert torch.allclose(cached.proprio, full.proprio, atol=1e-6)
    # the full path is the release's loop: forward on the growing sequence, last block, layer norm
    row = 4  # sample 1 of env 1
    frames, states = ctx[1:2], st[1:2]
    a_seq = kw["ctx_actions"][1:2] if tc > 1 else acts[:1, :0]
    for h in range(H):
        a_seq = torch.cat([a_seq, acts[row:row + 1, h:h + 1]], 1)
        z = F.layer_norm(wm.predictor(frames.flatten(1, 2), a_seq, states)[:, -N:], (D,))
        assert torch.allclose(full.latents[row, h], z[0], atol=1e-5)
        frames = torch.cat([frames, z[:, None]], 1)
        states = torch.cat([states, wm.next_state(states[:, -1], acts[row:row + 1, h])[:, None]], 1)


def test_vjepa2_ac_cem_returns_final_mean(wm: OfficialWorldModel) -> None:
    frames = torch.randint(0, 256, (2, 1, IMG, IMG, 3), dtype=torch.uint8)
    z = wm.encode(frames)
    ctx = PlanContext(z, torch.rand(2, 1, 7))
    goal = Goal(wm.encode(torch.randint(0, 256, (2, 1, IMG, IMG, 3), dtype=torch.uint8))[:, 0])
    cfg = CEMConfig(horizon=1, samples=24, iterations=3, elites=4, momentum=0.15, init_std=1.0, min_std=0.0,
                    include_mean=False, warm_start=False, return_mean=True)
    res = CEMPlanner(cfg).plan(wm, ctx, goal, generator=torch.Generator().manual_seed(0))
    assert res.actions.shape == (2, 1, 7)
    assert res.actions[..., 3:6].abs().max() == 0 and res.actions[..., :3].abs().max() <= 0.075 + 1e-7
    roll = wm.rollout(ctx.latents, ctx.proprio, res.actions)
    energy = (roll.latents[:, -1] - goal.latents).abs().mean(dim=(-2, -1))
    assert torch.allclose(res.energy, energy, atol=1e-6)  # the returned energy is the mean's own
    best = CEMPlanner(CEMConfig(**{**cfg.__dict__, "return_mean": False})).plan(
        wm, ctx, goal, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(best.actions, res.actions)  # default: the best sample, as before


# ------------------------------------------------------------------------- as a wmplan encoder
def test_official_encoder_is_a_wmplan_encoder(ac_file: Path, tmp_path: Path) -> None:
    enc = load_official_encoder(ac_file, num_heads=HEADS, img_size=IMG)
    assert component_class("encoder", "vjepa2") is type(enc)
    frames = torch.randint(0, 256, (1, 2, IMG, IMG, 3), dtype=torch.uint8)
    assert encode_latents(enc, frames, pool_k=2).shape == (1, 2, 4, D)
    save_encoder(enc, tmp_path / "enc.pt", meta={"source": str(ac_file)})
    back = load_encoder(tmp_path / "enc.pt", device="cpu")
    assert type(back) is type(enc) and encoder_fingerprint(back) == encoder_fingerprint(enc)
    assert torch.equal(back.encode(frames), enc.encode(frames))


# ------------------------------------------------------------------------- plan.py
def test_plan_script_with_official_layout_file(tmp_path: Path) -> None:
    """plan.py plans on PointMaze (2-D actions, 4-D proprio) with a tiny official-layout file."""
    enc = VisionTransformer(ViTConfig(img_size=64, patch_size=16, embed_dim=24, depth=1, num_heads=1))
    pred = OfficialACPredictor(OfficialACConfig(latent_dim=24, embed_dim=24, depth=1, num_heads=1, mlp_hidden=48,
                                                action_dim=2, state_dim=4, grid=(4, 4), extrinsics_dim=1))
    path = _official_file(tmp_path / "tiny-ac.pt", enc.state_dict(), pred.state_dict(), "module.")
    out = tmp_path / "run"
    proc = run_script("plan.py", "task=point_maze", f"world_model=vjepa2:{path}", "+vjepa2.encoder_num_heads=1",
                      "+vjepa2.predictor_num_heads=1", "planner=vjepa2_ac", "planner.horizon=1", "planner.samples=16",
                      "planner.iterations=2", "planner.elites=4", "episodes=1", "max_steps=4", "num_envs=1",
                      "video=false", "threads=1", f"out_dir={out}", timeout=120)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 1 and summary["world_model"] == str(path), proc.stdout[-2000:]
    assert "planner cem" in proc.stdout


# ------------------------------------------------------------------------- against the release (optional)
@pytest.mark.skipif(not os.environ.get("VJEPA2_OFFICIAL_CHECKOUT"), reason="set VJEPA2_OFFICIAL_CHECKOUT to a vjepa2 checkout")
def test_matches_official_code(ac_file: Path, wm: OfficialWorldModel) -> None:
    """Encoder and predictor outputs equal the release's own classes (imported from the checkout)."""
    root = os.environ["VJEPA2_OFFICIAL_CHECKOUT"]
    stubs = {}  # the release imports timm (drop_path, unused at rate 0) and einops (unused here)
    for name in ("timm", "timm.models", "timm.models.layers", "einops"):
        try:
            __import__(name)
        except ImportError:
            stubs[name] = types.ModuleType(name)
    if "timm.models.layers" in stubs:
        stubs["timm.models.layers"].drop_path = lambda x, p, training: x
    if "einops" in stubs:
        stubs["einops"].rearrange = None
    sys.path.insert(0, root)
    sys.modules.update(stubs)
    try:
        from src.models.ac_predictor import vit_ac_predictor
        from src.models.vision_transformer import VisionTransformer as OfficialVT
    finally:
        sys.path.remove(root)
        for name in [*stubs, *(m for m in sys.modules if m == "src" or m.startswith("src."))]:
            sys.modules.pop(name, None)
    sd = torch.load(ac_file, weights_only=True)
    enc = OfficialVT(img_size=(IMG, IMG), patch_size=PATCH, num_frames=4, embed_dim=D, depth=2, num_heads=HEADS,
                     mlp_ratio=3.0, use_rope=True, norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6)).eval()
    enc.load_state_dict({k[len("module."):]: v for k, v in sd["encoder"].items()})
    pred = vit_ac_predictor(img_size=(IMG, IMG), patch_size=PATCH, num_frames=8, embed_dim=D, predictor_embed_dim=E,
                            depth=2, num_heads=HEADS, use_rope=True).eval()
    pred.load_state_dict({k[len("module."):]: v for k, v in sd["predictor"].items()})
    with torch.no_grad():
        clip = torch.randn(2, 3, 4, IMG, IMG)
        assert (wm.encoder(clip) - enc(clip)).abs().max() <= 5e-5
        N = (IMG // PATCH) ** 2
        x, a, s = torch.randn(2, 2 * N, D), torch.randn(2, 2, 7), torch.randn(2, 2, 7)
        assert (wm.predictor(x, a, s) - pred(x, a, s)).abs().max() <= 5e-5
