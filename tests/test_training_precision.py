"""Mixed precision, compilation and host-sync-free finiteness checks for training (issue 11 item 3).

Tiny in-process runs of ``scripts/train_predictor.py`` (and ``pretrain_encoder.py``) on the moving-dot data of
``tests/test_training_reliability.py``: bf16 autocast on CPU follows the fp32 loss curve within
:data:`AMP_RTOL`, ``finite_check=deferred`` (what CUDA runs by default) stops at the first
non-finite step naming it and its episodes and saves nothing non-finite, and bad settings are named.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

from wmplan.checks import ConfigError, NonFiniteError
from wmplan.worldmodel.train_loop import FiniteGuard, resolve_finite_check, tf32
from wmplan.worldmodel.utils import load_checkpoint

try:  # the module object pytest itself imported (see test_training_reliability.py)
    from test_training_reliability import data, predictor_cfg, pretrain_cfg, script  # noqa: F401  (data: a fixture)
except ImportError:  # another pytest import mode
    from tests.test_training_reliability import data, predictor_cfg, pretrain_cfg, script  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
# bf16 autocast vs fp32: the per-step training losses of a 6-step tiny run agree within this
# relative tolerance (measured on CPU, torch 2.x, printed with -s: train_predictor 2.2e-4 over 6
# steps, pretrain_encoder 3.2e-3 over 3 steps; bf16 keeps 8 mantissa bits, ~4e-3 relative).
AMP_RTOL = 1e-2


def _losses(run) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]


def test_amp_on_cpu_follows_fp32_losses(data):
    tp = script("train_predictor")
    ref = tp.train(predictor_cfg(data, "steps=6", f"out_dir={data / 'fp32'}"))
    amp = tp.train(predictor_cfg(data, "steps=6", f"out_dir={data / 'amp'}", "amp=true"))
    a, b = _losses(data / "fp32"), _losses(data / "amp")
    assert len(a) == len(b) == 6 and a != b  # autocast really ran in bf16
    rel = max(abs(x - y) / abs(x) for x, y in zip(a, b))
    print(f"amp vs fp32: max relative loss difference {rel:.2e} over {len(a)} steps")
    assert rel < AMP_RTOL, (a, b)
    assert amp["amp"] is True and ref["amp"] is False and amp["finite_check"] == "step"  # auto on CPU
    st = load_checkpoint(data / "amp" / "train_state.pt")  # fp32 resume point, as without amp
    assert all(v.dtype == torch.float32 for v in st["predictor"].values() if v.is_floating_point())
    # amp may change on resume (documented): the fp32 run continues with bf16 autocast
    more = tp.train(predictor_cfg(data, "steps=8", f"out_dir={data / 'fp32'}", "amp=true", "finite_check=deferred"))
    assert more["steps"] == 8 and len(_losses(data / "fp32")) == 8


def test_deferred_finite_check_names_first_bad_step_and_saves_nothing_bad(data):
    """lr=1e30 blows the weights up in the update of step 1; step 2's loss is the first non-finite
    one. The deferred check runs only at the checkpoint of step 3, before writing it."""
    tp = script("train_predictor")
    cfg = predictor_cfg(data, "steps=5", "ckpt_every=3", "log_every=0", "lr=1e30", "finite_check=deferred")
    msg = (r"train_predictor: non-finite loss or gradient at step 2 \(.*\) on a batch from episodes \[\d.*"
           r"deferred check after step 3.*lr \(now 1e\+30\)")
    with pytest.raises(NonFiniteError, match=msg):
        tp.train(cfg)
    run = data / "run"
    assert not (run / "world_model.pt").exists() and not (run / "train_state.pt").exists()
    for f in run.glob("*.pt"):
        load_checkpoint(f)  # whatever reached disk (the latent cache) is finite


def test_finite_guard_flushes_at_max_pending_and_clears():
    g = FiniteGuard("deferred", "here", max_pending=3)
    ok, bad = torch.tensor(1.0), torch.tensor(float("nan"))
    g.record({"loss": ok}, 1, torch.tensor([0]))
    g.record({"loss": bad}, 2, torch.tensor([4, 5]))
    with pytest.raises(NonFiniteError, match=r"here: non-finite loss or gradient at step 2 \(loss=nan\) on a batch "
                                             r"from episodes \[4, 5\]; found by the deferred check after step 3"):
        g.record({"loss": bad}, 3, torch.tensor([6]))
    assert g.pending == []
    g.record({"loss": ok, "grad_norm": ok}, 4, None)
    g.flush()  # all finite: returns
    assert resolve_finite_check("auto", torch.device("cpu")) == "step"
    assert resolve_finite_check("auto", torch.device("cuda")) == "deferred"
    with tf32(torch.device("cpu")) as on:
        assert on is False


@pytest.mark.parametrize("override, pattern", [
    ("amp=maybe", r"'amp' must be true or false, got 'maybe'"),
    ("compile=1", r"'compile' must be true or false, got 1"),
    ("finite_check=sometimes", r"'finite_check' must be one of \['step', 'deferred', 'auto'\], got 'sometimes'"),
])
def test_bad_precision_settings_are_named(tmp_path, override, pattern):
    with pytest.raises(ConfigError, match="train_predictor: " + pattern):
        script("train_predictor").train(predictor_cfg(tmp_path, override))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not os.environ.get("WMPLAN_SLOW_TESTS"), reason="torch.compile takes minutes on a shared CPU")
def test_compiled_training_matches_eager(data):
    tp = script("train_predictor")
    tp.train(predictor_cfg(data, "steps=3", f"out_dir={data / 'eager'}"))
    tp.train(predictor_cfg(data, "steps=3", f"out_dir={data / 'compiled'}", "compile=true"))
    a, b = _losses(data / "eager"), _losses(data / "compiled")
    assert len(a) == len(b) == 3
    assert max(abs(x - y) / abs(x) for x, y in zip(a, b)) < 1e-4, (a, b)


# ---- pretrain_encoder -------------------------------------------------------------------------
def test_pretrain_amp_and_deferred_finite_check(data):
    pe = script("pretrain_encoder")
    pe.train(pretrain_cfg(data, "steps=3", f"out_dir={data / 'p32'}"))
    pe.train(pretrain_cfg(data, "steps=3", f"out_dir={data / 'pamp'}", "amp=true", "finite_check=deferred"))
    a, b = (load_checkpoint(data / d / "train_state.pt")["log"] for d in ("p32", "pamp"))
    la, lb = [e["loss"] for e in a], [e["loss"] for e in b]
    assert len(la) == len(lb) == 3 and la != lb
    rel = max(abs(x - y) / abs(x) for x, y in zip(la, lb))
    print(f"pretrain amp vs fp32: max relative loss difference {rel:.2e} over {len(la)} steps")
    assert rel < AMP_RTOL, (la, lb)
    # step 1's update blew the weights up; step 2's loss is the first non-finite one (no log line ran)
    with pytest.raises(NonFiniteError, match=r"pretrain_encoder: non-finite loss or gradient at step 2 .*from "
                                             r"episodes \[\d.*deferred check after step 3"):
        pe.train(pretrain_cfg(data, "steps=4", "lr=1e30", "log_every=0", "ckpt_every=3", "finite_check=deferred"))
    assert not (data / "pre" / "encoder.pt").exists() and not (data / "pre" / "train_state.pt").exists()
    with pytest.raises(ConfigError, match=r"pretrain_encoder: 'amp' must be true or false, got 'yes'"):
        pe.train(pretrain_cfg(data, "amp=yes"))
