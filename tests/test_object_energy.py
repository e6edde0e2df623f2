"""Object subspace (worldmodel/object_subspace.py) and the object_goal energy."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from wmplan.checks import ConfigError
from wmplan.planners import build_energy
from wmplan.object_projection import load_object_projection
from wmplan.worldmodel.object_subspace import fit_object_projection, save_object_projection


def synthetic(frames: int = 4000, seed: int = 0):
    """Latents [F, 2, 8]: an agent at proprio p drives every channel nonlinearly and strongly;
    an object o (not in proprio) adds a weaker signal to a few channels."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(frames, 2, generator=g) * 2 - 1
    o = torch.rand(frames, 2, generator=g) * 2 - 1
    mix_a = torch.randn(6, 16, generator=g)
    agent = torch.cat([torch.sin(3 * p), torch.cos(2 * p), p ** 2], 1) @ mix_a  # [F, 16], large
    obj = torch.zeros(frames, 16)
    obj[:, [3, 11]] = 0.4 * o
    z = agent + obj + 0.01 * torch.randn(frames, 16, generator=g)
    return z.reshape(frames, 2, 8), p, o


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.numpy(), b.numpy())[0, 1])


def test_projection_finds_what_proprio_does_not_explain():
    z, p, o = synthetic()
    fit = fit_object_projection(z, p, k=2, num_features=128)
    v = fit["projection"]
    assert v.shape == (16, 2) and fit["explained_by_proprio"] > 0.9
    i, j = torch.arange(0, 3999, 2), torch.arange(1, 4000, 2)
    d_full = (z.flatten(1)[i] - z.flatten(1)[j]).pow(2).mean(1)
    q = z.flatten(1) @ v
    d_obj = (q[i] - q[j]).pow(2).mean(1)
    obj_disp, agent_disp = (o[i] - o[j]).norm(dim=1), (p[i] - p[j]).norm(dim=1)
    # the full distance follows the agent; the projected one follows the object
    assert corr(d_full, agent_disp) > 0.5 and corr(d_full, obj_disp) < 0.2
    assert corr(d_obj, obj_disp) > 0.7 and abs(corr(d_obj, agent_disp)) < 0.2


def test_energy_prefers_the_object_at_its_goal(tmp_path):
    z, p, o = synthetic()
    path = tmp_path / "proj.object.pt"
    save_object_projection(fit_object_projection(z, p, k=2, num_features=128), path, 2, 8, None, {"k": 2})
    energy = build_energy({"object_goal": {"projection": str(path)}})
    goal = z[0]
    # row 0: the agent where the goal has it, the object elsewhere; row 1: the reverse
    wrong_obj = z[0].flatten().clone()
    wrong_obj[[3, 11]] += 0.8
    right_obj_wrong_agent = synthetic(seed=1)[0][0].flatten().clone()  # another agent pose ...
    right_obj_wrong_agent[[3, 11]] = z[0].flatten()[[3, 11]]            # ... the goal's object channels
    lat = torch.stack([wrong_obj, right_obj_wrong_agent]).reshape(2, 1, 2, 8)
    rollout = SimpleNamespace(latents=lat, proprio=None, disagreement=None)
    e = energy(rollout, SimpleNamespace(latents=goal.expand(2, 2, 8), proprio=None), torch.zeros(2, 1, 2), {})
    assert e.shape == (2,) and torch.isfinite(e).all()
    full = build_energy({"goal": {"metric": "l2"}})(rollout, SimpleNamespace(latents=goal.expand(2, 2, 8), proprio=None),
                                                     torch.zeros(2, 1, 2), {})
    assert full[0] < full[1]  # the plain goal energy prefers the right agent pose
    assert e[0] > e[1]        # the object energy prefers the right object


def test_bad_projection_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="fit_object_energy"):
        load_object_projection(tmp_path / "none.pt")
    torch.save({"kind": "something else"}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="field 'kind'"):
        load_object_projection(tmp_path / "bad.pt")
    z, p, _ = synthetic(frames=500)
    path = tmp_path / "ok.pt"
    save_object_projection(fit_object_projection(z, p, k=2, num_features=32), path, 2, 8, None, {})
    energy = build_energy({"object_goal": {"projection": str(path)}})
    lat = torch.zeros(3, 2, 4, 8)  # 4 tokens, the file was fitted on 2
    with pytest.raises(ValueError, match=r"fitted on latents \[N=2, D=8\]"):
        energy(SimpleNamespace(latents=lat), SimpleNamespace(latents=torch.zeros(3, 4, 8)), torch.zeros(3, 2, 2), {})
    with pytest.raises(ConfigError, match="no proprio"):
        fit_object_projection(z, torch.zeros(500, 0))
    with pytest.raises(ConfigError, match="set 'projection'"):
        build_energy({"object_goal": {}})


def test_fit_script_and_planning_with_it(tmp_path):
    """fit_object_energy.py on a real collected dataset and the bundled model, then plan.py
    with energy=object_l2_all on that file (PointMaze has no object: this checks the plumbing)."""
    import json

    from tests.conftest import run_script

    data, proj = tmp_path / "pm", tmp_path / "pm.object.pt"
    run_script("collect.py", "env=point_maze", "episodes=3", "episode_length=40", "workers=1", f"out_dir={data}")
    proc = run_script("fit_object_energy.py", "world_model=pretrained:pointmaze", f"data_dir={data}", "k=4",
                      "num_features=32", "state_dims=[1,2]", f"out={proj}")
    assert "kept k=4 directions" in proc.stdout and "corr with state[1, 2]" in proc.stdout
    obj = load_object_projection(proj)
    assert obj["projection"].shape == (4 * 64, 4) and obj["fit"]["frames"] == 3 * 41
    out = tmp_path / "plan"
    run_script("plan.py", "task=point_maze", "episodes=2", "max_steps=10", "planner.samples=32", "planner.iterations=2",
               "video=false", "energy=object_l2_all", f"energy.object_goal.projection={proj}", f"out_dir={out}")
    s = json.loads((out / "summary.json").read_text())
    assert s["episodes"] == 2 and "ObjectGoalEnergy" in s["energy_built"]
