"""Write the Minari fixtures of tests/test_import_dataset.py with minari itself.

A tiny gymnasium env replays the synthetic trajectories of ``tools/fixture_content.py``
(dict observations ``{"pixels": uint8 [48, 64, 3], "state": float32 [4]}``, Box actions [2],
an ``info["success"]`` flag), wrapped in ``minari.DataCollector`` and saved with
``create_dataset``. Next to each dataset, ``<name>.decoded.npz`` holds what
``minari.load_dataset`` returns for it (frames decoded by minari, actions, rewards, ...), so the
tests compare wmplan's importer against minari's own reader without needing minari.

    tests/fixtures/minari/wmplan/raw-v0/data/    jpeg_encoding=False: raw uint8 frames; 11 episodes
                                                 (ids past 9 check the numeric episode order)
    tests/fixtures/minari/wmplan/jpeg-v0/data/   jpeg_encoding=True (minari's default): JPEG bytes

Run from the repository root (minari 0.5.4 writes with h5py, pillow and jax)::

    ~/.pyenv/versions/3.12.1/bin/python -m venv /tmp/venv-minari
    /tmp/venv-minari/bin/pip install minari==0.5.4 h5py pillow jax
    OMP_NUM_THREADS=1 /tmp/venv-minari/bin/python tools/make_minari_fixtures.py

Existing fixture folders are replaced.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixture_content import make_trajectory  # noqa: E402

ROOT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "minari"
HEIGHT, WIDTH = 48, 64
# dataset id -> (steps T per episode, jpeg_encoding)
VARIANTS = {
    "wmplan/raw-v0": ([3, 5, 4, 6, 3, 4, 5, 3, 4, 6, 5], False),
    "wmplan/jpeg-v0": ([6, 4, 7, 5], True),
}


def make_env_class():
    """A gymnasium env that replays one synthetic trajectory per reset (seed = episode number)."""
    import gymnasium as gym

    class ReplayEnv(gym.Env):
        metadata = {"render_modes": []}

        def __init__(self, lengths: list[int]):
            self.lengths = lengths
            self.observation_space = gym.spaces.Dict({
                "pixels": gym.spaces.Box(0, 255, (HEIGHT, WIDTH, 3), np.uint8),
                "state": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)})
            self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
            self.episode = -1

        def _obs(self) -> dict:
            return {"pixels": self.traj.frames[self.t], "state": self.traj.state[self.t]}

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.episode += 1
            self.traj = make_trajectory(100 + self.episode, self.lengths[self.episode] + 1, HEIGHT, WIDTH)
            self.t = 0
            return self._obs(), {"success": np.bool_(False)}

        def step(self, action):
            reward = float(self.traj.reward[self.t])
            success = bool(self.traj.success[self.t])
            self.t += 1
            done = self.t == self.lengths[self.episode]
            return self._obs(), reward, False, done, {"success": np.bool_(success)}

    return ReplayEnv


def write_dataset(dataset_id: str, lengths: list[int], jpeg: bool) -> None:
    """Collect one episode per length through minari.DataCollector and save it."""
    import minari

    env = minari.DataCollector(make_env_class()(lengths), record_infos=True, jpeg_encoding=jpeg)
    for ep, steps in enumerate(lengths):
        env.reset(seed=ep)
        traj = env.unwrapped.traj
        for t in range(steps):
            env.step(traj.action[t])
    env.create_dataset(dataset_id=dataset_id, algorithm_name="replay", author="wmplan",
                       description="wmplan test fixture: synthetic moving square")


def decode_with_minari(dataset_id: str) -> dict[str, np.ndarray]:
    """Every episode as minari.load_dataset returns it, concatenated (``lengths`` = steps T)."""
    import minari

    ds = minari.load_dataset(dataset_id)
    keys = ("pixels", "state", "actions", "rewards", "terminations", "truncations", "success")
    out: dict[str, list] = {k: [] for k in keys}
    ids, lengths = [], []
    for ep in ds.iterate_episodes():
        ids.append(ep.id)
        lengths.append(len(ep.actions))
        out["pixels"].append(ep.observations["pixels"])
        out["state"].append(ep.observations["state"])
        out["success"].append(np.asarray(ep.infos["success"]))
        for k in ("actions", "rewards", "terminations", "truncations"):
            out[k].append(np.asarray(getattr(ep, k)))
    arrays = {k: np.concatenate(v) for k, v in out.items()}
    return {**arrays, "episode_ids": np.array(ids), "lengths": np.array(lengths)}


def main() -> None:
    os.environ["MINARI_DATASETS_PATH"] = str(ROOT)
    import minari

    for dataset_id, (lengths, jpeg) in VARIANTS.items():
        folder = ROOT / dataset_id
        if folder.exists():
            shutil.rmtree(folder)
        write_dataset(dataset_id, lengths, jpeg)
        arrays = decode_with_minari(dataset_id)
        assert arrays["lengths"].tolist() == lengths, (arrays["lengths"], lengths)
        name = dataset_id.split("/")[-1]
        np.savez_compressed(ROOT / f"{name}.decoded.npz", minari_version=np.array(minari.__version__), **arrays)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"{dataset_id}: {len(lengths)} episodes, {sum(lengths)} steps, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
