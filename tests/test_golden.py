"""Golden outputs of the bundled world models: a numerics change cannot move the README silently.

Each ``tests/golden/<name>.pt`` holds real env frames, seeded actions and the outputs of
``WorldModel.encode`` / ``rollout`` / ``predict_next`` written by ``tests/golden/make_golden.py``
(read its docstring before regenerating). Here every bundled model is loaded and run on the
stored inputs (CPU, fp32) and compared with tight tolerances.
"""
from __future__ import annotations

import pytest
import torch

from tests.golden.make_golden import GOLDEN_DIR, MODELS, model_outputs, sha256_of
from wmplan.worldmodel.pretrained_models import bundled_models, resolve_model_path
from wmplan.worldmodel.world_model import WorldModel

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
TOL = {"atol": 5e-5, "rtol": 1e-5}  # CPUs with other SIMD kernels differ by ~1e-5 on fp32 latents


def test_every_bundled_model_has_a_golden_file():
    assert sorted(bundled_models()) == sorted(MODELS)
    for name in MODELS:
        assert (GOLDEN_DIR / f"{name}.pt").is_file(), name


@pytest.mark.parametrize("name", MODELS)
def test_bundled_model_matches_golden(name):
    g = torch.load(GOLDEN_DIR / f"{name}.pt", weights_only=True)
    path = resolve_model_path(f"pretrained:{name}")
    assert sha256_of(path) == g["model_sha256"], (
        f"bundled model {path} is not the file the golden outputs were made with; if it was retrained "
        "on purpose, re-measure the README figures and regenerate (tests/golden/make_golden.py)")
    wm = WorldModel.load(path, device="cpu")
    assert wm.dtype == torch.float32
    got = model_outputs(wm, g["frames"], g["proprio"], g["actions"], g["tf_actions"])
    keys = [k for k in ("encode", "rollout_latents", "rollout_proprio", "rollout_disagreement",
                        "tf_latents", "tf_disagreement") if k in g]
    assert sorted(got) == sorted(keys)
    assert g["frames"].dtype == torch.uint8 and g["frames"].shape[:2] == (1, 2)
    for k in keys:
        torch.testing.assert_close(got[k], g[k], **TOL, msg=lambda m, k=k: f"{name}: {k} moved: {m}")
    # the uncached (full re-encoding) rollout agrees with the cached one planning uses
    z = wm.encode(g["frames"])
    slow = wm.rollout(z[:, :1], g["proprio"][:, :1], g["actions"], use_cache=False)
    torch.testing.assert_close(slow.latents, g["rollout_latents"], atol=1e-4, rtol=1e-4)
