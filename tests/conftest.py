"""Shared test helpers: run scripts as a user would, on tiny settings."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *overrides: str, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``scripts/<name>`` with Hydra overrides; returns the completed process (text output)."""
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A real PointMaze dataset: 6 episodes of 24 steps, collected by scripts/collect.py."""
    out = tmp_path_factory.mktemp("data") / "pointmaze"
    run_script("collect.py", "episodes=6", "episode_length=24", "workers=1", f"out_dir={out}")
    return out


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription stalls on shared 2-core machines."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
