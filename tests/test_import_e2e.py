"""Tiny end-to-end run on an imported LeRobot dataset (issue 12, item 2): import the v3.0 fixture
(video camera, no simulator state), pretrain an encoder, train a predictor, run the offline
planning check. Tiny settings (tests/test_pipeline_smoke.py); asserts on what each stage hands on.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="pyarrow missing: pip install 'wmplan[lerobot]'")
pytest.importorskip("av", reason="PyAV missing: pip install 'wmplan[lerobot]'")

from tests.conftest import ROOT, run_script  # noqa: E402
from tests.test_pipeline_smoke import TINY_ENCODER  # noqa: E402
from wmplan.worldmodel.data import EpisodeDataset  # noqa: E402
from wmplan.worldmodel.world_model import WorldModel  # noqa: E402

SOURCE = ROOT / "tests" / "fixtures" / "lerobot" / "v30_onefile"


def test_import_pretrain_train_offline_check(tmp_path):
    data, enc, wm_dir, check = tmp_path / "data", tmp_path / "enc", tmp_path / "wm", tmp_path / "check"
    run_script("import_dataset.py", "format=lerobot", f"source={SOURCE}", "camera=observation.images.cam",
               "image_size=64", f"out_dir={data}")
    ds = EpisodeDataset(data)
    assert ds.meta["state_dim"] == 0 and ds.meta["image_size"] == 64 and len(ds) == 3
    assert ds.load_episode(0).states.shape[1] == 0  # no simulator state downstream

    run_script("pretrain_encoder.py", f"data_dir={data}", f"out_dir={enc}", "steps=3", "batch_size=4",
               "num_frames=2", "warmup_steps=1", "log_every=1", "ckpt_every=2", *TINY_ENCODER)
    run_script("train_predictor.py", f"data_dir={data}", f"encoder_path={enc / 'encoder.pt'}", f"out_dir={wm_dir}",
               "predictor=ac_tiny", "steps=3", "batch_size=4", "frameskip=2", "rollout_steps=1", "context=1",
               "eval_steps=1", "val_windows=4", "warmup_steps=1", "log_every=1", "eval_every=3", "ckpt_every=2",
               "val_fraction=0.34")
    wm = WorldModel.load(wm_dir / "world_model.pt", device="cpu")
    assert wm.frameskip == 2 and wm.action_dim == 4 and wm.proprio_dim == 4

    proc = run_script("offline_plan_check.py", f"world_model={wm_dir / 'world_model.pt'}", f"data_dir={data}",
                      "offset=4", "episodes=null", "start_stride=2", "planner.samples=16", "planner.iterations=2",
                      "planner.elites=4", f"out_dir={check}")
    s = json.loads((check / "summary.json").read_text())
    # episodes of 8, 13 and 5 steps, starts every 2 steps while the goal 4 steps later is inside
    assert s["pairs"] == 3 + 5 + 1 and s["horizon_predictor_steps"] == 2 and s["env_id"] is None
    for r in s["rows"]:
        assert all(np.isfinite(r[k]) for k in ("energy_plan", "energy_recorded", "energy_zero", "plan_error_all"))
    assert "energy: plan" in proc.stdout
