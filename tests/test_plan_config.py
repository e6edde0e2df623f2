"""Hydra composition of scripts/plan.py: tasks, precedence of command-line overrides, the
recorded config equals what ran, and a multirun sweep with its comparison table."""
from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import wmplan.config_store  # noqa: F401  (registers the structured configs)
from tests.conftest import ROOT, run_script
from wmplan.planners import build_energy, build_planner
from wmplan.worldmodel.goal_policy import GoalPolicy
from wmplan.worldmodel.pretrained_models import resolve_model_path, resolve_policy_path
from wmplan.worldmodel.utils import load_checkpoint
from wmplan.worldmodel.world_model import WorldModel

TASKS = sorted(p.stem for p in (ROOT / "configs" / "task").glob("*.yaml"))


def plan_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="plan", overrides=list(overrides))


def test_six_tasks():
    assert TASKS == ["arm_pick_place", "arm_push", "arm_reach", "point_maze", "push_t", "reacher"]


@pytest.mark.parametrize("task", TASKS)
def test_task_composes_env_model_energy_horizon(task):
    cfg = plan_cfg(f"task={task}")
    meta = load_checkpoint(resolve_model_path(cfg.world_model)).get("meta", {})
    assert meta.get("env_id") in (None, cfg.env.id), (task, meta.get("env_id"), cfg.env.id)
    assert cfg.planner.horizon < 8  # the task's horizon replaced the planner dataclass default
    planner = build_planner(OmegaConf.to_container(cfg.planner), energy=build_energy(OmegaConf.to_container(cfg.energy)))
    assert planner.config.horizon == cfg.planner.horizon
    if cfg.prior is not None:  # a task's goal policy was trained in its world model's latent space
        GoalPolicy.load(resolve_policy_path(cfg.prior)).check_fits(WorldModel.load(resolve_model_path(cfg.world_model)), task)


def test_command_line_overrides_win_over_the_task():
    cfg = plan_cfg("task=reacher")
    assert cfg.energy.goal.metric == "l2" and cfg.planner.horizon == 2 and cfg.max_steps == 50
    cfg = plan_cfg("task=reacher", "energy=goal_l1", "planner=mppi", "max_steps=7", "energy.goal.proprio_weight=2")
    assert cfg.energy.goal.metric == "l1" and cfg.energy.goal.proprio_weight == 2.0
    assert cfg.planner.name == "mppi" and cfg.planner.horizon == 2 and cfg.max_steps == 7
    assert cfg.env.id == "wmplan/Reacher-v0" and cfg.world_model == "pretrained:reacher"


def test_schemas_are_typed_and_closed():
    with pytest.raises(Exception, match="samples"):
        plan_cfg("planner.samples=many")
    with pytest.raises(Exception, match="sampels"):
        plan_cfg("planner.sampels=5")
    with pytest.raises(Exception, match="metrc"):
        plan_cfg("energy.goal.metrc=l2")


def test_yaml_holds_only_what_differs():
    """icem.yaml lists only what differs from CEMConfig; the composed node has every field."""
    text = (ROOT / "configs" / "planner" / "icem.yaml").read_text()
    assert "horizon" not in text and "momentum" not in text
    cfg = plan_cfg("planner=icem")
    assert cfg.planner.momentum == 0.1 and cfg.planner.keep_elites == 0.3


TINY = ["episodes=1", "num_envs=1", "max_steps=5", "planner.samples=16", "planner.iterations=1",
        "planner.elites=4", "video=false", "threads=1"]


def test_summary_records_the_config_that_ran(tmp_path):
    """Changing the task's energy on the command line changes both the recorded config and the
    energy the planner was built with."""
    run_script("plan.py", "task=reacher", "energy=goal_l1", f"out_dir={tmp_path}", *TINY)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["config"]["energy"]["goal"] == {"weight": 1.0, "metric": "l1", "steps": "last", "step_weights": None,
                                             "proprio_weight": 0.0}
    assert "metric='l1'" in s["energy_built"] and "steps='last'" in s["energy_built"]
    assert "energy=goal_l1" in s["overrides"] and s["task"] == "reacher"
    recorded = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert recorded.energy.goal.metric == "l1" and recorded.planner.samples == 16


def test_multirun_writes_one_folder_per_setting_and_a_table(tmp_path):
    proc = run_script("plan.py", "-m", "planner=cem,mppi", f"hydra.sweep.dir={tmp_path}", "episodes=1", "num_envs=1",
                      "max_steps=5", "planner.samples=32", "planner.iterations=1", "video=false", "threads=1")
    runs = sorted(p.parent.name for p in tmp_path.glob("*/summary.json"))
    assert len(runs) == 2 and any("planner=cem" in r for r in runs) and any("planner=mppi" in r for r in runs)
    table = (tmp_path / "compare.md").read_text()
    assert table.count("\n") == 4 and "planner=mppi" in table and table.splitlines()[0] in proc.stdout
    rows = json.loads((tmp_path / "compare.json").read_text())["rows"]
    assert {r["planner"] for r in rows} == {"cem", "mppi"} and (tmp_path / "compare.png").stat().st_size > 1000


def test_model_configs_take_their_defaults_from_the_dataclasses():
    """configs/predictor and configs/encoder hold only what differs from ACPredictorConfig and
    ViTConfig; the composed node has every field, typed, with the registry's type tag."""
    from wmplan.worldmodel.predictor import ACPredictorConfig

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train_predictor", overrides=["data_dir=x", "predictor=ac_compact", "encoder=vit_tiny"])
        assert cfg.predictor.type == "ac" and cfg.predictor.embed_dim == 64 and cfg.predictor.depth == 3
        assert cfg.predictor.num_heads == ACPredictorConfig.num_heads and "num_heads" not in (
            ROOT / "configs" / "predictor" / "ac_compact.yaml").read_text()
        assert cfg.encoder.type == "vit" and cfg.encoder.abs_pos_embed is True and cfg.encoder.patch_size == 8
        with pytest.raises(Exception, match="embed_dm"):
            compose(config_name="train_predictor", overrides=["data_dir=x", "predictor.embed_dm=3"])


def test_summary_names_the_task_only_when_its_env_ran(tmp_path):
    """env=reacher without task= keeps the default task's settings, so the summary names no task."""
    run_script("plan.py", "env=reacher", "world_model=pretrained:reacher", f"out_dir={tmp_path / 'a'}", *TINY)
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["task"] is None and s["env_id"] == "wmplan/Reacher-v0"
    run_script("plan.py", "task=reacher", "env=reacher", f"out_dir={tmp_path / 'b'}", *TINY)
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["task"] == "reacher"
