"""Train a goal-conditioned policy on a world model's latents (goal-conditioned BC with hindsight goals).

    python scripts/train_policy.py data_dir=data/arm_push world_model=pretrained:arm_push out_dir=runs/arm_push_policy

The world model's frozen encoder encodes the dataset once (``out_dir/latent_cache.pt``, reused
while the data and encoder are unchanged); the policy learns the data's actions from the latents
of a frame, a frame up to ``max_offset`` predictor steps later (the goal) and the proprio
(``worldmodel/policy_training.py``). Writes ``policy.pt`` (atomic; refuses non-finite weights),
``metrics.json`` (validation MSE against the actions' variance, the seed, the data and model
files) and ``log.jsonl``. A rerun retrains from the start: the whole run is about a minute.
Plan with it: ``plan.py planner=policy prior=<out_dir>/policy.pt`` (no search), or
``prior=<file>`` on any other planner (the search starts from the policy's plan).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import wmplan.config_store  # noqa: F401  (registers the structured configs)
from wmplan.checks import ConfigError, check_number
from wmplan.io import write_json
from wmplan.worldmodel.data import EpisodeDataset
from wmplan.worldmodel.fingerprint import file_sha256
from wmplan.worldmodel.goal_policy import GoalPolicy, GoalPolicyConfig, latent_space_fingerprint, space_of
from wmplan.worldmodel.latent_cache import build_latent_cache
from wmplan.worldmodel.policy_training import HindsightSampler, policy_loss
from wmplan.worldmodel.pretrained_models import resolve_model_path
from wmplan.worldmodel.utils import ProgressBar, check_step_finite, start_job, write_jsonl
from wmplan.worldmodel.world_model import WorldModel

WHERE = "train_policy"


def check_config(cfg: DictConfig) -> None:
    for f, low in (("steps", 1), ("batch_size", 1), ("hidden", 1), ("depth", 1), ("max_offset", 1),
                   ("val_samples", 1), ("eval_every", 1), ("encode_batch_size", 1)):
        check_number(cfg[f], f, WHERE, low=low, integer=True)
    check_number(cfg.lr, "lr", WHERE, low=0, low_open=True)
    check_number(cfg.weight_decay, "weight_decay", WHERE, low=0)
    check_number(cfg.dropout, "dropout", WHERE, low=0, high=1, high_open=True)
    check_number(cfg.val_fraction, "val_fraction", WHERE, low=0, high=1, low_open=True, high_open=True)
    check_number(cfg.seed, "seed", WHERE, low=0, integer=True)


def train(cfg: DictConfig) -> dict:
    check_config(cfg)
    device = start_job(cfg.threads, cfg.seed, cfg.device)
    out = Path(cfg.out_dir)
    model_path = resolve_model_path(str(cfg.world_model))
    wm = WorldModel.load(model_path, device="cpu")  # latents are gathered on the CPU; the MLP trains on `device`
    ds = EpisodeDataset(cfg.data_dir).require_complete()
    a_env = int(ds.meta["action_dim"])
    if a_env * wm.frameskip != wm.action_dim:
        raise ConfigError(f"{WHERE}: data_dir={cfg.data_dir} has {a_env}-D actions; world_model={cfg.world_model} "
                          f"takes {wm.action_dim // wm.frameskip}-D env actions (x frameskip {wm.frameskip})")
    trained_on = wm.meta.get("env_id")
    if trained_on and ds.meta.get("env_id") and trained_on != ds.meta["env_id"]:
        raise ConfigError(f"{WHERE}: data_dir={cfg.data_dir} is env {ds.meta['env_id']!r}; world_model="
                          f"{cfg.world_model} was trained on {trained_on!r}")
    cache = build_latent_cache(ds, wm.encoder, None, wm.pool_k, out, batch_size=int(cfg.encode_batch_size))
    train_ids, val_ids = ds.split(float(cfg.val_fraction), int(cfg.seed))
    pos = {e: i for i, e in enumerate(cache.episode_ids)}
    train_set = HindsightSampler(cache, [pos[e] for e in train_ids], wm, int(cfg.max_offset))
    val_set = HindsightSampler(cache, [pos[e] for e in val_ids], wm, int(cfg.max_offset))
    val = val_set.sample(int(cfg.val_samples), torch.Generator().manual_seed(int(cfg.seed) + 1))
    val_var = float(val.actions.var(0).mean())

    policy = GoalPolicy(GoalPolicyConfig(**space_of(wm), hidden=int(cfg.hidden), depth=int(cfg.depth),
                                         dropout=float(cfg.dropout))).to(device)
    opt = torch.optim.AdamW(policy.parameters(), lr=float(cfg.lr), weight_decay=float(cfg.weight_decay))
    steps = int(cfg.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    gen = torch.Generator().manual_seed(int(cfg.seed))
    val = val.to(device)
    log, t0 = [], time.time()
    bar = ProgressBar(total=steps, desc="train policy")

    def evaluate(step: int, train_loss: float) -> None:
        policy.eval()
        with torch.no_grad():
            v = float(policy_loss(policy, val))
        policy.train()
        log.append({"step": step, "train_mse": train_loss, "val_mse": v, "val_explained": 1 - v / val_var,
                    "seconds": round(time.time() - t0, 1)})

    policy.train()
    for step in range(1, steps + 1):
        batch = train_set.sample(int(cfg.batch_size), gen).to(device)
        loss = policy_loss(policy, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        check_step_finite({"loss": loss.detach()}, step, None, WHERE)
        opt.step()
        sched.step()
        bar.update(1, loss=f"{float(loss):.4f}")
        if step % int(cfg.eval_every) == 0 or step == steps:
            evaluate(step, float(loss))
    bar.close()
    final = log[-1]
    policy.eval()
    policy.meta = {"seed": int(cfg.seed), "data_dir": str(Path(cfg.data_dir).resolve()),
                   "world_model": str(model_path), "world_model_sha256": file_sha256(model_path),
                   "latent_space": latent_space_fingerprint(wm),
                   "train_episodes": len(train_ids), "val_episodes": len(val_ids),
                   "config": OmegaConf.to_container(cfg, resolve=True),
                   "metrics": {k: final[k] for k in ("val_mse", "val_explained")}}
    policy.cpu().save(out / "policy.pt")
    write_jsonl(out / "log.jsonl", log)
    metrics = {**policy.meta, "val_action_variance": val_var, "steps": steps, "windows_train": len(train_set),
               "device": str(device)}
    write_json(out / "metrics.json", metrics)
    print(f"[train_policy] val MSE {final['val_mse']:.4f} (actions' variance {val_var:.4f}: "
          f"{100 * final['val_explained']:.1f}% explained) -> {out / 'policy.pt'}")
    return metrics


@hydra.main(config_path="../configs", config_name="train_policy", version_base=None)
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
