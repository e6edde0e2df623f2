"""No silent garbage in the data layer: bad episodes, settings and half-collected datasets are
errors that name the file / episode, the field and the value (issue 9)."""
from __future__ import annotations

import json
import os

import gymnasium as gym
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from scripts.collect import collect_settings, dataset_meta, prepare_out_dir
from scripts.dataset_stats import dataset_stats
from tests.conftest import ROOT, run_script
from wmplan.checks import ConfigError, NonFiniteError
from wmplan.worldmodel.data import DatasetError, Episode, EpisodeDataset, episode_path, write_episode, write_meta

META = {"env_id": "test", "image_size": 16, "action_dim": 2, "proprio_dim": 3, "state_dim": 4}


def _episode(T: int = 4, size: int = 16, A: int = 2, seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        frames=rng.integers(0, 255, (T + 1, size, size, 3), dtype=np.uint8),
        actions=rng.uniform(-1, 1, (T, A)).astype(np.float32),
        proprio=rng.standard_normal((T + 1, 3)).astype(np.float32),
        states=rng.standard_normal((T + 1, 4)),
        rewards=rng.standard_normal(T).astype(np.float32),
        success=rng.random(T) > 0.5,
    )


def _dataset(root, n: int = 3, meta: dict | None = None) -> EpisodeDataset:
    write_meta(root, {**META, "num_episodes": n} if meta is None else meta)
    for i in range(n):
        write_episode(root, i, _episode(seed=i))
    return EpisodeDataset(root)


def _foreign(root, i: int, ep: Episode, **override) -> None:
    """Write an episode file with np.savez directly (bypassing the validating writer)."""
    p = episode_path(root, i)
    p.parent.mkdir(parents=True, exist_ok=True)
    np.savez(p, **{**{k: getattr(ep, k) for k in ("frames", "actions", "proprio", "states", "rewards", "success")},
                   **override})


# ---- episode validation: write and load ---------------------------------------------------
@pytest.mark.parametrize("field, index", [("actions", (2, 1)), ("proprio", (3, 0)), ("states", (0, 2)),
                                          ("rewards", (1,))])
def test_nonfinite_rejected_on_write_and_load(tmp_path, field, index):
    ds = _dataset(tmp_path, 2)
    ep = _episode()
    getattr(ep, field)[index] = np.nan if field != "proprio" else np.inf
    with pytest.raises(DatasetError) as err:
        write_episode(tmp_path, 5, ep)
    msg = str(err.value)
    assert "episode 5" in msg and "ep_000005.npz" in msg and f"'{field}'" in msg and str(list(index)) in msg
    assert ("inf" if field == "proprio" else "nan") in msg
    assert not episode_path(tmp_path, 5).exists()
    _foreign(tmp_path, 1, ep)
    with pytest.raises(DatasetError, match=rf"episode 1 \(.*ep_000001.npz\): field '{field}'.*index \[{index[0]}"):
        ds.load_episode(1)


def test_one_dimensional_and_string_actions(tmp_path):
    ds = _dataset(tmp_path, 1)
    ep = _episode()
    flat = Episode(**{**ep.__dict__, "actions": ep.actions[:, 0]})
    with pytest.raises(DatasetError, match=r"episode 3 .*field 'actions' must be 2-D \[T,A\], got shape \[4\]"):
        write_episode(tmp_path, 3, flat)
    _foreign(tmp_path, 0, ep, actions=ep.actions.astype(str))  # a foreign file with string actions
    with pytest.raises(DatasetError, match=r"episode 0 .*ep_000000.npz.*field 'actions' must be float.*dtype <U"):
        ds.load_episode(0)
    _foreign(tmp_path, 0, ep, actions=np.array([[1.0, "a"]] * 4, dtype=object))  # pickled objects
    with pytest.raises(DatasetError, match=r"episode 0 .*field 'actions' holds Python objects"):
        ds.load_episode(0)
    _foreign(tmp_path, 0, ep, frames=ep.frames.astype(np.float32))
    with pytest.raises(DatasetError, match=r"episode 0 .*field 'frames' must be uint8.*float32"):
        ds.load_episode(0)


def test_zero_step_episode_rejected(tmp_path):
    ep = _episode(T=0)
    assert ep.frames.shape[0] == 1 and ep.actions.shape == (0, 2)
    with pytest.raises(DatasetError, match=r"episode 0 .*field 'actions' has 0 steps.*at least 1"):
        write_episode(tmp_path, 0, ep)
    ds = _dataset(tmp_path / "ds", 1)
    _foreign(ds.root, 0, ep)
    with pytest.raises(DatasetError, match="episode 0 .*0 steps"):
        ds.load_episode(0)


def test_dims_checked_against_meta(tmp_path):
    ds = _dataset(tmp_path, 2)
    with pytest.raises(DatasetError) as err:
        write_episode(tmp_path, 2, _episode(A=3))
    msg = str(err.value)
    assert "episode 2" in msg and "'actions'" in msg and "action_dim 3" in msg and "action_dim=2" in msg
    assert "meta.json" in msg and not episode_path(tmp_path, 2).exists()
    _foreign(tmp_path, 1, _episode(A=3))
    with pytest.raises(DatasetError, match=r"episode 1 .*'actions' has action_dim 3 but .*meta.json says action_dim=2"):
        ds.load_episode(1)
    bad_p = _episode()
    bad_p.proprio = bad_p.proprio[:, :2]
    with pytest.raises(DatasetError, match="'proprio' has proprio_dim 2 but .*proprio_dim=3"):
        write_episode(tmp_path, 2, bad_p)


def test_mixed_frame_sizes(tmp_path):
    """One episode with 12x12 frames among 16x16 ones: caught by meta image_size, and by
    dataset_stats' episode-to-episode check when meta.json has no image_size."""
    ds = _dataset(tmp_path / "a", 2)
    _foreign(ds.root, 1, _episode(size=12))
    with pytest.raises(DatasetError, match=r"episode 1 .*'frames' has image_size \[12, 12\] .*image_size=16"):
        ds.load_episode(1)
    with pytest.raises(DatasetError, match="episode 2 .*image_size=16"):
        write_episode(ds.root, 2, _episode(size=12))
    root = tmp_path / "b"
    write_meta(root, {"env_id": "test"})
    write_episode(root, 0, _episode())
    write_episode(root, 1, _episode(size=12))
    with pytest.raises(DatasetError, match=r"episode 1 .*'frames' has image_size \[12, 12\] but episode 0 says"):
        dataset_stats(root)


def test_bad_meta_fields(tmp_path):
    write_meta(tmp_path, {**META, "num_episodes": -2})
    with pytest.raises(DatasetError, match=r"meta.json.*'num_episodes' must be >= 1, got -2"):
        EpisodeDataset(tmp_path)
    (tmp_path / "meta.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="meta.json: must hold a JSON object"):
        EpisodeDataset(tmp_path)


# ---- completeness: meta num_episodes ------------------------------------------------------
def test_missing_episode_vs_num_episodes(tmp_path):
    ds = _dataset(tmp_path, 4)
    assert ds.num_episodes == 4 and ds.missing_episodes() == [] and ds.require_complete() is ds
    for i in (1, 3):
        episode_path(tmp_path, i).unlink()
    ds = EpisodeDataset(tmp_path)
    assert ds.episode_ids == [0, 2] and ds.missing_episodes() == [1, 3]
    with pytest.raises(DatasetError) as err:
        ds.require_complete()
    msg = str(err.value)
    assert "num_episodes=4" in msg and "1, 3" in msg and "meta.json" in msg and "scripts/collect.py" in msg
    st = dataset_stats(tmp_path)  # statistics still work and report the gap
    assert st["episodes"] == 2 and st["missing_episodes"] == [1, 3] and st["num_episodes"] == 4
    # an episode file beyond num_episodes is an inconsistency too
    write_episode(tmp_path, 1, _episode()); write_episode(tmp_path, 3, _episode()); write_episode(tmp_path, 9, _episode())
    with pytest.raises(DatasetError, match="num_episodes=4 but episode file.* 9 lie beyond"):
        EpisodeDataset(tmp_path).require_complete()


def test_old_dataset_without_num_episodes_counts_as_complete(tmp_path):
    ds = _dataset(tmp_path, 2, meta=dict(META))
    assert ds.num_episodes is None and ds.missing_episodes() == [] and ds.require_complete() is ds
    empty = tmp_path / "empty"
    write_meta(empty, dict(META))
    with pytest.raises(DatasetError, match="no episodes"):
        EpisodeDataset(empty).require_complete()


# ---- collect: settings validated before anything is written --------------------------------
def _collect_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("collect", overrides=["out_dir=/nowhere", *overrides])  # a later out_dir= wins


@pytest.mark.parametrize("override, field, value", [
    ("episodes=0", "episodes", "0"), ("episodes=2.5", "episodes", "2.5"), ("episode_length=0", "episode_length", "0"),
    ("workers=-1", "workers", "-1"), ("seed=abc", "seed", "'abc'"), ("seed=-3", "seed", "-3"),
    ("policy_mix={uniform: -1}", "policy_mix.uniform", "-1"), ("policy_mix={uniform: 0}", "policy_mix", "0"),
    ("policy_mix={bogus: 1}", "policy_mix", "'bogus'"), ("+policy_kwargs.nope={}", "policy_kwargs", "'nope'"),
    ("policy_mix={uniform: .nan}", "policy_mix.uniform", "nan"),
    ("env.collect.policy_kwargs.correlated.correlation=1.5", "policy_kwargs.correlated", "1.5"),
    ("+policy_kwargs.correlated.wrong=1", "policy_kwargs.correlated", "wrong"),
    ("env.id=wmplan/Nope-v0", "env.id", "Nope"), ("+env.kwargs.bogus=1", "env.kwargs", "bogus"),
])
def test_collect_settings_rejected(override, field, value):
    with pytest.raises(ConfigError) as err:
        dataset_meta(collect_settings(_collect_cfg(override)))
    msg = str(err.value)
    assert field in msg and value in msg, msg


def test_failed_collect_leaves_no_meta_and_rerun_works(tmp_path):
    out = tmp_path / "ds"
    proc = run_script("collect.py", "episodes=2", "episode_length=3", "workers=1", f"out_dir={out}",
                      "env.collect.policy_kwargs.correlated.correlation=1.5", check=False, timeout=120)
    assert proc.returncode != 0 and "ConfigError" in proc.stderr and "policy_kwargs.correlated" in proc.stderr
    assert "correlation=1.5: must be in [0, 1)" in proc.stderr
    assert not (out / "meta.json").exists()
    # a meta.json under which nothing was collected (e.g. an older wmplan's failed run) does not block
    write_meta(out, {"env_id": "wmplan/PointMaze-v0", "episode_length": 99, "seed": 7})
    run_script("collect.py", "episodes=2", "episode_length=3", "workers=1", f"out_dir={out}", timeout=120)
    ds = EpisodeDataset(out).require_complete()
    assert ds.episode_ids == [0, 1] and ds.meta["num_episodes"] == 2 and ds.meta["episode_length"] == 3


def test_grow_dataset_updates_num_episodes_and_removes_stale_temps(tmp_path):
    out = tmp_path / "ds"
    args = ("episode_length=3", "workers=1", f"out_dir={out}")
    run_script("collect.py", "episodes=2", *args, timeout=120)
    assert json.loads((out / "meta.json").read_text())["num_episodes"] == 2
    stale = out / "episodes" / ".ep_000002.npz.999999999.abc123.tmp"  # a killed writer's leftover
    stale.write_bytes(b"partial")
    live = out / "episodes" / f".ep_000003.npz.{os.getpid()}.abc123.tmp"  # a live writer's: kept
    live.write_bytes(b"writing")
    log = run_script("collect.py", "episodes=3", *args, timeout=120).stdout
    assert "2 episodes present, 1 to collect" in log and "removed 1 temp file" in log
    assert not stale.exists() and live.exists()
    ds = EpisodeDataset(out).require_complete()
    assert ds.episode_ids == [0, 1, 2] and ds.meta["num_episodes"] == 3
    # the same settings again: nothing to do, meta.json is left as it is (its fingerprint too)
    before = (out / "meta.json").stat().st_mtime_ns
    meta = dataset_meta(collect_settings(_collect_cfg("episodes=3", *args)))
    assert prepare_out_dir(out, meta, 3) == ({0, 1, 2}, 3)
    assert (out / "meta.json").stat().st_mtime_ns == before


def test_nonfinite_policy_action_names_episode(monkeypatch):
    from wmplan.envs import policies, rollout

    class NaNPolicy(policies.UniformRandomPolicy):
        def act(self, env):
            return np.full(self.space.shape, np.nan, np.float32)

    monkeypatch.setitem(policies.POLICIES, "uniform", NaNPolicy)
    kwargs = {"image_size": 16}
    with pytest.raises(NonFiniteError, match=r"episode 5 step 0 \(policy 'uniform'\).*'action'.*nan"):
        rollout.collect_episode("wmplan/PointMaze-v0", kwargs, 0, 5, length=3, policy_mix={"uniform": 1.0},
                                policy_kwargs={})
    env = gym.make("wmplan/PointMaze-v0", disable_env_checker=True, **kwargs)
    with pytest.raises(ConfigError, match="policy 'uniform'.*'action'.*nan"):
        rollout.check_policy_settings(env, {"uniform": 1.0}, {})


# ---- dataset_stats ---------------------------------------------------------------------------
def test_dataset_stats_bad_episode_exits_nonzero(tmp_path):
    ds = _dataset(tmp_path, 3)
    ep = _episode()
    ep.actions[1, 0] = np.inf
    _foreign(ds.root, 2, ep)
    proc = run_script("dataset_stats.py", f"data_dir={tmp_path}", check=False, timeout=120)
    assert proc.returncode != 0
    assert "episode 2" in proc.stderr and "ep_000002.npz" in proc.stderr and "'actions'" in proc.stderr
    assert not (tmp_path / "stats.json").exists()


@pytest.mark.parametrize("bad", [-1, 0, -5, 1.5, True, "all"])
def test_dataset_stats_max_episodes_rejected(tmp_path, bad):
    _dataset(tmp_path, 3)
    with pytest.raises(ConfigError, match=rf"'max_episodes' must .*got {bad!r}.*max_episodes=null"):
        dataset_stats(tmp_path, bad)


def test_dataset_stats_max_episodes_script(tmp_path):
    _dataset(tmp_path, 3)
    assert dataset_stats(tmp_path, None)["episodes"] == 3 and dataset_stats(tmp_path, 2)["episodes"] == 2
    proc = run_script("dataset_stats.py", f"data_dir={tmp_path}", "max_episodes=-1", check=False, timeout=120)
    assert proc.returncode != 0 and "max_episodes" in proc.stderr and "-1" in proc.stderr
