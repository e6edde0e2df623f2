"""Print an episode dataset's statistics and write them to ``<data_dir>/stats.json``.

    python scripts/dataset_stats.py data_dir=data/pointmaze

Reports episode / frame counts, episode lengths, per-dimension action and proprio
ranges, means and standard deviations, the success of the collecting policies
(fraction of episodes that reach success at any step, and at their last step), and
the policy mix recorded in ``meta.json``.

Every episode read is validated (NaN/inf, dtypes, shapes, dimensions against meta.json and
against the first episode read): a malformed episode stops the script with a DatasetError
naming the episode, file and field, and a non-zero exit status. Episodes that meta.json's
``num_episodes`` promises but that are missing are reported (``missing_episodes``), not fatal.

``max_episodes``: ``null`` (the default) reads every episode, a whole number N >= 1 the first
N; anything else (0, -1, other negatives, fractions) is a ConfigError naming ``max_episodes``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from wmplan.checks import ConfigError, check_number
from wmplan.io import write_json
from wmplan.worldmodel.data import DatasetError, EpisodeDataset, episode_path


class RunningStats:
    """Per-dimension min / max / mean / std over rows of ``[N, D]`` arrays (float64 sums)."""

    def __init__(self) -> None:
        self.n, self.s, self.ss, self.lo, self.hi = 0, None, None, None, None

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        if len(x) == 0:
            return
        if self.s is None:
            self.s, self.ss = np.zeros(x.shape[1]), np.zeros(x.shape[1])
            self.lo, self.hi = np.full(x.shape[1], np.inf), np.full(x.shape[1], -np.inf)
        self.n += len(x)
        self.s += x.sum(0)
        self.ss += (x * x).sum(0)
        self.lo, self.hi = np.minimum(self.lo, x.min(0)), np.maximum(self.hi, x.max(0))

    def summary(self) -> dict[str, list[float]]:
        if self.n == 0:
            return {}
        mean = self.s / self.n
        std = np.sqrt(np.maximum(self.ss / self.n - mean**2, 0.0))
        return {k: [round(float(v), 6) for v in a] for k, a in
                (("min", self.lo), ("max", self.hi), ("mean", mean), ("std", std))}


def dataset_stats(data_dir: str | Path, max_episodes: int | None = None) -> dict[str, Any]:
    """Statistics of the dataset at ``data_dir`` (all episodes, or the first ``max_episodes``).

    Raises ConfigError for a ``max_episodes`` other than None or a whole number >= 1, and
    DatasetError naming the episode when one is malformed.
    """
    try:
        check_number(max_episodes, "max_episodes", "dataset_stats", low=1, integer=True, allow_none=True)
    except ConfigError as e:
        raise ConfigError(f"{e} (use max_episodes=null for all episodes)") from e
    ds = EpisodeDataset(data_dir)
    ids = ds.episode_ids if max_episodes is None else ds.episode_ids[: int(max_episodes)]
    if not ids:
        raise DatasetError(f"dataset {data_dir}: no episodes")
    actions, proprio, rewards = RunningStats(), RunningStats(), RunningStats()
    lengths, any_success, final_success, first_success = [], [], [], []
    frames = 0
    image_shape = None
    first = None  # (episode id, its dims): every episode must match the first one read
    for i, ep in ds.iter_episodes(ids):
        if first is None:
            first = (i, ep.dims())
        else:
            ep.check_dims(first[1], f"episode {i} ({episode_path(ds.root, i)})", f"episode {first[0]}")
        lengths.append(ep.length)
        frames += ep.frames.shape[0]
        image_shape = list(ep.frames.shape[1:])
        actions.update(ep.actions)
        proprio.update(ep.proprio)
        rewards.update(ep.rewards[:, None])
        succ = np.asarray(ep.success, bool)
        any_success.append(bool(succ.any()))
        final_success.append(bool(succ[-1]) if len(succ) else False)
        if succ.any():
            first_success.append(int(np.argmax(succ)) + 1)
    meta = ds.meta
    lengths_a = np.array(lengths)
    return {
        "data_dir": str(data_dir),
        "env_id": meta.get("env_id"),
        "episodes": len(ids),
        "num_episodes": ds.num_episodes,
        "missing_episodes": ds.missing_episodes(),
        "frames": int(frames),
        "transitions": int(lengths_a.sum()),
        "image_shape": image_shape,
        "episode_length": {"min": int(lengths_a.min()), "max": int(lengths_a.max()), "mean": float(lengths_a.mean())},
        "action": {"bounds_low": meta.get("action_low"), "bounds_high": meta.get("action_high"), **actions.summary()},
        "proprio": proprio.summary(),
        "reward": rewards.summary(),
        "success_any": float(np.mean(any_success)),
        "success_final": float(np.mean(final_success)),
        "steps_to_first_success_mean": float(np.mean(first_success)) if first_success else None,
        "policy_mix": meta.get("policy_mix"),
        "policy_kwargs": meta.get("policy_kwargs"),
    }


def format_stats(st: dict[str, Any]) -> str:
    """Human-readable multi-line summary of :func:`dataset_stats` output."""

    def vec(v: list[float] | None) -> str:
        return "[" + ", ".join(f"{x:.3g}" for x in v) + "]" if v else "-"

    mix = st["policy_mix"] or {}
    tot = sum(mix.values()) or 1.0
    missing = st.get("missing_episodes") or []
    lines = [
        f"dataset   {st['data_dir']}  ({st['env_id']})",
        f"episodes  {st['episodes']}  frames {st['frames']}  transitions {st['transitions']}  image {st['image_shape']}",
        *([f"missing   {len(missing)} of num_episodes={st['num_episodes']} (collection unfinished): "
           + ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")] if missing else []),
        "length    min {min}  mean {mean:.1f}  max {max}".format(**st["episode_length"]),
        f"action    bounds {vec(st['action']['bounds_low'])} .. {vec(st['action']['bounds_high'])}",
        f"          min {vec(st['action'].get('min'))}  max {vec(st['action'].get('max'))}",
        f"          mean {vec(st['action'].get('mean'))}  std {vec(st['action'].get('std'))}",
        f"proprio   min {vec(st['proprio'].get('min'))}  max {vec(st['proprio'].get('max'))}",
        f"          mean {vec(st['proprio'].get('mean'))}  std {vec(st['proprio'].get('std'))}",
        f"success   any step {st['success_any']:.3f}  last step {st['success_final']:.3f}",
        "policies  " + (", ".join(f"{k} {w / tot:.2f}" for k, w in sorted(mix.items())) or "-")
        + (f"  kwargs {st['policy_kwargs']}" if st["policy_kwargs"] else ""),
    ]
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../configs", config_name="dataset_stats")
def main(cfg: DictConfig) -> None:
    st = dataset_stats(cfg.data_dir, cfg.max_episodes)
    print(format_stats(st))
    out = Path(cfg.data_dir) / "stats.json"
    write_json(out, st)
    print(f"[dataset_stats] wrote {out}")


if __name__ == "__main__":
    main()
