"""Dataset importers (LeRobot v3.0 and v2.1, Minari) and the LeRobot exporter, on fixtures that the
real libraries wrote (tools/make_lerobot_fixtures.py: lerobot 0.6.1 for v3.0, 0.3.3 for v2.1;
tools/make_minari_fixtures.py).

Each ``<fixture>.decoded.npz`` holds what the library's own reader returned for that fixture;
imported episodes must equal it: image features and Minari frames exactly, AV1 video frames
within VIDEO_TOL levels (measured: identical, PyAV 18 here vs lerobot's PyAV 15), actions,
proprio, rewards and success exactly, with the right episode lengths and boundaries.
Needs only the optional extras (pyarrow, av, pillow, h5py), not lerobot or minari.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="pyarrow missing: pip install 'wmplan[lerobot]'")
pytest.importorskip("av", reason="PyAV missing: pip install 'wmplan[lerobot]'")
pytest.importorskip("h5py", reason="h5py missing: pip install 'wmplan[minari]'")
pytest.importorskip("PIL", reason="pillow missing: pip install 'wmplan[minari]'")

import h5py  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from tests.conftest import run_script  # noqa: E402
from wmplan.worldmodel.data import DatasetError, EpisodeDataset  # noqa: E402
from wmplan.worldmodel.formats import FormatError, crop_resize, import_episodes, open_reader  # noqa: E402
from wmplan.worldmodel.formats.lerobot_export import export_lerobot  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LEROBOT = FIXTURES / "lerobot"
MINARI = FIXTURES / "minari"
VIDEO = "observation.images.cam"   # AV1 video camera, 64x96
WRIST = "observation.images.wrist"  # image feature (PNG bytes), 32x32
VIDEO_TOL = 2                       # max abs difference (uint8 levels) against lerobot's decoded video frames
EPISODE_FIELDS = ("frames", "actions", "proprio", "states", "rewards", "success")


def _bounds(lengths: np.ndarray) -> list[tuple[int, int]]:
    starts = np.concatenate([[0], np.cumsum(lengths)])
    return list(zip(starts[:-1].tolist(), starts[1:].tolist()))


def _import(fmt: str, source: Path, out: Path, **kw) -> EpisodeDataset:
    camera = kw.pop("camera")
    import_episodes(open_reader(fmt, source, camera, **kw), out)
    return EpisodeDataset(out).require_complete()


@pytest.mark.parametrize("name, version, bounds_source", [
    ("v30_onefile", "v3.0", "meta/stats.json"), ("v30_chunked", "v3.0", "meta/stats.json"),
    ("v21", "v2.1", "meta/episodes_stats.jsonl")])
def test_lerobot_fixture_matches_lerobot_reader(name, version, bounds_source, tmp_path):
    ref = np.load(LEROBOT / f"{name}.decoded.npz")
    spans = _bounds(ref["lengths"])
    video = _import("lerobot", LEROBOT / name, tmp_path / "video", camera=VIDEO)
    wrist = _import("lerobot", LEROBOT / name, tmp_path / "wrist", camera=WRIST)
    assert video.meta["source_codebase_version"] == version and video.meta["camera_storage"] == "video"
    assert video.meta["crop"] == [0, 16, 64] and video.meta["image_size"] == 64 and wrist.meta["crop"] is None
    assert video.meta["action_bounds_source"] == bounds_source and video.meta["fps"] == 10
    assert video.meta["tasks"] == ["move the square"]
    np.testing.assert_array_equal(np.float32(video.meta["action_low"]), ref["action"].min(0))
    np.testing.assert_array_equal(np.float32(video.meta["action_high"]), ref["action"].max(0))
    assert len(video) == len(spans) == video.meta["num_episodes"]
    assert video.meta["source_episode_ids"] == sorted(set(ref["episode_index"].tolist()))
    for i, (s, e) in enumerate(spans):
        ep, wr = video.load_episode(i), wrist.load_episode(i)
        assert ep.length == e - s - 1 and ep.frames.shape == (e - s, 64, 64, 3)
        diff = np.abs(ep.frames.astype(int) - ref["observation_images_cam"][s:e, :, 16:80].astype(int))
        assert diff.max() <= VIDEO_TOL, (i, diff.max())
        np.testing.assert_array_equal(wr.frames, ref["observation_images_wrist"][s:e])
        np.testing.assert_array_equal(ep.actions, ref["action"][s:e - 1])
        np.testing.assert_array_equal(ep.proprio, ref["observation_state"][s:e])
        np.testing.assert_array_equal(ep.rewards, ref["next_reward"][s:e - 1])
        np.testing.assert_array_equal(ep.success, ref["next_success"][s:e - 1])
        assert ep.states.shape == (e - s, 0) and ep.states.dtype == np.float64
        for k in ("actions", "proprio", "rewards", "success"):  # the camera changes only the frames
            np.testing.assert_array_equal(getattr(ep, k), getattr(wr, k))


def test_lerobot_resize_and_no_state(tmp_path):
    ref = np.load(LEROBOT / "v30_onefile.decoded.npz")
    ds = _import("lerobot", LEROBOT / "v30_onefile", tmp_path / "o", camera=VIDEO, image_size=32, state=None)
    assert ds.meta["resize"] == [64, 32] and ds.meta["proprio_dim"] == 0 and ds.meta["state_key"] is None
    s, e = _bounds(ref["lengths"])[1]
    ep = ds.load_episode(1)
    want = crop_resize(ref["observation_images_cam"][s:e], 32)
    assert ep.frames.shape == (e - s, 32, 32, 3) and ep.proprio.shape == (e - s, 0)
    assert np.abs(ep.frames.astype(int) - want.astype(int)).max() <= VIDEO_TOL


@pytest.mark.parametrize("name", ["raw-v0", "jpeg-v0"])
def test_minari_fixture_matches_minari_reader(name, tmp_path):
    ref = np.load(MINARI / f"{name}.decoded.npz")
    folder = MINARI / "wmplan" / name
    ds = _import("minari", folder, tmp_path / "a", camera="pixels", state="state")
    via_data = _import("minari", folder / "data", tmp_path / "b", camera="pixels", state="state")
    assert ds.meta["source_jpeg_encoding"] == (name == "jpeg-v0") and ds.meta["action_bounds_source"] == "action_space"
    assert ds.meta["source_episode_ids"] == sorted(ref["episode_ids"].tolist())
    obs_spans, act_spans = _bounds(ref["lengths"] + 1), _bounds(ref["lengths"])
    for i, source_id in enumerate(ds.meta["source_episode_ids"]):
        j = ref["episode_ids"].tolist().index(source_id)
        (os_, oe), (as_, ae) = obs_spans[j], act_spans[j]
        ep, ep2 = ds.load_episode(i), via_data.load_episode(i)
        assert ep.length == ref["lengths"][j]
        np.testing.assert_array_equal(ep.frames, ref["pixels"][os_:oe, :, 8:56])
        np.testing.assert_array_equal(ep.proprio, ref["state"][os_:oe])
        np.testing.assert_array_equal(ep.actions, ref["actions"][as_:ae])
        np.testing.assert_array_equal(ep.rewards, ref["rewards"][as_:ae].astype(np.float32))
        np.testing.assert_array_equal(ep.success, ref["success"][os_ + 1:oe])
        for k in EPISODE_FIELDS:
            np.testing.assert_array_equal(getattr(ep, k), getattr(ep2, k))


def test_import_script_and_export_round_trip(tmp_path):
    """import_dataset.py -> export_dataset.py -> import again: the same episodes."""
    first = tmp_path / "imported"
    run_script("import_dataset.py", "format=lerobot", f"source={LEROBOT / 'v30_chunked'}", f"camera={VIDEO}",
               "image_size=32", f"out_dir={first}")
    run_script("export_dataset.py", "format=lerobot", f"source={first}", f"out_dir={tmp_path / 'lerobot'}")
    a = EpisodeDataset(first).require_complete()
    info = json.loads((tmp_path / "lerobot" / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == len(a) and info["fps"] == 10
    b = _import("lerobot", tmp_path / "lerobot", tmp_path / "again", camera="observation.image")
    assert b.meta["camera_storage"] == "image" and len(b) == len(a)
    for i in a.episode_ids:
        x, y = a.load_episode(i), b.load_episode(i)
        for k in EPISODE_FIELDS:
            np.testing.assert_array_equal(getattr(x, k), getattr(y, k), err_msg=f"episode {i} field {k}")
    # several data files when the size limit is small
    export_lerobot(first, tmp_path / "split", data_file_mb=0.01)
    assert len(list((tmp_path / "split" / "data").glob("chunk-*/file-*.parquet"))) > 1
    c = _import("lerobot", tmp_path / "split", tmp_path / "again2", camera="observation.image")
    np.testing.assert_array_equal(c.load_episode(4).frames, a.load_episode(4).frames)


# -- bad data: clear errors --------------------------------------------------------------------
def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def test_missing_camera_lists_the_keys(tmp_path):
    with pytest.raises(FormatError, match=r"no camera feature 'observation.images.top'.*observation.images.cam"):
        open_reader("lerobot", LEROBOT / "v30_onefile", "observation.images.top")
    with pytest.raises(FormatError, match=r"no observation key 'rgb'.*\['pixels', 'state'\]"):
        open_reader("minari", MINARI / "wmplan" / "raw-v0", "rgb")
    with pytest.raises(FormatError, match="no feature 'joints' for state="):
        open_reader("lerobot", LEROBOT / "v30_onefile", VIDEO, state="joints")
    with pytest.raises(FormatError, match="not a Minari dataset"):
        open_reader("minari", tmp_path, "pixels")
    with pytest.raises(FormatError, match="not a LeRobot dataset"):
        open_reader("lerobot", tmp_path, VIDEO)


def test_unsupported_codebase_version(tmp_path):
    root = _copy(LEROBOT / "v30_onefile", tmp_path)
    info_path = root / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "codebase_version": "v2.0"}))
    with pytest.raises(FormatError, match=r"codebase_version 'v2.0' is not supported.*v2.1 and v3.0"):
        open_reader("lerobot", root, VIDEO)


def test_truncated_parquet(tmp_path):
    root = _copy(LEROBOT / "v30_chunked", tmp_path)
    path = root / "data" / "chunk-000" / "file-001.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    reader = open_reader("lerobot", root, WRIST)
    with pytest.raises(FormatError, match=r"file-001.parquet: unreadable or truncated parquet"):
        import_episodes(reader, tmp_path / "out")
    assert isinstance(FormatError("x"), DatasetError)


def test_mismatched_lengths(tmp_path):
    root = _copy(LEROBOT / "v30_onefile", tmp_path)
    path = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    lengths = table.column("length").to_pylist()
    lengths[1] += 2
    pq.write_table(table.set_column(table.column_names.index("length"), "length", [lengths]), path)
    with pytest.raises(FormatError, match=r"episode 1 .* says length 16 but the data file has 14 rows"):
        import_episodes(open_reader("lerobot", root, WRIST), tmp_path / "out")
    raw = _copy(MINARI / "wmplan" / "raw-v0", tmp_path)
    with h5py.File(raw / "data" / "main_data.hdf5", "a") as f:
        rewards = f["episode_3/rewards"][()]
        del f["episode_3/rewards"]
        f["episode_3/rewards"] = rewards[:-1]
    with pytest.raises(FormatError, match=r"episode 3 .*'rewards' has 5 rows but the episode has 6 actions"):
        import_episodes(open_reader("minari", raw, "pixels"), tmp_path / "out2")


def test_refuses_existing_out_dir(tmp_path):
    reader = open_reader("minari", MINARI / "wmplan" / "jpeg-v0", "pixels")
    import_episodes(reader, tmp_path / "out", max_episodes=2)
    assert len(EpisodeDataset(tmp_path / "out").require_complete()) == 2
    with pytest.raises(FormatError, match="already holds a dataset"):
        import_episodes(reader, tmp_path / "out")
    import_episodes(reader, tmp_path / "out", overwrite=True)
    assert len(EpisodeDataset(tmp_path / "out").require_complete()) == 4
    proc = run_script("import_dataset.py", "format=minari", f"source={MINARI / 'wmplan' / 'jpeg-v0'}",
                      "camera=nope", f"out_dir={tmp_path / 'x'}", check=False)
    assert proc.returncode == 1 and "observation keys: ['pixels', 'state']" in proc.stderr


def test_lerobot_v21_fixture_layout():
    """The v2.1 fixture (lerobot 0.3.3's writer) spans two chunks, one data file and one video per
    episode, as the v2.1 reading path of test_lerobot_fixture_matches_lerobot_reader needs."""
    root, ref = LEROBOT / "v21", np.load(LEROBOT / "v21.decoded.npz")
    info = json.loads((root / "meta" / "info.json").read_text())
    assert str(ref["lerobot_version"]) == "0.3.3" and info["codebase_version"] == "v2.1"
    assert info["chunks_size"] == 2 and info["total_chunks"] == 2 and not (root / "meta" / "stats.json").exists()
    episodes = [json.loads(line) for line in (root / "meta" / "episodes.jsonl").read_text().splitlines()]
    assert [e["length"] for e in episodes] == ref["lengths"].tolist() == [8, 10, 5, 6]
    for e in range(len(episodes)):
        assert (root / info["data_path"].format(episode_chunk=e // 2, episode_index=e)).is_file()
        assert (root / info["video_path"].format(episode_chunk=e // 2, video_key=VIDEO, episode_index=e)).is_file()
    np.testing.assert_array_equal(ref["frame_index"], np.concatenate([np.arange(n) for n in ref["lengths"]]))
    np.testing.assert_array_equal(ref["timestamp"], ref["frame_index"].astype(np.float32) / np.float32(10))


def test_lerobot_v21_layout(tmp_path):
    """The v2.1 reading path (episodes.jsonl, one parquet per episode, chunk = index // chunks_size)
    on a v2.1 layout made here from the v3.0 fixture's data (image camera only, episodes.jsonl out of
    order, no episodes_stats.jsonl; the real v2.1 fixture is tests/fixtures/lerobot/v21)."""
    src = LEROBOT / "v30_chunked"
    ref = np.load(LEROBOT / "v30_chunked.decoded.npz")
    root = tmp_path / "v21"
    info = json.loads((src / "meta" / "info.json").read_text())
    info.update(codebase_version="v2.1", chunks_size=2, video_path=None,
                data_path="data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet")
    del info["features"][VIDEO]
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "meta" / "tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "move the square"}) + "\n")
    table = pq.ParquetDataset(sorted((src / "data").glob("chunk-*/file-*.parquet"))).read()
    episode = table.column("episode_index").to_numpy()
    lines = []
    for e in range(int(episode.max()) + 1):
        path = root / info["data_path"].format(episode_chunk=e // 2, episode_index=e)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(episode == e), path)
        lines.append(json.dumps({"episode_index": e, "tasks": ["move the square"], "length": int((episode == e).sum())}))
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines[::-1]) + "\n")  # out of order on purpose
    ds = _import("lerobot", root, tmp_path / "out", camera=WRIST)
    assert ds.meta["source_codebase_version"] == "v2.1" and ds.meta["tasks"] == ["move the square"]
    assert ds.meta["action_bounds_source"] == "data min/max"
    for i, (s, e) in enumerate(_bounds(ref["lengths"])):
        ep = ds.load_episode(i)
        np.testing.assert_array_equal(ep.frames, ref["observation_images_wrist"][s:e])
        np.testing.assert_array_equal(ep.actions, ref["action"][s:e - 1])
    lo, hi = np.array(ds.meta["action_low"]), np.array(ds.meta["action_high"])
    np.testing.assert_array_equal(lo, ref["action"].min(0))
    np.testing.assert_array_equal(hi, ref["action"].max(0))
