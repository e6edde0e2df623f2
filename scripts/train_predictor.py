"""Train an action-conditioned latent predictor on a frozen encoder; writes a WorldModel.

    python scripts/train_predictor.py data_dir=DATA encoder_path=ENC.pt out_dir=runs/predictor
    python scripts/train_predictor.py data_dir=DATA encoder=<name> out_dir=...   # configs/encoder/<name>.yaml
    python scripts/train_predictor.py data_dir=DATA encoder_path=vjepa2:vitg.pt ram_budget_mb=4096 ...
    torchrun --standalone --nproc_per_node=N scripts/train_predictor.py ...   # data-parallel (gloo/NCCL)

The frozen encoder is a file written by ``save_encoder`` (any registered type) or one built
from an encoder config (``type`` + fields, seeded with ``seed``; see ``worldmodel/registry.py``). Outputs in ``out_dir``: ``latent_cache.pt`` (reused across runs),
``train_state.pt`` (resume point, rewritten every ``ckpt_every`` steps; rerunning resumes),
``log.jsonl``, ``metrics.json``, ``tb/`` (TensorBoard curves, with ``tensorboard=true`` and the
``wmplan[tensorboard]`` extra) and the final ``world_model.pt``.

Reliability: settings are checked before any work (ConfigError naming field and value); a
resume refuses other data (dataset fingerprint) or other settings (``RESUME_KEYS``, the encoder
file's sha256 and the predictor config), naming what changed; ``steps`` may grow to continue
training on the stretched schedule, and the logging/eval/checkpoint cadence, ``eval_steps``,
``val_windows``, ``encode_batch_size``, ``device``, ``threads`` and ``tensorboard`` may change
freely, and so may ``ram_budget_mb``, ``num_workers`` and the world size (the sampled windows do not depend on
them), and ``amp``, ``compile`` and ``finite_check`` (see below). The train/val split of the first run is
recorded and reused. A NaN/inf loss or gradient norm stops training naming the step and the batch's
episodes; nothing non-finite is saved.

Precision and speed (``worldmodel/train_loop.py``): ``amp=true`` runs the forward pass and loss under bf16
autocast (CPU or CUDA); weights, gradients, optimizer state, loss reduction and evaluation stay fp32.
``compile=true`` runs the loss function (teacher forcing + rollout) through ``torch.compile``. On CUDA,
TF32 matmuls are allowed during training. ``finite_check``: ``step`` checks every step before the update
(one host sync a step), ``deferred`` keeps the checks on the device and runs them at log/eval/checkpoint
boundaries and before every save, naming the first non-finite step; ``auto`` = step on CPU, deferred on
CUDA. ``amp`` may change on resume like ``device`` may: the resume point is fp32 either way, and only the
rounding of later steps changes (a resumed run is then not bit-identical to an uninterrupted one).

``encoder_path=vjepa2:<official file>``: a frozen official V-JEPA 2 encoder
(:func:`~wmplan.worldmodel.vjepa2.load_official_encoder`; ``vjepa2_num_heads`` for non-released
widths; frames at the dataset's ``image_size``). ``ram_budget_mb``: stream the latent cache to
disk and memory-map it when it exceeds the budget (``worldmodel/latent_cache.py``).

Distributed (``torchrun``, ``WORLD_SIZE`` > 1): ``batch_size`` is the GLOBAL batch; every rank
draws the same global window indices and keeps its 1/N share, gradients are averaged over ranks
(``worldmodel/distributed.py``), so N processes follow the one-process loss curve up to float
reduction order (``tests/test_distributed.py``). Rank 0 alone builds the latent cache and writes
checkpoints, logs, TensorBoard, ``metrics.json`` (with ``world_size``) and ``world_model.pt``;
every rank resumes from the same ``train_state.pt``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import wmplan.config_store  # noqa: F401  (registers the structured configs)
from wmplan.checks import check_choice
from wmplan.io import remove_stale_temps, write_json
from wmplan.worldmodel import distributed as ddp
from wmplan.worldmodel.ac_training import (Window, WindowSampler, WindowStream, compute_stats, open_loop_errors,
                                            training_losses)
from wmplan.worldmodel.data import EpisodeDataset
from wmplan.worldmodel.fingerprint import dataset_fingerprint
from wmplan.worldmodel.latent_cache import build_latent_cache
from wmplan.worldmodel.predictor import ACPredictor, ACPredictorConfig
from wmplan.worldmodel.registry import build_encoder, load_encoder
from wmplan.worldmodel.utils import (FORMAT_VERSION, CheckpointError, ProgressBar, TensorBoardLog, atomic_save,
                                     check_bool, check_resume, check_settings, load_checkpoint,
                                     read_jsonl, resolve_device, start_job, write_jsonl)
from wmplan.worldmodel.train_loop import FINITE_CHECKS, FiniteGuard, autocast, maybe_compile, resolve_finite_check, tf32
from wmplan.worldmodel.world_model import WorldModel

STATE_KIND = "wmplan-predictor-train-state"
# The settings that define a run: a resume point refuses any change of them (plus the data
# fingerprint, the encoder's sha256 and the predictor config). Everything else may change on
# resume: `steps` may grow, and logging/eval/checkpoint cadence, eval size, device and threads
# do not touch the trained weights.
RESUME_KEYS = ("data_dir", "encoder_path", "pool_k", "frameskip", "use_proprio", "latent_norm", "cache_dtype",
               "context", "rollout_steps", "loss", "rollout_weight", "proprio_weight", "batch_size", "lr",
               "min_lr_ratio", "weight_decay", "warmup_steps", "grad_clip", "val_fraction", "seed")
_INT0, _INT1 = {"low": 0, "integer": True}, {"low": 1, "integer": True}
SETTINGS = {"pool_k": {**_INT1, "allow_none": True}, "frameskip": _INT1, "encode_batch_size": _INT1, "context": _INT1,
            "rollout_steps": _INT0, "rollout_weight": {"low": 0}, "proprio_weight": {"low": 0}, "steps": _INT1,
            "batch_size": _INT1, "lr": {"low": 0, "low_open": True}, "min_lr_ratio": {"low": 0, "high": 1},
            "weight_decay": {"low": 0}, "warmup_steps": _INT0, "grad_clip": {"low": 0, "allow_none": True},
            "val_fraction": {"low": 0, "high": 1, "high_open": True}, "eval_steps": _INT1, "val_windows": _INT1,
            "seed": _INT0, "threads": {**_INT0, "allow_none": True}, "log_every": _INT0, "eval_every": _INT0,
            "ckpt_every": _INT0, "ram_budget_mb": {"low": 0, "low_open": True, "allow_none": True},
            "vjepa2_num_heads": {**_INT1, "allow_none": True}, "num_workers": _INT0}
VJEPA2 = "vjepa2:"  # encoder_path=vjepa2:<official V-JEPA 2 file>


def validate_settings(cfg: DictConfig) -> None:
    """Raise ConfigError naming the field and value of the first bad setting (before any work)."""
    where = "train_predictor"
    check_settings(cfg, SETTINGS, where)
    check_choice(cfg.loss, "loss", ("l1", "l2"), where)
    check_choice(cfg.latent_norm, "latent_norm", ("none", "global", "dim", None), where)
    check_choice(cfg.cache_dtype, "cache_dtype", ("float16", "float32"), where)
    check_choice(cfg.get("finite_check", "auto"), "finite_check", FINITE_CHECKS, where)
    for k in ("use_proprio", "tensorboard", "amp", "compile"):
        check_bool(cfg.get(k, False), k, where)
    ddp.per_rank_batch(int(cfg.batch_size), ddp.DistInfo(world_size=ddp.env_world_size()), where)


def lr_at(step: int, cfg: DictConfig) -> float:
    """Linear warm-up then cosine decay to ``lr * min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    frac = min(max(frac, 0.0), 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def make_optimizer(model: torch.nn.Module, cfg: DictConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (1-D parameters)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def append_jsonl(path: Path, rec: dict) -> None:
    """Append one record (a kill mid-write can tear the last line; :func:`truncate_log` repairs it)."""
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def truncate_log(path: Path, step: int) -> None:
    """On resume drop log lines written after the resumed checkpoint (they are redone) and
    torn lines of a killed run (with a warning); rewritten atomically."""
    if path.is_file():
        write_jsonl(path, [r for r in read_jsonl(path) if r.get("step", 0) <= step])


def eval_metrics(model: ACPredictor, windows: Window, horizon: int, prefix: str = "val") -> dict:
    """Open-loop (1 context frame) errors of the predictor and the copy-last baseline, and the
    spread of predicted vs target latents across windows (a collapsing predictor's shrinks)."""
    r = open_loop_errors(model, windows)
    return {f"{prefix}_open_loop_l1_{horizon}step": r["pred_l1"], f"{prefix}_copy_last_l1_{horizon}step": r["copy_l1"],
            f"{prefix}_ratio_{horizon}step": r["ratio"], f"{prefix}_open_loop_l1_per_step": r["pred_l1_per_step"],
            f"{prefix}_copy_last_l1_per_step": r["copy_l1_per_step"], f"{prefix}_pred_std": r["pred_std"],
            f"{prefix}_target_std": r["target_std"]}


def tb_eval(m: dict, horizon: int, prefix: str = "val") -> dict[str, float]:
    """The TensorBoard view of :func:`eval_metrics` (short tags)."""
    return {"open_loop_l1": m[f"{prefix}_open_loop_l1_{horizon}step"],
            "copy_last_l1": m[f"{prefix}_copy_last_l1_{horizon}step"],
            "ratio_to_copy_last": m[f"{prefix}_ratio_{horizon}step"],
            "pred_std": m[f"{prefix}_pred_std"], "target_std": m[f"{prefix}_target_std"]}


def encoder_file(cfg: DictConfig) -> str | None:
    """The encoder's file (``encoder_path`` without a ``vjepa2:`` prefix), or None."""
    enc = cfg.get("encoder_path") or None
    return enc[len(VJEPA2):] if enc and str(enc).startswith(VJEPA2) else enc


def frozen_encoder(cfg: DictConfig, device: torch.device, image_size: int | None = None) -> torch.nn.Module:
    """The encoder file ``encoder_path`` (``vjepa2:<file>``: an official V-JEPA 2 file, frames of
    ``image_size``), or (``encoder_path=null``) one built from the ``encoder`` config (``type`` +
    fields) with RNG seed ``seed``; frozen."""
    if bool(cfg.get("encoder_path")) == (cfg.get("encoder") is not None):
        raise ValueError("train_predictor: set exactly one of encoder_path=<encoder.pt> (or vjepa2:<official file>) "
                         "and encoder=<name> (configs/encoder/<name>.yaml)")
    if str(cfg.get("encoder_path") or "").startswith(VJEPA2):
        from wmplan.worldmodel.vjepa2 import load_official_encoder
        return load_official_encoder(encoder_file(cfg), num_heads=cfg.get("vjepa2_num_heads"),
                                     img_size=None if image_size is None else int(image_size), device=device)
    if cfg.get("encoder_path"):
        return load_encoder(cfg.encoder_path, device)
    spec = OmegaConf.to_container(cfg.encoder, resolve=True)
    tag = spec.pop("type", "vit")
    with torch.random.fork_rng(devices=[]):  # leaves the training RNG stream untouched
        torch.manual_seed(int(cfg.seed))
        encoder = build_encoder(tag, spec)
    return encoder.to(device).eval().requires_grad_(False)


def train(cfg: DictConfig) -> dict:
    """Run (or resume) training; returns the final metrics dict (rank 0; other ranks get
    ``{"rank", "world_size"}``). Joins the torchrun process group when ``WORLD_SIZE`` > 1."""
    validate_settings(cfg)
    device = resolve_device(cfg.device)
    with tf32(device):  # CUDA only; the flags are restored afterwards
        return ddp.launch(_train, cfg, device)


def _train(cfg: DictConfig, device: torch.device, info: ddp.DistInfo) -> dict:
    main = info.is_main
    say = print if main else (lambda *a, **k: None)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if main:
        for tmp in remove_stale_temps(out):
            print(f"removed {tmp} (a temp file of a killed run)")
    start_job(cfg.threads, cfg.seed, device)

    # ---- data, and the resume point's run keys / data / split -----------------------------
    ds = EpisodeDataset(cfg.data_dir).require_complete()  # meta.json's num_episodes vs the files present
    fingerprint = dataset_fingerprint(ds.root)
    enc_path = encoder_file(cfg)
    state_path, log_path = out / "train_state.pt", out / "log.jsonl"
    run_keys = {k: (str(cfg[k]) if k in ("data_dir", "encoder_path") else cfg[k]) for k in RESUME_KEYS}
    if enc_path is None:  # an encoder built from its config: the config is part of the run
        run_keys["encoder"] = OmegaConf.to_container(cfg.encoder, resolve=True)
    if str(cfg.encoder_path or "").startswith(VJEPA2):  # the head count shapes the official encoder
        run_keys["vjepa2_num_heads"] = cfg.get("vjepa2_num_heads")
    st = None
    if state_path.is_file():
        st = load_checkpoint(state_path, kind=STATE_KIND)
        check_resume(state_path, st.get("run_keys"), run_keys, st.get("dataset_fingerprint"), fingerprint)
        if int(st["step"]) > cfg.steps:
            raise CheckpointError(f"{state_path}: the saved run is at step {st['step']}, beyond steps={cfg.steps}; "
                                  f"steps may only grow on resume (or start fresh with out_dir=<a new folder>)")
        train_ids, val_ids = list(st["split"]["train"]), list(st["split"]["val"])  # fixed at the first run
    else:
        train_ids, val_ids = ds.split(cfg.val_fraction, cfg.seed)
    split = {"train": train_ids, "val": val_ids}
    if not val_ids:
        say("warning: no held-out episodes (val_fraction too small); validating on train episodes")
        val_ids = train_ids

    # ---- latent cache -----------------------------------------------------------------------
    img = ds.meta.get("image_size")
    encoder = frozen_encoder(cfg, device, img)
    if img is not None and int(img) != encoder.image_size:
        raise ValueError(f"dataset {cfg.data_dir} has image_size={img} but encoder {enc_path or cfg.encoder} "
                         f"expects image_size={encoder.image_size}")
    cache_dtype = {"float16": torch.float16, "float32": torch.float32}[cfg.cache_dtype]
    budget = cfg.get("ram_budget_mb")
    for turn in ("main", "rest"):  # rank 0 builds (or checks) the cache; the others then reuse it
        if (turn == "main") == main:
            cache = build_latent_cache(ds, encoder, enc_path, cfg.pool_k, out, cfg.encode_batch_size, cache_dtype,
                                       verbose=main, fingerprint=fingerprint, ram_budget_mb=budget)
        ddp.barrier(info)
    tpos = [cache.index_of(i) for i in train_ids]
    vpos = [cache.index_of(i) for i in val_ids]
    fs = int(cfg.frameskip)
    env_adim = int(cache.actions.shape[-1])
    pdim = int(cache.proprio.shape[-1]) if cache.proprio.dim() == 2 else 0
    use_proprio = bool(cfg.use_proprio) and pdim > 0
    stats = compute_stats(cache, tpos, fs, use_proprio, latent_norm=cfg.latent_norm)

    # ---- model ----------------------------------------------------------------------------
    N, D = cache.latents.shape[1:]
    pspec = OmegaConf.to_container(cfg.predictor, resolve=True)
    ptype = pspec.pop("type", "ac")
    if ptype != ACPredictor.type_tag:
        raise ValueError(f"train_predictor trains the action-conditioned predictor (predictor type 'ac'), "
                         f"not predictor type {ptype!r}")
    pcfg = ACPredictorConfig(latent_dim=int(D), tokens_per_frame=int(N), grid=cache.grid, action_dim=fs * env_adim,
                             proprio_dim=pdim if use_proprio else None, **pspec)
    model = ACPredictor(pcfg).to(device)
    opt = make_optimizer(model, cfg)
    workers = int(cfg.get("num_workers") or 0)  # >0: windows gathered by DataLoader workers, on the CPU
    train_s = WindowSampler(cache, tpos, fs, cfg.context + cfg.rollout_steps, stats, use_proprio,
                            torch.device("cpu") if workers else device)
    val_s = WindowSampler(cache, vpos, fs, cfg.eval_steps + 1, stats, use_proprio, device)
    val_windows = val_s.fixed(cfg.val_windows, seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)  # the same on every rank: the same global batch
    shard = ddp.shard_slice(int(cfg.batch_size), info) if info.enabled else None
    say(f"predictor: {model.num_params() / 1e6:.3f}M params, N={N} D={D} A={pcfg.action_dim} "
          f"P={pcfg.proprio_dim}; {len(train_ids)} train / {len(val_ids)} val episodes, "
          f"{len(train_s)} train windows; device={device}; world size {info.world_size}"
          + (f" (global batch {cfg.batch_size}, {cfg.batch_size // info.world_size} per rank)" if info.enabled else ""))

    # ---- resume ---------------------------------------------------------------------------
    model_keys = {"encoder_sha256": cache.encoder_sha256,  # what the cache was keyed by (file sha or fingerprint)
                  "predictor_config": pcfg.to_dict()}
    start, elapsed_before = 0, 0.0
    if st is not None:
        check_resume(state_path, {k: st.get(k) for k in model_keys}, model_keys)
        model.load_state_dict(st["predictor"])
        opt.load_state_dict(st["optimizer"])
        gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        start, elapsed_before = int(st["step"]), float(st.get("elapsed", 0.0))
        if main:
            truncate_log(log_path, start)
        say(f"resuming from step {start}" + (f" (saved at world size {st['world_size']})"
                                             if st.get("world_size", 1) != info.world_size else ""))
    elif main and log_path.is_file():
        log_path.unlink()  # stale log of a run without a resume point

    def save_state(step: int, elapsed: float) -> None:
        finite.flush()  # deferred checks first: nothing non-finite is saved
        if not main:
            return
        atomic_save({"world_size": info.world_size, "kind": STATE_KIND, "version": FORMAT_VERSION, "step": step, "predictor": model.state_dict(),
                     "optimizer": opt.state_dict(), "generator": stream.generator_state(step),
                     "torch_rng": torch.get_rng_state(),
                     "run_keys": run_keys, "dataset_fingerprint": fingerprint, "split": split, **model_keys,
                     "elapsed": elapsed}, state_path)

    # ---- loop -----------------------------------------------------------------------------
    tb = TensorBoardLog(out / "tb", cfg.tensorboard and main, purge_step=start + 1 if start else None)
    model.train()
    t0 = time.time()
    bar = ProgressBar(None, total=cfg.steps - start, desc=f"train (steps {start}->{cfg.steps})", disable=not main)
    losses: dict[str, float] = {}
    hint = (f"Lower lr (now {cfg.lr:g}) or check those episodes; the last resume point (if any) is {state_path}, "
            f"written every ckpt_every={cfg.ckpt_every} steps.")
    stream = WindowStream(train_s, int(cfg.batch_size), gen, start, int(cfg.steps), shard, workers,
                          pin_memory=workers > 0 and device.type == "cuda")  # this rank's share of each global batch
    batches = iter(stream)
    amp, fmode = bool(cfg.get("amp", False)), resolve_finite_check(cfg.get("finite_check", "auto"), device)
    finite = FiniteGuard(fmode, "train_predictor", hint)

    def losses_of(lat: torch.Tensor, act: torch.Tensor, prop: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return training_losses(model, Window(lat, act, prop), cfg.context, cfg.rollout_steps, cfg.loss,
                               cfg.rollout_weight, cfg.proprio_weight)

    loss_fn = maybe_compile(losses_of, bool(cfg.get("compile", False)))
    for step in range(start, cfg.steps):
        w = next(batches).to(device)
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        with autocast(device, amp):  # bf16 forward and loss when amp; fp32 loss reduction either way
            parts = loss_fn(w.latents, w.actions, w.proprio)
        opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        if info.enabled:  # global-batch gradient and losses: every rank sees the same (and stops together)
            ddp.all_reduce_grads(model, info)
            vals = ddp.all_reduce_mean(torch.stack([v.detach().float() for v in parts.values()]), info)
            parts = dict(zip(parts, vals.unbind()))
        guard = dict(parts)
        if cfg.grad_clip:
            guard["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        finite.record(guard, step + 1, w.episode_ids)  # step mode: checked before the update
        opt.step()
        done = step + 1
        if ((cfg.log_every and done % cfg.log_every == 0) or done == cfg.steps
                or (cfg.eval_every and done % cfg.eval_every == 0)):
            finite.flush()  # deferred mode: one sync per boundary (checkpoints flush in save_state)
        if main and ((cfg.log_every and done % cfg.log_every == 0) or done == cfg.steps):
            losses = {k: float(v.detach()) for k, v in parts.items()}  # host sync only when logging
            append_jsonl(log_path, {"step": done, "lr": lr, **losses, "time": elapsed_before + time.time() - t0})
            tb.scalars(done, {"lr": lr, **losses}, "train/")
            bar.update(0, loss=losses["loss"])
        if main and cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
            m = eval_metrics(model, val_windows, cfg.eval_steps)
            append_jsonl(log_path, {"step": done, **{k: v for k, v in m.items() if not isinstance(v, list)}})
            tb.scalars(done, tb_eval(m, cfg.eval_steps), "val/")
            print(f"\nstep {done}: val {cfg.eval_steps}-step open-loop L1 {m[f'val_open_loop_l1_{cfg.eval_steps}step']:.4f} "
                  f"vs copy-last {m[f'val_copy_last_l1_{cfg.eval_steps}step']:.4f}")
        if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done < cfg.steps:
            save_state(done, elapsed_before + time.time() - t0)
        bar.update(1)
    bar.close()
    batches.close()  # stops the loader's workers
    run_s = time.time() - t0
    ran = cfg.steps - start
    if not main:
        ddp.barrier(info)  # until rank 0 has written the outputs
        return {"rank": info.rank, "world_size": info.world_size}

    # ---- final eval + export --------------------------------------------------------------
    m = eval_metrics(model, val_windows, cfg.eval_steps)
    h = cfg.eval_steps
    tb.scalars(int(cfg.steps), tb_eval(m, h), "val/")
    tb.close()
    print(f"val {h}-step open-loop L1: predictor {m[f'val_open_loop_l1_{h}step']:.4f}, copy-last "
          f"{m[f'val_copy_last_l1_{h}step']:.4f}, ratio {m[f'val_ratio_{h}step']:.3f}")
    ids = {"train_episode_ids": split["train"], "val_episode_ids": split["val"]}  # val [] = validated on train
    metrics = {**m, "steps": int(cfg.steps), "predictor_params": model.num_params(),
               "train_episodes": len(train_ids), "val_episodes": len(val_ids),
               "steps_per_sec_this_run": (ran / run_s) if ran > 0 and run_s > 0 else None,
               "train_seconds_total": elapsed_before + run_s, "final_train_losses": losses,
               "world_size": info.world_size, "amp": amp, "finite_check": fmode, "ram_budget_mb": budget,
               "latent_cache_memmapped": cache.memmapped,
               "latent_cache_mib": cache.latent_bytes / 2**20, **ids}
    meta = {"seed": int(cfg.seed), "data_dir": str(Path(cfg.data_dir).resolve()),
            "encoder_path": ((VJEPA2 if enc_path != cfg.encoder_path else "") + str(Path(enc_path).resolve()))
            if enc_path else None,
            "encoder_sha256": cache.encoder_sha256, "dataset_sha256": fingerprint["sha256"],
            "env_id": ds.meta.get("env_id"), "env_kwargs": ds.meta.get("env_kwargs"),
            "train_episodes": len(train_ids), "val_episodes": len(val_ids), **ids,
            "config": OmegaConf.to_container(cfg, resolve=True),
            "metrics": {k: v for k, v in m.items() if not isinstance(v, list)}}
    wm = WorldModel(encoder, model.eval(), cfg.pool_k, fs, ds.meta["action_low"], ds.meta["action_high"],
                    stats.as_dict(), meta)
    wm.save(out / "world_model.pt")
    save_state(int(cfg.steps), elapsed_before + run_s)
    write_json(out / "metrics.json", metrics)
    print(f"wrote {out / 'world_model.pt'} and {out / 'metrics.json'}")
    ddp.barrier(info)
    return metrics


@hydra.main(version_base="1.3", config_path="../configs", config_name="train_predictor")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
