"""Pretrain a V-JEPA-style video encoder on an episode dataset's frames.

    python scripts/pretrain_encoder.py data_dir=data/pointmaze out_dir=runs/encoder steps=2000
    torchrun --standalone --nproc_per_node=N scripts/pretrain_encoder.py ...   # data-parallel (gloo/NCCL)

Writes ``out_dir/encoder.pt`` (the frozen EMA target encoder, type ``vit``), ``out_dir/log.jsonl``,
``out_dir/tb/`` (TensorBoard curves with ``tensorboard=true`` and the ``wmplan[tensorboard]``
extra) and ``out_dir/train_state.pt``; rerunning with the same ``out_dir`` resumes from the latter
(models, optimizer, RNG states, log). The lr / EMA schedules are functions of (step, steps),
so resuming with a larger ``steps`` continues on the stretched schedule. ``steps=0`` writes the
random-init encoder of the same config and seed: the baseline of the pretraining ablation.

Reliability: settings are checked before any work (ConfigError naming field and value). A
resume refuses other data (dataset fingerprint) or any change of ``RESUME_KEYS`` (data_dir,
seeds, optimisation, clips, masks, model), naming what changed; ``steps`` may grow, and
``log_every``, ``ckpt_every``, ``device``, ``threads``, ``tensorboard``, ``ram_budget_mb``, ``amp``,
``finite_check`` and the world size may change. The train
episodes of the first run are recorded and reused. A NaN/inf loss or gradient norm stops
training naming the step and the batch's episodes; nothing non-finite is saved.

``ram_budget_mb`` (null = all training frames in RAM): the frames are decoded episode by episode
into ``out_dir/frames.bin`` (uint8 ``[F, H, W, 3]``, rewritten each run, removed at the end) and
memory-mapped when they exceed the budget; clips are gathered from the map.

``amp=true``: bf16 autocast of the forward pass and loss (``worldmodel/train_loop.py``); weights,
optimizer, EMA target, diagnostics and ``VJEPA.loss``'s L1 mean stay fp32. ``finite_check``: ``step`` checks the loss and
gradient norm every step before the update (and syncs for the progress bar's loss), ``deferred``
keeps them on the device until the next log line or checkpoint (naming the first non-finite step);
``auto`` = step on CPU, deferred on CUDA. TF32 matmuls are allowed on CUDA.

Distributed (``torchrun``, ``WORLD_SIZE`` > 1; ``worldmodel/distributed.py``): ``batch_size`` is
the GLOBAL batch. Every rank draws the same global clips and masks from the same generator and
trains on its 1/N rows; gradients are averaged over ranks, so the run follows the one-process
run up to float reduction order (the world size may change on resume). Rank 0 alone writes
``train_state.pt``, the logs, TensorBoard and ``encoder.pt``; the diagnostics use the global batch.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

import wmplan.config_store  # noqa: F401  (registers the structured configs)
from wmplan.checks import ConfigError, check_choice, first_nonfinite
from wmplan.io import atomic_write_bytes, remove_stale_temps
from wmplan.worldmodel import distributed as ddp
from wmplan.worldmodel.data import EpisodeDataset
from wmplan.worldmodel.fingerprint import dataset_fingerprint
from wmplan.worldmodel.latent_cache import open_raw
from wmplan.worldmodel.masks import MaskSpec, sample_masks
from wmplan.worldmodel.registry import save_encoder
from wmplan.worldmodel.utils import (FORMAT_VERSION, CheckpointError, ProgressBar, TensorBoardLog, atomic_save,
                                     check_bool, check_resume, check_settings, check_step_finite, load_checkpoint,
                                     resolve_device, start_job, write_jsonl)
from wmplan.worldmodel.train_loop import FINITE_CHECKS, FiniteGuard, autocast, resolve_finite_check, tf32
from wmplan.worldmodel.vit import VisionTransformer, ViTConfig
from wmplan.worldmodel.vjepa import VJEPA, effective_rank, ema_momentum, ema_update, latent_std, warmup_cosine_lr

log = logging.getLogger("pretrain_encoder")
STATE_KIND = "wmplan-pretrain-state"
COLLAPSE_STD, COLLAPSE_RANK = 0.05, 2.0
# The settings that define a run (with the encoder config and the data fingerprint): a resume
# point refuses any change of them; `steps` may grow, and log/ckpt cadence, device, threads and
# tensorboard may change.
RESUME_KEYS = ("data_dir", "seed", "batch_size", "num_frames", "static_prob", "lr", "final_lr_ratio", "weight_decay",
               "warmup_steps", "grad_clip", "ema", "val_fraction", "split_seed", "jepa_predictor", "masks")
_INT0, _INT1 = {"low": 0, "integer": True}, {"low": 1, "integer": True}
SETTINGS = {"steps": _INT0, "batch_size": _INT1, "num_frames": _INT1, "static_prob": {"low": 0, "high": 1},
            "lr": {"low": 0, "low_open": True}, "final_lr_ratio": {"low": 0, "high": 1}, "weight_decay": {"low": 0},
            "warmup_steps": _INT0, "grad_clip": {"low": 0, "allow_none": True},
            "val_fraction": {"low": 0, "high": 1, "high_open": True}, "split_seed": _INT0, "seed": _INT0,
            "threads": {**_INT0, "allow_none": True}, "log_every": _INT0, "ckpt_every": _INT0,
            "jepa_predictor.dim": _INT1, "jepa_predictor.depth": _INT1, "jepa_predictor.num_heads": _INT1,
            "ram_budget_mb": {"low": 0, "low_open": True, "allow_none": True}}
FRAMES_FILE = "frames.bin"  # ram_budget_mb set: the training frames, raw uint8 [F, H, W, 3]


def validate_settings(cfg: DictConfig) -> None:
    """Raise ConfigError naming the field and value of the first bad setting (before any work)."""
    where = "pretrain_encoder"
    check_settings(cfg, SETTINGS, where)
    check_bool(cfg.tensorboard, "tensorboard", where)
    check_bool(cfg.get("amp", False), "amp", where)
    check_choice(cfg.get("finite_check", "auto"), "finite_check", FINITE_CHECKS, where)
    if len(cfg.ema) != 2:
        raise ConfigError(f"{where}: 'ema' must be [start, end] momenta, got {list(cfg.ema)!r}")
    rules = {"ema.0": {"low": 0, "high": 1}, "ema.1": {"low": 0, "high": 1}}
    if not cfg.masks:
        raise ConfigError(f"{where}: 'masks' must list at least one mask spec")
    for i, m in enumerate(cfg.masks):
        if len(m.scale) != 2 or len(m.aspect_ratio) != 2:
            raise ConfigError(f"{where}: 'masks.{i}' scale and aspect_ratio must be [low, high] pairs, got {m!r}")
        rules.update({f"masks.{i}.num_blocks": _INT1, **{f"masks.{i}.scale.{j}": {"low": 0, "low_open": True, "high": 1}
                      for j in (0, 1)}, **{f"masks.{i}.aspect_ratio.{j}": {"low": 0, "low_open": True} for j in (0, 1)}})
    check_settings(cfg, rules, where)
    ddp.per_rank_batch(int(cfg.batch_size), ddp.DistInfo(world_size=ddp.env_world_size()), where)


def load_frames(ds: EpisodeDataset, ids: list[int], out: Path, ram_budget_mb: float | None, info: ddp.DistInfo
                ) -> tuple[Tensor, list[int], bool]:
    """The frames of episodes ``ids``, concatenated: ``(uint8 [F, H, W, 3], frames per episode,
    memmapped)``. ``ram_budget_mb=None`` holds them in RAM; otherwise rank 0 decodes them episode
    by episode into ``out/FRAMES_FILE`` and every rank reads it into RAM when it fits the budget,
    or memory-maps it."""
    if ram_budget_mb is None:
        frames = [ds.load_episode(i).frames for i in ProgressBar(ids, desc="loading episodes", disable=not info.is_main)]
        return torch.from_numpy(np.concatenate(frames)), [f.shape[0] for f in frames], False
    lengths: list[int] = []
    frame_shape: list[tuple[int, ...]] = [()]

    def write(f) -> None:
        for i in ProgressBar(ids, desc="decoding episodes to disk", disable=not info.is_main):
            fr = ds.load_episode(i).frames  # [T+1, H, W, 3]
            lengths.append(int(fr.shape[0]))
            frame_shape[0] = tuple(fr.shape[1:])
            f.write(np.ascontiguousarray(fr, dtype=np.uint8).tobytes())

    if info.is_main:
        atomic_write_bytes(out / FRAMES_FILE, write)
    lengths, shape = ddp.broadcast_object((lengths, frame_shape[0]), info)
    ddp.barrier(info)
    frames, memmapped = open_raw(out / FRAMES_FILE, (sum(lengths), *shape), np.uint8, ram_budget_mb)
    return frames, lengths, memmapped


class ClipSampler:
    """Random clips of consecutive frames of the training frames (uint8, in RAM or memory-mapped).

    Args:
        frames: uint8 ``[F, H, W, 3]``, the episodes' frames concatenated; lengths: frames per episode.
        num_frames: clip length; tubelet: frames per tubelet (for static clips).
        episode_ids: the dataset ids of the episodes (default 0..n-1); after :meth:`sample`,
            ``last_episode_ids [B]`` says which episode each clip came from (errors name them).
    """

    def __init__(self, frames: Tensor, lengths: list[int], num_frames: int, tubelet: int,
                 episode_ids: list[int] | None = None):
        self.frames = frames  # [F, H, W, 3]
        ids = list(range(len(lengths))) if episode_ids is None else list(episode_ids)
        starts, start_ids, off = [], [], 0
        for i, length in zip(ids, lengths):
            n = length - num_frames + 1  # valid clip starts stay inside the episode
            starts.append(torch.arange(off, off + max(n, 0)))
            start_ids.append(torch.full((max(n, 0),), int(i)))
            off += length
        self.starts = torch.cat(starts)
        self.start_ids = torch.cat(start_ids)
        self.last_episode_ids: Tensor | None = None
        if self.starts.numel() == 0:
            raise ValueError(f"no episode has >= {num_frames} frames")
        self.offsets = torch.arange(num_frames)  # [T] consecutive frames
        # Static clip: each tubelet holds one frame repeated, i.e. what encode() feeds the encoder.
        self.static_offsets = torch.arange(num_frames // tubelet).repeat_interleave(tubelet)

    def sample(self, batch: int, static_prob: float, gen: torch.Generator) -> Tensor:
        """uint8 ``[B, T, H, W, 3]``."""
        pick = torch.randint(0, self.starts.numel(), (batch,), generator=gen)
        s, self.last_episode_ids = self.starts[pick], self.start_ids[pick]
        static = torch.rand(batch, generator=gen) < static_prob
        offs = torch.where(static.unsqueeze(1), self.static_offsets, self.offsets)  # [B, T]
        return self.frames[s.unsqueeze(1) + offs]


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms and the mask token (1-D params)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def diagnostics(model: VJEPA, clip: Tensor) -> dict[str, float]:
    """Collapse diagnostics on the target encoder's per-frame features of the batch's first frames
    (NaN when those features are not finite: the SVD of the rank would fail on them)."""
    z = model.target_encoder.encode(clip[:, :1])[:, 0]  # [B, N, D]
    if first_nonfinite(z) is not None:
        return {"latent_std": math.nan, "eff_rank": math.nan, "pooled_std": math.nan}
    tok = torch.nn.functional.layer_norm(z, z.shape[-1:]).flatten(0, 1)  # [B*N, D]
    return {
        "latent_std": latent_std(tok),
        "eff_rank": effective_rank(tok),
        "pooled_std": latent_std(z.mean(1)),  # k=1 pooled latent across the batch
    }


def train(cfg: DictConfig) -> dict:
    """Run (or resume) pretraining; returns the encoder file's meta (every rank). Joins the
    torchrun process group when ``WORLD_SIZE`` > 1."""
    validate_settings(cfg)
    device = resolve_device(cfg.device)
    with tf32(device):  # CUDA only; the flags are restored afterwards
        return ddp.launch(_train, cfg, device)


def _train(cfg: DictConfig, device: torch.device, info: ddp.DistInfo) -> dict:
    main = info.is_main
    if not main:  # rank 0 alone reports (the other ranks still raise their errors)
        log.setLevel(logging.WARNING)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if main:
        for tmp in remove_stale_temps(out):
            log.info("removed %s (a temp file of a killed run)", tmp)
    start_job(cfg.threads, cfg.seed, device)  # threads=1 is much faster on a CPU shared with other jobs
    spec = OmegaConf.to_container(cfg.encoder, resolve=True)
    tag = spec.pop("type", "vit")
    if tag != VisionTransformer.type_tag:
        raise ValueError(f"pretrain_encoder trains the V-JEPA ViT (encoder type 'vit'), not encoder type {tag!r}; "
                         f"a frozen encoder of another type goes straight to train_predictor (encoder={tag} ...)")
    vit_cfg = ViTConfig.from_dict(spec)
    if cfg.num_frames % vit_cfg.tubelet:
        raise ValueError(f"num_frames={cfg.num_frames} must be a multiple of encoder.tubelet={vit_cfg.tubelet}")

    ds = EpisodeDataset(cfg.data_dir).require_complete()  # meta.json's num_episodes vs the files present
    fingerprint = dataset_fingerprint(ds.root)
    run_keys = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                for k in RESUME_KEYS}
    run_keys["data_dir"] = str(cfg.data_dir)
    run_keys["encoder"] = vit_cfg.to_dict()
    state_path = out / "train_state.pt"
    st = None
    if state_path.exists():  # checked before loading any frames: a refused resume costs nothing
        st = load_checkpoint(state_path, kind=STATE_KIND)
        missing = [k for k in ("step", "model", "optimizer", "generator", "torch_rng", "log", "train_ids") if k not in st]
        check_resume(state_path, st.get("run_keys"), run_keys, st.get("dataset_fingerprint"), fingerprint)
        if missing:
            raise CheckpointError(f"checkpoint {state_path}: missing field(s) {missing}")
        if int(st["step"]) > cfg.steps:
            raise CheckpointError(f"{state_path}: the saved run is at step {st['step']}, beyond steps={cfg.steps}; "
                                  f"steps may only grow on resume (or start fresh with out_dir=<a new folder>)")
        train_ids = list(st["train_ids"])  # fixed at the first run
    else:
        train_ids, _ = ds.split(cfg.val_fraction, cfg.split_seed)
    frames, lengths, memmapped = load_frames(ds, train_ids, out, cfg.get("ram_budget_mb"), info)
    if tuple(frames.shape[1:3]) != (vit_cfg.img_size, vit_cfg.img_size):
        raise ValueError(f"dataset frames are {tuple(frames.shape[1:3])}, encoder.img_size={vit_cfg.img_size}")
    sampler = ClipSampler(frames, lengths, cfg.num_frames, vit_cfg.tubelet, train_ids)
    log.info("data: %d train episodes, %d frames (%.1f MiB%s), %d clip starts", len(train_ids), len(frames),
             frames.numel() / 2**20, ", memory-mapped" if memmapped else "", len(sampler.starts))

    p = cfg.jepa_predictor
    model = VJEPA(vit_cfg, p.dim, p.depth, p.num_heads).to(device)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    specs = [MaskSpec(m.num_blocks, tuple(m.scale), tuple(m.aspect_ratio)) for m in cfg.masks]
    gen = torch.Generator().manual_seed(cfg.seed)  # clips + masks, on CPU: device-independent, same on every rank
    rows = ddp.shard_slice(int(cfg.batch_size), info)  # this rank's rows of the global batch
    entries: list[dict] = []
    step = 0

    if st is not None:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        step, entries = int(st["step"]), list(st["log"])
        log.info("resuming from step %d (%s)", step, state_path)

    def save_state() -> None:
        finite.flush()  # deferred checks first: nothing non-finite is saved
        if not main:
            return
        atomic_save({
            "world_size": info.world_size, "kind": STATE_KIND, "version": FORMAT_VERSION, "step": step, "model": model.state_dict(),
            "optimizer": opt.state_dict(), "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "encoder_config": vit_cfg.to_dict(), "run_keys": run_keys, "dataset_fingerprint": fingerprint,
            "train_ids": train_ids, "log": entries,
        }, state_path)

    grid = (cfg.num_frames // vit_cfg.tubelet, *model.encoder.grid)
    tb = TensorBoardLog(out / "tb", cfg.tensorboard and main, purge_step=step + 1 if step else None)
    bar = ProgressBar(None, total=cfg.steps, desc="pretrain", initial=step, disable=not main)
    loss_sum, loss_n, t0 = 0.0, 0, time.time()
    hint = (f"Lower lr (now {cfg.lr:g}) or check those episodes; the last resume point (if any) is {state_path}, "
            f"written every ckpt_every={cfg.ckpt_every} steps.")
    amp, fmode = bool(cfg.get("amp", False)), resolve_finite_check(cfg.get("finite_check", "auto"), device)
    finite = FiniteGuard(fmode, "pretrain_encoder", hint)
    model.train()
    while step < cfg.steps:
        lr = warmup_cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.final_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        clip = sampler.sample(cfg.batch_size, cfg.static_prob, gen)  # the global batch (diagnostics use it)
        x = model.encoder.frames_to_input(clip[rows])
        masks = [sample_masks(cfg.batch_size, *grid, spec, gen) for spec in specs]
        with autocast(device, amp):
            loss = model.loss(x, [m[0][rows] for m in masks], [m[1][rows] for m in masks]).float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if info.enabled:  # the global-batch gradient and loss on every rank
            ddp.all_reduce_grads(model, info)
            loss = ddp.all_reduce_mean(loss.detach().clone(), info)
        guard = {"loss": loss}
        if cfg.grad_clip:
            guard["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        finite.record(guard, step + 1, sampler.last_episode_ids)  # step mode: checked before the update
        opt.step()
        momentum = ema_momentum(step, cfg.steps, *cfg.ema)
        ema_update(model.target_encoder, model.encoder, momentum)
        step += 1
        if fmode == "step":
            loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
            bar.update(1, loss=loss.item())
        else:  # no host sync: the sum stays on the device until the log line
            loss_sum, loss_n = loss.detach() + loss_sum, loss_n + 1
            bar.update(1)

        if (cfg.log_every and step % cfg.log_every == 0) or step == cfg.steps:
            finite.flush()  # every rank, before the diagnostics and the log
        if main and ((cfg.log_every and step % cfg.log_every == 0) or step == cfg.steps):
            diag = diagnostics(model, clip)
            check_step_finite({k: torch.tensor(v) for k, v in diag.items()}, step, sampler.last_episode_ids,
                              "pretrain_encoder", hint, after_update=True)
            e = {"step": step, "loss": float(loss_sum) / loss_n, "lr": lr, "momentum": momentum,
                 **diag, "sec_per_step": (time.time() - t0) / loss_n}
            entries.append(e)
            tb.scalars(step, {"loss": e["loss"], "lr": lr, "ema_momentum": momentum}, "train/")
            tb.scalars(step, {k: e[k] for k in ("latent_std", "eff_rank", "pooled_std")}, "collapse/")
            tb.scalars(step, {"sec_per_step": e["sec_per_step"]}, "perf/")
            loss_sum, loss_n, t0 = 0.0, 0, time.time()
            log.info("step %d loss %.4f lr %.2e momentum %.5f latent_std %.3f eff_rank %.1f pooled_std %.3f",
                     step, e["loss"], lr, momentum, e["latent_std"], e["eff_rank"], e["pooled_std"])
            if e["latent_std"] < COLLAPSE_STD or e["eff_rank"] < COLLAPSE_RANK:
                log.warning("WARNING: representation collapse at step %d (latent_std %.4f < %.2f or eff_rank %.2f < %.1f)",
                            step, e["latent_std"], COLLAPSE_STD, e["eff_rank"], COLLAPSE_RANK)
            write_jsonl(out / "log.jsonl", entries)
        if cfg.ckpt_every and step % cfg.ckpt_every == 0:
            save_state()
    bar.close()
    tb.close()

    save_state()  # so a rerun with a larger `steps` continues from here
    if main:
        write_jsonl(out / "log.jsonl", entries)  # the log lives in train_state.pt: a torn log.jsonl is rewritten whole
    final_loss = entries[-1]["loss"] if entries else None  # steps=0: the random-init encoder
    meta = {"seed": int(cfg.seed), "steps": int(step), "data_dir": str(Path(cfg.data_dir).resolve()),
            "final_loss": None if final_loss is None else float(final_loss), "num_frames": int(cfg.num_frames),
            "env_id": str(ds.meta.get("env_id", "")), "dataset_sha256": fingerprint["sha256"],
            "train_episode_ids": train_ids, "world_size": info.world_size, "frames_memmapped": memmapped}
    if main:
        save_encoder(model.target_encoder, out / "encoder.pt", meta)
        log.info("wrote %s (final loss %s)", out / "encoder.pt", final_loss)
    ddp.barrier(info)
    if main:
        (out / FRAMES_FILE).unlink(missing_ok=True)  # rebuilt by every run (open maps keep their pages)
    return meta


@hydra.main(version_base="1.3", config_path="../configs", config_name="pretrain_encoder")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
