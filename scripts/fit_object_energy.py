"""Fit the object subspace of a world model's latents for the ``object_goal`` energy.

    python scripts/fit_object_energy.py world_model=runs/push_t_pred/world_model.pt data_dir=data/push_t
    python scripts/fit_object_energy.py ... state_dims=[1,2]    # also report the block-distance correlation

Encodes the dataset's frames with the model (the planning latents), regresses them on the
agent's proprio and keeps the ``k`` directions with the most unexplained variance relative to
the explained (``worldmodel/object_subspace.py``). No object labels are used; ``state_dims``
only reports how the full and the projected latent distances over 25 env steps correlate with
the displacement of those simulator-state columns and of the proprio. Writes ``out`` (default
``<world model>.object.pt``), atomically.
"""
from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from wmplan.checks import ConfigError
from wmplan.worldmodel.data import EpisodeDataset
from wmplan.worldmodel.object_subspace import fit_object_projection, save_object_projection
from wmplan.worldmodel.pretrained_models import resolve_model_path
from wmplan.worldmodel.utils import start_job
from wmplan.worldmodel.world_model import WorldModel

LAG = 25  # env steps between the frames of a correlation pair (the dataset-goal offset)


def _correlations(z: np.ndarray, q: np.ndarray, ends: np.ndarray, states: np.ndarray, proprio: np.ndarray,
                  dims: list[int], seed: int) -> dict[str, dict[str, float]]:
    """Pearson correlation of the full / projected squared distance between frames LAG apart with
    the displacement of ``states[:, dims]`` and of the proprio."""
    rng, i = np.random.default_rng(seed), []
    for a, b in zip(ends[:-1], ends[1:]):
        if b - a > LAG:
            i.extend(rng.integers(a, b - LAG, size=20))
    i = np.asarray(i)
    j = i + LAG
    obj = np.linalg.norm(states[i][:, dims] - states[j][:, dims], axis=1)
    agent = np.linalg.norm(proprio[i] - proprio[j], axis=1)
    out = {}
    for name, x in (("full", z), ("object", q)):
        d = ((x[i] - x[j]) ** 2).mean(1)
        out[name] = {"state_dims": float(np.corrcoef(d, obj)[0, 1]), "proprio": float(np.corrcoef(d, agent)[0, 1])}
    return out


@hydra.main(version_base="1.3", config_path="../configs", config_name="fit_object_energy")
def main(cfg: DictConfig) -> None:
    device = start_job(cfg.threads, cfg.seed, cfg.device)
    wm_path = resolve_model_path(cfg.world_model)
    wm = WorldModel.load(wm_path, device=device)
    ds = EpisodeDataset(cfg.data_dir)
    ids = ds.episode_ids if cfg.episodes is None else ds.episode_ids[: int(cfg.episodes)]
    lat, prop, states, ends = [], [], [], [0]
    for e in ids:
        ep = ds.load_episode(e)
        with torch.no_grad():
            z = wm.encode(torch.from_numpy(ep.frames)[None], chunk_size=int(cfg.batch_size))[0]
        lat.append(z.float().cpu())
        prop.append(torch.from_numpy(ep.proprio))
        states.append(ep.states)
        ends.append(ends[-1] + len(ep.frames))
    latents, proprio = torch.cat(lat), torch.cat(prop)
    fit = fit_object_projection(latents, proprio, int(cfg.k), int(cfg.num_features), float(cfg.bandwidth),
                                float(cfg.ridge), int(cfg.seed))
    out = Path(cfg.out) if cfg.out else wm_path.with_suffix(".object.pt")
    settings = {**OmegaConf.to_container(cfg, resolve=True), "episode_ids": list(map(int, ids)),
                "frames": int(len(latents)), "data_dir": str(Path(cfg.data_dir).resolve())}
    if cfg.state_dims is not None:
        dims = list(cfg.state_dims)
        st = np.concatenate(states)
        if st.shape[1] == 0 or max(dims) >= st.shape[1]:
            raise ConfigError(f"fit_object_energy: state_dims {dims} out of range for states of width {st.shape[1]} in {cfg.data_dir}")
        z = latents.flatten(1).numpy()
        q = (latents.flatten(1) @ fit["projection"]).numpy()
        settings["correlations"] = _correlations(z, q, np.asarray(ends), st, proprio.numpy(), dims, int(cfg.seed))
        for name, c in settings["correlations"].items():
            print(f"{name:>7} latent distance over {LAG} steps: corr with state{dims} displacement "
                  f"{c['state_dims']:.3f}, with proprio displacement {c['proprio']:.3f}")
    save_object_projection(fit, out, latents.shape[1], latents.shape[2], wm_path, settings)
    print(f"{len(latents)} frames of {len(ids)} episodes; proprio explains {fit['explained_by_proprio']:.3f} of the "
          f"latent variance; kept k={cfg.k} directions (top eigenvalue {float(fit['eigenvalues'][0]):.1f}, "
          f"last {float(fit['eigenvalues'][-1]):.1f})\nwrote {out}")


if __name__ == "__main__":
    main()
