"""Write the LeRobot fixtures of tests/test_import_dataset.py with lerobot itself.

Each fixture is a LeRobotDataset written by lerobot's own writer (``LeRobotDataset.create``,
``add_frame``, ``save_episode``, ``finalize``) from the synthetic trajectories of
``tools/fixture_content.py``, plus ``<name>.decoded.npz`` next to it: what lerobot's own reader
(``LeRobotDataset(..., video_backend="pyav")``) returns for every frame, as uint8 frames and
exact numbers. The tests compare wmplan's importer against that file, so they need neither
lerobot nor torch.

    tests/fixtures/lerobot/v30_onefile/   v3.0, every episode in one data file and one video file
    tests/fixtures/lerobot/v30_chunked/   v3.0, small file limits and chunks_size=2: episodes spread
                                          over several chunk-*/file-* data and video files
    tests/fixtures/lerobot/v21/           v2.1 (lerobot 0.3.3), chunks_size=2: one parquet and one mp4
                                          per episode in data|videos/chunk-000 and chunk-001
    (each: a video camera observation.images.cam 64x96, an image camera observation.images.wrist
    32x32 stored as PNG bytes, observation.state [4], action [2], next.reward, next.success)

Each lerobot release writes one codebase version, so each fixture needs its own venv; the
script writes the fixtures of the installed lerobot's version (v3.0: 0.6.1, v2.1: 0.3.3).

lerobot 0.6.1 needs Python >= 3.12 and pins torch < 2.12; any torch that imports will do
(run from the repository root; nothing here is installed into wmplan's own environment)::

    ~/.pyenv/versions/3.12.1/bin/python -m venv /tmp/venv-lerobot
    /tmp/venv-lerobot/bin/pip install torch==2.13.0          # a CPU build where one is at hand
    /tmp/venv-lerobot/bin/pip install --no-deps lerobot==0.6.1 torchvision==0.28.0
    /tmp/venv-lerobot/bin/pip install "numpy>=2.0,<2.3" "Pillow>=10,<13" "einops>=0.8,<0.9" \
        "draccus>=0.11.6,<0.12" "huggingface-hub>=1.6,<2" requests "gymnasium>=1.1.1,<2" \
        safetensors "packaging>=24.2,<26" termcolor tqdm "datasets>=4.8,<5" "pandas>=2,<3" \
        "pyarrow>=21,<30" "av>=15,<16" jsonlines opencv-python-headless
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 /tmp/venv-lerobot/bin/python tools/make_lerobot_fixtures.py

(``pip install "lerobot[dataset]==0.6.1"`` works too, but pulls a CUDA torch of several GB.)

lerobot 0.3.3 (v2.1) decodes pyav video through ``torchvision.io.VideoReader``, which torchvision
0.28 no longer has, and an older torchvision (0.24.1 tried) does not import on torch 2.13 CPU
(``operator torchvision::nms does not exist``), so it gets torch/torchvision within its own pins
(torch<2.8, torchvision<0.23: PyPI's CUDA build, about 4 GB with its nvidia-* wheels, run on the CPU)::

    ~/.pyenv/versions/3.11.7/bin/python -m venv /tmp/venv-lerobot033
    /tmp/venv-lerobot033/bin/pip install torch==2.7.1 torchvision==0.22.1
    /tmp/venv-lerobot033/bin/pip install --no-deps lerobot==0.3.3
    /tmp/venv-lerobot033/bin/pip install "numpy>=1.26,<2.3" "Pillow>=10,<12" "einops>=0.8,<0.9" \
        draccus==0.10.0 "huggingface-hub>=0.34.2,<0.36" "datasets>=2.19,<=3.6.0" "pandas>=2,<3" \
        "pyarrow>=15,<21" "av>=14.2,<16" jsonlines "packaging>=24.2" "termcolor>=2.4,<4" \
        "gymnasium>=0.29.1,<1.0" "deepdiff>=7,<9" opencv-python-headless
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 /tmp/venv-lerobot033/bin/python tools/make_lerobot_fixtures.py

Existing fixture folders are replaced.

``--check-export OUT --wmplan-dataset SRC`` (lerobot 0.6.1) instead checks an export of
scripts/export_dataset.py: lerobot's reader must load ``OUT`` and return every frame, action and
state of the wmplan dataset ``SRC`` (exported from it) exactly; it prints one line and exits
non-zero on a difference.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixture_content import make_trajectory  # noqa: E402

ROOT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "lerobot"
FPS = 10
HEIGHT, WIDTH, WRIST = 64, 96, 32
TASK = "move the square"
# fixture name -> (episode lengths in frames, writer options)
VARIANTS = {
    "v30_onefile": ([9, 14, 6], {}),
    "v30_chunked": ([7, 11, 5, 8, 6], {"data_files_size_in_mb": 0.004, "video_files_size_in_mb": 0.0045,
                                       "chunks_size": 2}),
    "v21": ([8, 10, 5, 6], {"chunks_size": 2}),
}


def features() -> dict:
    """The LeRobot feature spec of every fixture."""
    return {
        "observation.images.cam": {"dtype": "video", "shape": (HEIGHT, WIDTH, 3),
                                   "names": ["height", "width", "channels"]},
        "observation.images.wrist": {"dtype": "image", "shape": (WRIST, WRIST, 3),
                                     "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (4,), "names": ["x", "y", "vx", "vy"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["vx", "vy"]},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.success": {"dtype": "bool", "shape": (1,), "names": None},
    }


def write_dataset(root: Path, lengths: list[int], options: dict) -> None:
    """Record one episode per length with lerobot's writer."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    options = dict(options)
    chunks_size = options.pop("chunks_size", None)
    ds = LeRobotDataset.create(repo_id="wmplan/fixture", fps=FPS, features=features(), root=root,
                               robot_type="synthetic", use_videos=True, video_backend="pyav", **options)
    v21 = isinstance(ds.meta.info, dict)  # 0.3.3: info a dict, add_frame(frame, task), no finalize()
    if chunks_size is not None and v21:
        ds.meta.info["chunks_size"] = chunks_size  # written to info.json by every save_episode
    elif chunks_size is not None:
        ds.meta.info.chunks_size = chunks_size
    for seed, n in enumerate(lengths):
        traj = make_trajectory(seed, n, HEIGHT, WIDTH, WRIST)
        for t in range(n):
            frame = {"observation.images.cam": traj.frames[t], "observation.images.wrist": traj.wrist[t],
                     "observation.state": traj.state[t], "action": traj.action[t],
                     "next.reward": traj.reward[t:t + 1], "next.success": traj.success[t:t + 1]}
            if v21:
                ds.add_frame(frame, task=TASK)
            else:
                ds.add_frame({**frame, "task": TASK})
        ds.save_episode()
    if v21:  # 0.3.3 leaves the image features' PNG files (also in the parquet) in images/; push_to_hub skips it
        shutil.rmtree(root / "images")
    else:
        ds.finalize()


def decode_with_lerobot(root: Path) -> dict[str, np.ndarray]:
    """Every frame as lerobot's reader returns it (pyav backend), as numpy arrays."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("wmplan/fixture", root=root, video_backend="pyav")
    out: dict[str, list] = {k: [] for k in ("observation.images.cam", "observation.images.wrist",
                                            "observation.state", "action", "next.reward", "next.success",
                                            "episode_index", "frame_index", "index", "timestamp")}
    for i in range(len(ds)):
        item = ds[i]
        for k in out:
            v = item[k].numpy()
            if k.startswith("observation.images."):  # float [3,H,W] in [0,1] -> uint8 [H,W,3]
                v = np.rint(v.transpose(1, 2, 0) * 255.0).astype(np.uint8)
            out[k].append(v)
    arrays = {k.replace(".", "_"): np.stack(v) for k, v in out.items()}
    arrays["lengths"] = np.bincount(arrays["episode_index"].astype(np.int64))
    return arrays


def check_export(out: Path, source: Path, camera: str = "observation.image") -> int:
    """Read a wmplan -> LeRobot export with lerobot and compare it with the wmplan episodes; 0 when equal."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("wmplan/export", root=out, video_backend="pyav")
    bad, rows = [], 0
    for e in range(ds.num_episodes):
        with np.load(source / "episodes" / f"ep_{e:06d}.npz") as z:
            ep = {k: z[k] for k in ("frames", "actions", "proprio")}
        start, stop = ds.meta.episodes[e]["dataset_from_index"], ds.meta.episodes[e]["dataset_to_index"]
        if stop - start != len(ep["frames"]):
            bad.append(f"episode {e}: {stop - start} rows for {len(ep['frames'])} frames")
        for t, i in enumerate(range(start, min(stop, start + len(ep["frames"])))):
            item = ds[i]
            frame = np.rint(item[camera].numpy().transpose(1, 2, 0) * 255.0).astype(np.uint8)
            same = np.array_equal(frame, ep["frames"][t])
            same &= t >= len(ep["actions"]) or np.array_equal(item["action"].numpy(), ep["actions"][t])
            if ep["proprio"].shape[1]:
                same &= np.array_equal(item["observation.state"].numpy(), ep["proprio"][t])
            bad += [] if same else [f"episode {e} frame {t}"]
            rows += 1
    print(f"lerobot read {out}: {ds.num_episodes} episodes, {rows} rows, fps {ds.fps}, "
          f"{'all equal to ' + str(source) if not bad else 'DIFFERENT: ' + ', '.join(bad[:5])}")
    return 1 if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(VARIANTS), nargs="*", help="fixtures to write (default: all)")
    parser.add_argument("--check-export", type=Path, help="a LeRobot export to check instead (see above)")
    parser.add_argument("--wmplan-dataset", type=Path, help="the wmplan dataset it was exported from")
    args = parser.parse_args()
    if args.check_export:
        sys.exit(check_export(args.check_export, args.wmplan_dataset))
    import lerobot
    from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION

    mine = [n for n in VARIANTS if n.startswith(CODEBASE_VERSION.replace(".", ""))]
    if set(args.only or []) - set(mine):
        sys.exit(f"lerobot {lerobot.__version__} writes {CODEBASE_VERSION}: it can write {mine}, not "
                 f"{sorted(set(args.only) - set(mine))} (see the docstring for the venv of each)")
    for name in args.only or mine:
        lengths, options = VARIANTS[name]
        root = ROOT / name
        if root.exists():
            shutil.rmtree(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        write_dataset(root, lengths, options)
        arrays = decode_with_lerobot(root)
        assert arrays["lengths"].tolist() == lengths, (arrays["lengths"], lengths)
        np.savez_compressed(ROOT / f"{name}.decoded.npz", lerobot_version=np.array(lerobot.__version__), **arrays)
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        print(f"{name}: {len(lengths)} episodes, {sum(lengths)} frames, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
