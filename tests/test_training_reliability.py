"""No silent garbage in training and checkpoints (issue 9): non-finite losses stop training and
never reach disk, checkpoint loading validates what planners rely on, latent caches and resume
points are keyed by the data's fingerprint and the run's settings (and say what changed), the
validation split is recorded, torn logs are repaired, and bad settings are named up front.

Most runs call the scripts' ``train`` in-process on tiny data (``tests/test_world_model.py``'s
moving-dot dataset): the same code path as the command line, minus the interpreter start-up.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from hydra import compose, initialize_config_dir

import wmplan.config_store  # noqa: F401  (registers the structured configs the YAMLs build on)
from wmplan.checks import ConfigError, NonFiniteError
from wmplan.worldmodel.ac_training import WindowSampler, compute_stats
from wmplan.worldmodel.data import EpisodeDataset, write_meta
from wmplan.worldmodel.latent_cache import build_latent_cache
from wmplan.worldmodel.pretrained_models import resolve_model_path
from wmplan.worldmodel.registry import load_encoder, save_encoder
from wmplan.worldmodel.utils import CheckpointError, atomic_save, load_checkpoint
from wmplan.worldmodel.world_model import WorldModel

try:  # the module object pytest itself imported (tests/ has no __init__.py): importing it as
    # tests.test_world_model would run it twice and re-register its test encoder class
    from test_world_model import IMG, make_dataset, tiny_encoder, tiny_world_model
except ImportError:  # another pytest import mode
    from tests.test_world_model import IMG, make_dataset, tiny_encoder, tiny_world_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
REPO = Path(__file__).resolve().parents[1]
PRED = ["predictor=ac_tiny", "batch_size=4", "context=1", "rollout_steps=1", "val_fraction=0.34", "val_windows=4",
        "eval_steps=2", "log_every=1", "eval_every=0", "threads=1", "warmup_steps=0", "tensorboard=false", "device=cpu"]
PRE = [f"encoder.img_size={IMG}", "encoder.patch_size=4", "encoder.embed_dim=24", "encoder.depth=1",
       "encoder.num_heads=2", "jepa_predictor.dim=12", "jepa_predictor.depth=1", "jepa_predictor.num_heads=2",
       "batch_size=4", "num_frames=2", "warmup_steps=0", "log_every=1", "ckpt_every=1", "tensorboard=false",
       "threads=1", "device=cpu", "val_fraction=0.34"]


def script(name: str) -> ModuleType:
    """scripts/<name>.py as a module (its ``train(cfg)`` is what the command line runs)."""
    spec = importlib.util.spec_from_file_location(f"_wmplan_script_{name}", REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def config(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def predictor_cfg(tmp: Path, *overrides: str):
    return config("train_predictor", f"data_dir={tmp / 'ds'}", f"encoder_path={tmp / 'enc.pt'}",
                  f"out_dir={tmp / 'run'}", *PRED, *overrides)


def pretrain_cfg(tmp: Path, *overrides: str):
    return config("pretrain_encoder", f"data_dir={tmp / 'ds'}", f"out_dir={tmp / 'pre'}", *PRE, *overrides)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """3 tiny episodes at tmp/ds and a tiny encoder at tmp/enc.pt."""
    make_dataset(tmp_path / "ds", n_eps=3, T=8)
    save_encoder(tiny_encoder(), tmp_path / "enc.pt")
    return tmp_path


# ---- non-finite training stops, nothing non-finite reaches disk ------------------------------
def test_nonfinite_loss_stops_predictor_training_without_saving_it(data):
    """Through the real command line: lr=1e30 blows the weights up after step 1."""
    cmd = [sys.executable, str(REPO / "scripts" / "train_predictor.py"), f"data_dir={data / 'ds'}",
           f"encoder_path={data / 'enc.pt'}", f"out_dir={data / 'run'}", *PRED, "steps=5", "ckpt_every=1", "lr=1e30"]
    p = subprocess.run(cmd, cwd=data, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode != 0
    assert "NonFiniteError" in p.stderr and "non-finite loss or gradient at step 2" in p.stderr, p.stderr[-2000:]
    assert "from episodes [" in p.stderr and "lr (now 1e+30)" in p.stderr
    assert not (data / "run" / "world_model.pt").exists()
    st = load_checkpoint(data / "run" / "train_state.pt")  # refuses non-finite tensors: this one is the good step
    assert st["step"] == 1


def test_nonfinite_pretraining_stops_without_saving_it(data):
    with pytest.raises(NonFiniteError, match=r"pretrain_encoder: non-finite .*step 1 .*from episodes \[\d"):
        script("pretrain_encoder").train(pretrain_cfg(data, "steps=4", "lr=1e30"))
    assert not (data / "pre" / "encoder.pt").exists()
    for f in (data / "pre").glob("*.pt"):
        load_checkpoint(f)  # whatever reached disk is finite


def test_saves_refuse_nonfinite_tensors(tmp_path):
    wm = tiny_world_model()
    wm.save(tmp_path / "wm.pt")
    name, param = next(iter(wm.predictor.named_parameters()))
    param.data.view(-1)[3] = float("nan")
    with pytest.raises(NonFiniteError, match=rf"refusing to write .*wm\.pt.*'predictor\.state_dict\.{name}'"):
        wm.save(tmp_path / "wm.pt")
    WorldModel.load(tmp_path / "wm.pt")  # the good file is still there
    enc = tiny_encoder()
    next(iter(enc.parameters())).data.view(-1)[0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"enc\.pt.*state_dict"):
        save_encoder(enc, tmp_path / "enc.pt")
    with pytest.raises(NonFiniteError, match=r"'optimizer\.state\.0\.exp_avg'"):
        atomic_save({"optimizer": {"state": {0: {"exp_avg": torch.tensor([1.0, -math.inf])}}}}, tmp_path / "st.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wm.pt"]  # no file, no temp file


# ---- checkpoint loading validates -------------------------------------------------------------
def _variant(tmp: Path, name: str, edit) -> Path:
    """A copy of a good world-model file with ``edit(ckpt)`` applied, written with plain torch.save."""
    ckpt = torch.load(tmp / "wm.pt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, tmp / name)
    return tmp / name


def test_world_model_load_names_file_and_field(tmp_path):
    tiny_world_model().save(tmp_path / "wm.pt")
    key = next(iter(torch.load(tmp_path / "wm.pt", weights_only=True)["predictor"]["state_dict"]))
    cases = {
        "nan.pt": (lambda c: c["predictor"]["state_dict"][key].view(-1).__setitem__(0, float("nan")),
                   rf"nan\.pt: field 'predictor\.state_dict\.{key}' holds 1 non-finite"),
        "zero_std.pt": (lambda c: c["stats"]["action_std"].__setitem__(1, 0.0),
                        r"zero_std\.pt: field 'stats\.action_std' must be > 0.*got 0\.0 at flat index 1"),
        "latent_std0.pt": (lambda c: c["stats"].update(latent_mean=torch.zeros(4, 24), latent_std=torch.zeros(4, 24)),
                           r"latent_std0\.pt: field 'stats\.latent_std' must be > 0"),
        "future.pt": (lambda c: c.update(version=7),
                      r"future\.pt was made by a newer wmplan \(version 7 > 1\); upgrade wmplan"),
        # older / foreign layouts: what is missing or mismatched, not torch's bare errors
        "no_latent_std.pt": (lambda c: c["stats"].update(latent_mean=torch.zeros(4, 24), latent_std=None),
                             r"no_latent_std\.pt: field 'stats\.latent_mean' is set but 'stats\.latent_std' is missing"),
        "action6.pt": (lambda c: c["stats"].update(action_mean=torch.zeros(6)),
                       r"action6\.pt: field 'stats\.action_mean' has shape \(6,\), the predictor needs \(4,\)"),
        "renamed.pt": (lambda c: c["predictor"]["state_dict"].update(old_name=c["predictor"]["state_dict"].pop(key)),
                       rf"renamed\.pt: field 'predictor': the weights .*missing weights {key}.*unexpected weights old_name"),
        "fs_none.pt": (lambda c: c.update(frameskip=None), r"fs_none\.pt: 'frameskip' must be a number, got None"),
    }
    for name, (edit, pattern) in cases.items():
        with pytest.raises(CheckpointError, match=pattern) as e:
            WorldModel.load(_variant(tmp_path, name, edit))
        assert "real number" not in str(e.value) and "size of tensor" not in str(e.value), name
    # a predictor config that no longer fits its weights names the weight and both shapes
    def wider(c):
        c["predictor"]["config"]["action_dim"] = 6
        c["stats"].update(action_mean=torch.zeros(6), action_std=torch.ones(6))
    with pytest.raises(CheckpointError, match=r"shape mismatch: '[\w.]+' is \(\d+, 4\) in the file but \(\d+, 6\)"):
        WorldModel.load(_variant(tmp_path, "wider.pt", wider))
    assert WorldModel.load(resolve_model_path("pretrained:reacher")).frameskip >= 1  # bundled: no version field
    save_encoder(tiny_encoder(), tmp_path / "enc.pt")
    enc = torch.load(tmp_path / "enc.pt", weights_only=True)
    assert enc["version"] == 1
    torch.save({**enc, "version": 2}, tmp_path / "enc2.pt")
    with pytest.raises(CheckpointError, match=r"enc2\.pt was made by a newer wmplan \(version 2 > 1\)"):
        load_encoder(tmp_path / "enc2.pt")


# ---- latent cache keyed by the data fingerprint -------------------------------------------------
def test_latent_cache_recomputed_for_recollected_or_foreign_data(data, capsys):
    ds_root, out, enc = data / "ds", data / "out", tiny_encoder()
    c0 = build_latent_cache(EpisodeDataset(ds_root), enc, data / "enc.pt", 2, out, dtype=torch.float32)
    assert c0.fingerprint["num_episodes"] == 3
    build_latent_cache(EpisodeDataset(ds_root), enc, data / "enc.pt", 2, out, dtype=torch.float32)
    assert "reusing" in capsys.readouterr().out
    shutil.rmtree(ds_root)
    make_dataset(ds_root, n_eps=3, T=8, seed=1)  # re-collected at the same path: same ids, other frames
    c1 = build_latent_cache(EpisodeDataset(ds_root), enc, data / "enc.pt", 2, out, dtype=torch.float32)
    msg = capsys.readouterr().out
    assert "stale (the data changed (" in msg and "episodes rewritten: 0, 1, 2" in msg
    assert not torch.equal(c0.latents, c1.latents)
    meta = EpisodeDataset(ds_root).meta
    write_meta(ds_root, {**meta, "env_id": "another-task"})  # another task's data at the same path
    build_latent_cache(EpisodeDataset(ds_root), enc, data / "enc.pt", 2, out, dtype=torch.float32)
    assert "meta.json changed" in capsys.readouterr().out
    # windows know their episodes (errors name them): each window's first latent is in its episode
    st = compute_stats(c1, [0, 1, 2], 2, True)
    w = WindowSampler(c1, [1, 2], 2, 3, st, True, torch.device("cpu")).sample(16, torch.Generator().manual_seed(0))
    assert set(w.episode_ids.tolist()) <= {1, 2} and w.episode_ids.shape == (16,)


# ---- resume keys: data fingerprint and settings; recorded split; torn log ---------------------------
def test_predictor_resume_checks_data_settings_split_and_log(data, capsys):
    tp = script("train_predictor")
    run = data / "run"
    run.mkdir()
    stale = run / ".train_state.pt.2147483646.x1.tmp"  # a killed writer's temp file
    stale.write_bytes(b"partial")
    m = tp.train(predictor_cfg(data, "steps=2", "ckpt_every=1"))
    assert not stale.exists()
    st = torch.load(run / "train_state.pt", weights_only=True)
    assert st["version"] == 1 and st["split"] == {"train": m["train_episode_ids"], "val": m["val_episode_ids"]}
    wm = WorldModel.load(run / "world_model.pt")
    assert wm.meta["val_episode_ids"] == m["val_episode_ids"] and len(m["val_episode_ids"]) == 1
    assert json.loads((run / "metrics.json").read_text())["train_episode_ids"] == m["train_episode_ids"]

    with open(run / "log.jsonl", "a") as f:  # a run killed mid-append
        f.write('{"step": 3, "loss": 0.')
    capsys.readouterr()
    tp.train(predictor_cfg(data, "steps=3", "ckpt_every=1"))  # resumes, repairing the log
    out = capsys.readouterr().out
    assert "resuming from step 2" in out and "torn" in out and "line 3" in out
    assert [json.loads(ln)["step"] for ln in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]

    with pytest.raises(CheckpointError, match=r"cannot resume.*batch_size: 4 -> 2; lr: 0\.001 -> 0\.01.*out_dir="):
        tp.train(predictor_cfg(data, "steps=4", "lr=0.01", "batch_size=2"))
    for i in (3, 4, 5):  # the dataset grows 3 -> 6 episodes
        shutil.copy(data / "ds" / "episodes" / "ep_000000.npz", data / "ds" / "episodes" / f"ep_{i:06d}.npz")
    with pytest.raises(CheckpointError, match=r"data: 3 -> 6 episodes; episodes added: 3, 4, 5.*delete .*train_state"):
        tp.train(predictor_cfg(data, "steps=4"))
    for i in (3, 4, 5):  # the data restored
        (data / "ds" / "episodes" / f"ep_{i:06d}.npz").unlink()
    with pytest.raises(CheckpointError, match=r"saved run is at step 3, beyond steps=2"):
        tp.train(predictor_cfg(data, "steps=2"))
    old = {k: v for k, v in st.items() if k not in ("run_keys", "dataset_fingerprint")}  # an older wmplan's file
    atomic_save(old, run / "train_state.pt")
    with pytest.raises(CheckpointError, match=r"older wmplan.*no run settings or dataset fingerprint.*out_dir="):
        tp.train(predictor_cfg(data, "steps=4"))
    atomic_save({**st, "version": 3}, run / "train_state.pt")
    with pytest.raises(CheckpointError, match=r"newer wmplan \(version 3 > 1\)"):
        tp.train(predictor_cfg(data, "steps=4"))


def test_pretrain_resume_names_changed_config_and_tolerates_torn_log(data):
    pe = script("pretrain_encoder")
    pe.train(pretrain_cfg(data, "steps=2"))
    shutil.copytree(data / "ds", data / "ds2")  # the same bytes under another path
    with pytest.raises(CheckpointError, match=r"cannot resume.*data_dir: '\S+/ds' -> '\S+/ds2'; .*lr: 0\.001 -> 0\.01"):
        pe.train(pretrain_cfg(data, "steps=3", f"data_dir={data / 'ds2'}", "lr=0.01"))
    with pytest.raises(CheckpointError, match=r"masks\[0\]\.num_blocks: 8 -> 4\. Rerun"):
        pe.train(pretrain_cfg(data, "steps=3", "masks.0.num_blocks=4"))
    make_dataset(data / "ds", n_eps=3, T=8, seed=5)  # re-collected in place
    with pytest.raises(CheckpointError, match=r"data: .*episodes rewritten: 0, 1, 2"):
        pe.train(pretrain_cfg(data, "steps=3"))
    shutil.rmtree(data / "ds")
    shutil.copytree(data / "ds2", data / "ds")  # the original bytes back
    with open(data / "pre" / "log.jsonl", "a") as f:
        f.write('{"step": 3, "lo')
    meta = pe.train(pretrain_cfg(data, "steps=3"))  # steps may grow
    assert meta["steps"] == 3 and len(meta["train_episode_ids"]) == 2
    assert [json.loads(ln)["step"] for ln in (data / "pre" / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


# ---- settings validated when built ----------------------------------------------------------------
BAD_SETTINGS = [("train_predictor", o, m) for o, m in [
    ("lr=0", r"'lr' must be > 0, got 0"), ("lr=nan", r"'lr' must be finite"), ("steps=0", r"'steps' must be >= 1"),
    ("batch_size=abc", r"'batch_size' must be a number, got 'abc'"), ("val_fraction=1.0", r"'val_fraction' must be < 1"),
    ("frameskip=0", r"'frameskip' must be >= 1"), ("context=0", r"'context' must be >= 1"),
    ("rollout_steps=-1", r"'rollout_steps' must be >= 0"), ("grad_clip=-1", r"'grad_clip' must be >= 0"),
    ("rollout_weight=-0.5", r"'rollout_weight' must be >= 0"), ("log_every=1.5", r"'log_every' must be a whole number"),
    ("loss=l3", r"'loss' must be one of \['l1', 'l2'\], got 'l3'"), ("use_proprio=maybe", r"'use_proprio' must be true or false"),
]] + [("pretrain_encoder", o, m) for o, m in [
    ("lr=-1", r"'lr' must be > 0"), ("static_prob=2", r"'static_prob' must be <= 1"),
    ("ema=[0.9]", r"'ema' must be \[start, end\]"), ("masks.0.scale=[0,0.1]", r"'masks\.0\.scale\.0' must be > 0"),
    ("ckpt_every=-2", r"'ckpt_every' must be >= 0"), ("jepa_predictor.depth=0", r"'jepa_predictor\.depth' must be >= 1"),
]]


@pytest.mark.parametrize("name, override, pattern", BAD_SETTINGS)
def test_bad_settings_are_named_before_any_work(tmp_path, name, override, pattern):
    cfg = (predictor_cfg if name == "train_predictor" else pretrain_cfg)(tmp_path, override)
    with pytest.raises(ConfigError, match=f"{name}: " + pattern):
        script(name).train(cfg)
    assert list(tmp_path.iterdir()) == []  # no out_dir, nothing written
