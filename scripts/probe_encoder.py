"""Linear probe: does a frozen encoder's latent encode the agent's (or the object's) position?

    python scripts/probe_encoder.py encoder_path=runs/encoder/encoder.pt data_dir=data/pointmaze pool_k=1
    python scripts/probe_encoder.py ... data_dir=data/push_t target=state "target_dims=[1,2]"   # the T block

Fits ridge regression latents -> <target>[:, target_dims] on training episodes (``target`` is
``proprio`` or ``state``, the simulator state, where the object lives) and reports R^2
on held-out episodes, for the given encoder and for a random-init encoder of the same config.
Writes ``out_dir/probe.json``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import wmplan.config_store  # noqa: F401  (registers the structured configs)
from wmplan.checks import ConfigError, check_choice
from wmplan.io import write_json
from wmplan.worldmodel.data import EpisodeDataset
from wmplan.worldmodel.probe import encode_features, fit_ridge, r2_score
from wmplan.worldmodel.registry import build_encoder, component_type, load_encoder
from wmplan.worldmodel.utils import start_job

log = logging.getLogger("probe_encoder")


TARGETS = ("proprio", "state")


def gather_frames(ds: EpisodeDataset, ids: list[int], target: str, dims: list[int], max_frames: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, torch.Tensor]:
    """Frames ``[M, H, W, 3]`` and targets ``[M, len(dims)]`` (columns ``dims`` of the episodes'
    ``proprio`` or ``states``), subsampled to ``max_frames`` (order kept, so rows stay grouped by episode)."""
    frames, ys = [], []
    for i in ids:
        ep = ds.load_episode(i)
        values = ep.proprio if target == "proprio" else ep.states
        if dims and max(dims) >= values.shape[1]:
            raise ConfigError(f"probe_encoder: target_dims {dims} out of range for {target} of width "
                              f"{values.shape[1]} in {ds.root} episode {i}")
        frames.append(ep.frames)
        ys.append(values[:, dims])
    f, y = np.concatenate(frames), np.concatenate(ys)
    if len(f) > max_frames:
        keep = np.sort(rng.choice(len(f), size=max_frames, replace=False))
        f, y = f[keep], y[keep]
    return f, torch.from_numpy(y.astype(np.float64))


def probe(cfg: DictConfig) -> dict:
    device = start_job(cfg.threads, cfg.seed, cfg.device)
    encoder = load_encoder(cfg.encoder_path, device)
    torch.manual_seed(cfg.seed)
    random_encoder = build_encoder(component_type(encoder), encoder.config.to_dict())
    random_encoder = random_encoder.to(device).eval().requires_grad_(False)

    ds = EpisodeDataset(cfg.data_dir)
    train_ids, val_ids = ds.split(cfg.val_fraction, cfg.split_seed)
    if not val_ids:
        raise ValueError(f"dataset {cfg.data_dir} has too few episodes for a held-out split")
    dims, target = list(cfg.target_dims), str(cfg.get("target", "proprio"))
    check_choice(target, "target", TARGETS, "probe_encoder")
    rng = np.random.default_rng(cfg.seed)
    f_tr, y_tr = gather_frames(ds, train_ids, target, dims, cfg.max_train_frames, rng)
    f_va, y_va = gather_frames(ds, val_ids, target, dims, cfg.max_val_frames, rng)
    log.info("probe: %d train frames (%d episodes), %d val frames (%d episodes)",
             len(f_tr), len(train_ids), len(f_va), len(val_ids))

    lams = list(cfg.lams)
    results = {}
    for name, enc in (("trained", encoder), ("random", random_encoder)):
        x_tr = encode_features(enc, f_tr, cfg.features, cfg.pool_k, cfg.batch_size)
        x_va = encode_features(enc, f_va, cfg.features, cfg.pool_k, cfg.batch_size)
        ridge = fit_ridge(x_tr, y_tr, lams)
        results[name] = {"r2_train": r2_score(ridge.predict(x_tr), y_tr),
                         "r2_val": r2_score(ridge.predict(x_va), y_va), "lam": ridge.lam, "dim": x_tr.shape[1]}

    feat = f"{cfg.features}" + (f" k={cfg.pool_k}" if cfg.features == "pooled" else "")
    print(f"\nlinear probe latents -> {target}{dims}  ({feat}, held-out episodes)")
    print(f"{'encoder':<10} {'R2 val':>8} {'R2 train':>9} {'lambda':>8} {'dim':>6}")
    for name, r in results.items():
        print(f"{name:<10} {r['r2_val']:>8.4f} {r['r2_train']:>9.4f} {r['lam']:>8.0e} {r['dim']:>6d}")

    report = {
        "r2_trained": results["trained"]["r2_val"], "r2_random": results["random"]["r2_val"],
        "target": target, "target_dims": dims, "details": results, "encoder_path": str(Path(cfg.encoder_path).resolve()),
        "encoder_meta": getattr(encoder, "meta", {}), "config": OmegaConf.to_container(cfg, resolve=True),
        "num_train_frames": len(f_tr), "num_val_frames": len(f_va),
    }
    write_json(Path(cfg.out_dir) / "probe.json", report)
    return report


@hydra.main(version_base="1.3", config_path="../configs", config_name="probe_encoder")
def main(cfg: DictConfig) -> None:
    probe(cfg)


if __name__ == "__main__":
    main()
