"""Episode dataset: round trip, resumable collection, clear errors on bad files."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import ROOT, run_script
from wmplan.worldmodel.data import DatasetError, Episode, EpisodeDataset, episode_path, write_episode, write_meta


def _episode(T: int = 5, rng=np.random.default_rng(0)) -> Episode:
    return Episode(
        frames=rng.integers(0, 255, (T + 1, 8, 8, 3), dtype=np.uint8),
        actions=rng.standard_normal((T, 2)).astype(np.float32),
        proprio=rng.standard_normal((T + 1, 4)).astype(np.float32),
        states=rng.standard_normal((T + 1, 7)),
        rewards=rng.standard_normal(T).astype(np.float32),
        success=rng.random(T) > 0.5,
    )


def test_round_trip(tmp_path):
    write_meta(tmp_path, {"env_id": "x"})
    eps = {i: _episode(3 + i) for i in range(3)}
    for i, ep in eps.items():
        write_episode(tmp_path, i, ep)
    ds = EpisodeDataset(tmp_path)
    assert ds.episode_ids == [0, 1, 2] and ds.meta["env_id"] == "x"
    for i, ep in eps.items():
        got = ds.load_episode(i)
        assert got.length == 3 + i
        for k in ("frames", "actions", "proprio", "states", "rewards", "success"):
            np.testing.assert_array_equal(getattr(got, k), getattr(ep, k))
            assert getattr(got, k).dtype == getattr(ep, k).dtype
    train, val = ds.split(val_fraction=0.34, seed=1)
    assert sorted(train + val) == [0, 1, 2] and len(val) == 1 and ds.split(0.34, seed=1) == (train, val)


def test_inconsistent_episode_rejected_on_write(tmp_path):
    ep = _episode(4)
    ep.actions = ep.actions[:3]
    with pytest.raises(DatasetError, match="'frames'|'proprio'|'states'"):
        write_episode(tmp_path, 0, ep)
    assert not episode_path(tmp_path, 0).exists()


def test_corrupted_file_names_episode_and_file(tmp_path):
    write_meta(tmp_path, {})
    for i in range(3):
        write_episode(tmp_path, i, _episode())
    p = episode_path(tmp_path, 1)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])  # truncate
    ds = EpisodeDataset(tmp_path)
    with pytest.raises(DatasetError) as err:
        ds.load_episode(1)
    assert "episode 1" in str(err.value) and "ep_000001.npz" in str(err.value)
    # the other episodes stay readable
    assert ds.load_episode(0).length == 5 and ds.load_episode(2).length == 5
    with pytest.raises(DatasetError, match="episode 7 .*missing"):
        ds.load_episode(7)


def test_missing_meta_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="meta.json"):
        EpisodeDataset(tmp_path)


def test_collect_resumes_after_kill(tmp_path):
    """Kill a collection mid-run, rerun it: the result equals one uninterrupted run."""
    args = ["episode_length=30", "workers=1", "seed=3"]
    ref = tmp_path / "ref"
    run_script("collect.py", "episodes=5", f"out_dir={ref}", *args)

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts/collect.py"), "episodes=400", f"out_dir={out}", *args],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "episodes").glob("ep_*.npz"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = EpisodeDataset(out).episode_ids
    assert 2 <= len(done) < 400, "the kill should land mid-collection"

    log = run_script("collect.py", "episodes=5", f"out_dir={out}", *args).stdout
    assert f"{min(len(done), 5)} episodes present" in log
    a, b = EpisodeDataset(ref), EpisodeDataset(out)
    assert b.episode_ids[:5] == [0, 1, 2, 3, 4]
    for i in range(5):
        ea, eb = a.load_episode(i), b.load_episode(i)
        np.testing.assert_array_equal(ea.frames, eb.frames)
        np.testing.assert_array_equal(ea.actions, eb.actions)


def test_collect_refuses_incompatible_resume(tiny_dataset):
    proc = run_script("collect.py", "episodes=7", "episode_length=25", "workers=1", f"out_dir={tiny_dataset}", check=False)
    assert proc.returncode != 0
    assert "episode_length" in proc.stderr and "meta.json" in proc.stderr


def test_tiny_dataset_content(tiny_dataset):
    ds = EpisodeDataset(tiny_dataset)
    assert len(ds) == 6 and ds.meta["env_id"] == "wmplan/PointMaze-v0"
    ep = ds.load_episode(0)
    assert ep.frames.shape == (25, 64, 64, 3) and ep.actions.shape == (24, 2) and ep.proprio.shape == (25, 4)
    assert np.all(np.abs(ep.actions) <= 1.0)
    # proprio is the point's position: consecutive frames move consistently with velocity * dt
    dxy = ep.proprio[1:, :2] - ep.proprio[:-1, :2]
    assert np.abs(dxy).max() < 0.15
