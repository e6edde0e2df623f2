"""Subgoal planning: the waypoint graph finds the detour, the planner hands the inner planner the
right subgoal (and the goal itself once it is near), banks are checked, and a bank made by
scripts/make_waypoint_bank.py from a real dataset renders and plans through scripts/plan.py."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import wmplan.config_store  # noqa: F401  (registers the structured configs)
import wmplan.envs  # noqa: F401  (registers the wmplan/* ids)
from tests.conftest import ROOT, run_script
from wmplan.checks import ConfigError
from wmplan.planners import Goal, PlanContext, build_planner
from wmplan.planners.analytic import LinearLatentWorldModel
from wmplan.planners.waypoints import WaypointGraph, load_waypoint_bank, render_states
from wmplan.worldmodel.data import EpisodeDataset

TASKS = sorted(p.stem for p in (ROOT / "configs" / "task").glob("*.yaml"))
STEP = 25  # intensity levels per waypoint step (latent = mean intensity / 255)


def plan_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="plan", overrides=list(overrides))


def corridor() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A U around a wall: up x=0, across y=5, down x=5 (positions in waypoint steps).

    Returns positions [W,2], episode ids [W], steps [W]; the start (0,0) and the end (5,0) are 5
    apart in a straight line but only connected through the top of the U."""
    legs = [[(0, y) for y in range(6)], [(x, 5) for x in range(6)], [(5, y) for y in range(5, -1, -1)]]
    pos = np.array([p for leg in legs for p in leg], float)
    ids = np.repeat(np.arange(3), 6)
    return pos, ids, np.tile(np.arange(6), 3)


def test_graph_takes_the_detour_and_stops_at_the_goal():
    pos, ids, steps = corridor()
    g = WaypointGraph(torch.from_numpy(pos).float(), ids, steps, links=4, link_quantile=0.5)
    start, goal = 0, len(pos) - 1
    assert g.dist[start, goal] == pytest.approx(15, abs=1e-3)  # 5 up, 5 across, 5 down (legs joined by links)
    node, final = g.next_waypoint(np.array([start]), np.array([goal]), lookahead=2)
    assert tuple(pos[node[0]]) == (0, 2) and not final[0]  # up the corridor, not straight at the goal
    node, final = g.next_waypoint(np.array([start]), np.array([goal]), lookahead=16)
    assert node[0] == goal and final[0]  # within reach: the goal itself


def test_match_picks_the_connected_candidates():
    pos, ids, steps = corridor()
    g = WaypointGraph(torch.from_numpy(pos).float(), ids, steps, links=4)
    cur, goal = torch.tensor([[0.0, 0.4]]), torch.tensor([[5.0, 0.2]])
    s, t = g.match(cur, goal, k=1)
    assert tuple(pos[s[0]]) == (0, 0) and tuple(pos[t[0]]) == (5, 0)  # nearest: 0.4 + 15 + 0.2 steps
    s, t = g.match(cur, goal, k=2)  # of the 2x2 candidate pairs, 0.6 + 13 + 0.8 is the least
    assert tuple(pos[s[0]]) == (0, 1) and tuple(pos[t[0]]) == (5, 1)


def write_bank(path, pos: np.ndarray, ids: np.ndarray, steps: np.ndarray, **extra) -> None:
    frames = np.zeros((len(pos), 4, 4, 3), np.uint8)
    frames[..., 0] = (pos[:, 0] * STEP)[:, None, None]
    frames[..., 1] = (pos[:, 1] * STEP)[:, None, None]
    fields = dict(frames=frames, proprio=np.zeros((len(pos), 2), np.float32), episode_ids=ids, steps=steps,
                  stride=np.array(5), env_id=np.array("wmplan/PointMaze-v0"))
    fields.update(extra)
    np.savez(path, **{k: v for k, v in fields.items() if v is not None})


def analytic_model() -> LinearLatentWorldModel:
    eye = torch.eye(3)
    return LinearLatentWorldModel(eye, eye[:, :2] * (STEP / 255), -torch.ones(2), torch.ones(2))


def test_planner_plans_to_the_subgoal_then_to_the_goal(tmp_path, one_thread):
    pos, ids, steps = corridor()
    write_bank(tmp_path / "bank.npz", pos, ids, steps)
    inner = {"name": "cem", "samples": 32, "iterations": 2, "elites": 4}
    planner = build_planner({"name": "subgoal", "bank": str(tmp_path / "bank.npz"), "lookahead": 2, "horizon": 3,
                             "links": 4, "inner": inner})
    reference = build_planner({**inner, "horizon": 3})
    wm = analytic_model()
    lat = lambda xy: torch.tensor([[[xy[0] * STEP / 255, xy[1] * STEP / 255, 0.0]]])  # noqa: E731  [1,N=1,D=3]
    ctx, goal = PlanContext(lat((0, 0))[:, None]), Goal(lat((5, 0)))
    out = planner.plan(wm, ctx, goal, generator=torch.Generator().manual_seed(3))
    assert out.stats["subgoal"].tolist() == [2] and not bool(out.stats["subgoal_final"][0])
    want = reference.plan(wm, ctx, Goal(lat((0, 2))), generator=torch.Generator().manual_seed(3))
    assert torch.equal(out.actions, want.actions)  # the inner planner ran on the subgoal's latent
    near = Goal(lat((0, 1)))
    planner.reset(), reference.reset()
    out = planner.plan(wm, ctx, near, generator=torch.Generator().manual_seed(4))
    assert out.stats["subgoal"].tolist() == [-1] and bool(out.stats["subgoal_final"][0])
    assert torch.equal(out.actions, reference.plan(wm, ctx, near, generator=torch.Generator().manual_seed(4)).actions)


def test_bad_banks_and_configs_name_the_file_and_field(tmp_path):
    pos, ids, steps = corridor()
    bad = tmp_path / "bad.npz"
    write_bank(bad, pos, ids, steps, frames=None)
    with pytest.raises(ConfigError, match=r"bad\.npz.*states or frames"):
        load_waypoint_bank(bad)
    write_bank(bad, pos, ids, steps[:-1])
    with pytest.raises(ConfigError, match=r"bad\.npz: field 'steps' has 17 rows"):
        load_waypoint_bank(bad)
    write_bank(bad, pos, ids, steps, proprio=np.full((len(pos), 2), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"bad\.npz.*'proprio'"):
        load_waypoint_bank(bad)
    with pytest.raises(ConfigError, match="no bundled waypoint bank 'nope'"):
        load_waypoint_bank("bundled:nope")
    with pytest.raises(ConfigError, match="needs a waypoint bank"):
        build_planner({"name": "subgoal"})
    good = tmp_path / "good.npz"
    write_bank(good, pos, ids, steps)
    with pytest.raises(ConfigError, match="inner planner cannot be 'subgoal'"):
        build_planner({"name": "subgoal", "bank": str(good), "inner": {"name": "subgoal"}})
    with pytest.raises(ConfigError, match="recorded in 'wmplan/PointMaze-v0', but env.id='wmplan/Reacher-v0'"):
        build_planner({"name": "subgoal", "bank": str(good)}).prepare("wmplan/Reacher-v0", {})


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_a_bundled_bank_of_its_env(task):
    cfg = plan_cfg(f"task={task}", "planner=subgoal")
    bank = load_waypoint_bank(cfg.planner.bank)
    assert bank.env_id == cfg.env.id and bank.states is not None and bank.frames is None
    assert cfg.planner.inner.horizon == cfg.planner.horizon  # one horizon
    assert bank.stride == 5 and len(np.unique(bank.episode_ids)) == 60


def test_bank_from_a_real_dataset_renders_its_frames_and_plans(tiny_dataset, tmp_path):
    bank_path = tmp_path / "bank.npz"
    run_script("make_waypoint_bank.py", f"data_dir={tiny_dataset}", f"out={bank_path}", "stride=4")
    bank = load_waypoint_bank(bank_path)
    ds = EpisodeDataset(tiny_dataset)
    assert len(bank) == len(ds) * 7  # steps 0,4,...,24 of 24-step episodes
    frames = render_states(bank.env_id, ds.meta.get("env_kwargs", {}), bank.states)
    recorded = np.concatenate([ep.frames[::4] for _, ep in ds.iter_episodes()])
    assert np.abs(frames.astype(int) - recorded.astype(int)).mean() < 1.0  # the task re-renders what was recorded
    out = tmp_path / "run"
    run_script("plan.py", "planner=subgoal", f"planner.bank={bank_path}", "episodes=2", "num_envs=2", "max_steps=10",
               "planner.inner.samples=16", "planner.inner.iterations=1", "planner.inner.elites=4", "video=false",
               "threads=1", f"out_dir={out}")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["planner"]["name"] == "subgoal" and summary["episodes"] == 2
    assert summary["config"]["planner"]["bank"] == str(bank_path)
    # the summary records which bank's bytes were used (a rebuilt bank at the same path differs)
    assert summary["waypoint_bank"] == str(bank_path)
    assert summary["waypoint_bank_sha256"] == hashlib.sha256(bank_path.read_bytes()).hexdigest() == bank.sha256
    assert (ROOT / "planners" / "waypoint_banks").is_dir()
