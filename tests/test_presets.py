"""Size presets (issue 11, item 4): ``encoder=<p>`` and ``predictor=<p>`` for p in tiny | S | B |
vjepa2_ac compose through Hydra, build on the meta device (no memory, no init cost) and have the
sizes their yaml files state, within 10%."""
from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import wmplan.config_store  # noqa: F401  (registers the structured configs)
from tests.conftest import ROOT
from wmplan.worldmodel.predictor import ACPredictor, ACPredictorConfig
from wmplan.worldmodel.vit import ViTConfig, VisionTransformer

# preset -> (encoder params, tokens per frame the predictor sees, predictor params, pool_k)
SIZES = {
    "tiny": (0.84e6, 4, 0.88e6, 2),       # today's CPU default (vit_tiny + ac_small, pool_k=2)
    "S": (21.7e6, 196, 21e6, None),      # DINO-WM / LeWM scale
    "B": (86e6, 196, 86e6, None),
    "vjepa2_ac": (1.0e9, 256, 300e6, None),  # V-JEPA 2 ViT-g/16 + the 2-AC predictor shape
}


def _build(preset: str) -> tuple[VisionTransformer, ACPredictor]:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train_predictor", overrides=[f"encoder={preset}", f"predictor={preset}", "data_dir=x"])
    enc_cfg = {k: v for k, v in OmegaConf.to_container(cfg.encoder).items() if k != "type"}
    pred_cfg = {k: v for k, v in OmegaConf.to_container(cfg.predictor).items() if k != "type"}
    ecfg = ViTConfig(**enc_cfg)
    side = ecfg.img_size // ecfg.patch_size
    pool_k = SIZES[preset][3]
    grid = (side, side) if pool_k is None else (pool_k, pool_k)
    with torch.device("meta"):
        enc = VisionTransformer(ecfg)
        pred = ACPredictor(ACPredictorConfig(latent_dim=ecfg.embed_dim, tokens_per_frame=grid[0] * grid[1], grid=grid,
                                             action_dim=7, proprio_dim=7, **pred_cfg))
    return enc, pred


@pytest.mark.parametrize("preset", sorted(SIZES))
def test_preset_sizes(preset):
    enc, pred = _build(preset)
    enc_params, tokens, pred_params, _ = SIZES[preset]
    n_enc = sum(p.numel() for p in enc.parameters())
    assert next(pred.parameters()).device.type == "meta"
    assert abs(n_enc / enc_params - 1) < 0.1, f"{preset} encoder: {n_enc / 1e6:.1f}M"
    assert abs(pred.num_params() / pred_params - 1) < 0.1, f"{preset} predictor: {pred.num_params() / 1e6:.1f}M"
    assert pred.config.tokens_per_frame == tokens
    if preset != "tiny":
        assert tokens >= 196
        c = enc.config
        assert (c.img_size // c.patch_size) ** 2 == tokens  # all patches, no pooling


def test_vjepa2_ac_preset_has_the_released_shape():
    enc, pred = _build("vjepa2_ac")
    c = pred.config
    assert (c.embed_dim, c.depth, c.num_heads) == (1024, 24, 16)
    assert (enc.config.embed_dim, enc.config.depth) == (1408, 40)
    assert enc.blocks[0].mlp.fc1.out_features == 6144


def test_tiny_is_todays_cpu_default():
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        tiny = compose(config_name="train_predictor", overrides=["encoder=tiny", "predictor=tiny", "data_dir=x"])
        old = compose(config_name="train_predictor", overrides=["encoder=vit_tiny", "data_dir=x"])
    assert tiny.encoder == old.encoder and tiny.predictor == old.predictor  # train_predictor's default is ac_small
