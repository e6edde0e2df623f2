"""Merge wmplan datasets of one env into one (e.g. collected data + the planner's own experience).

    python scripts/merge_datasets.py 'sources=[data/push_t,data/push_t_planner]' out_dir=data/push_t_dagger

Episodes are renumbered 0..N-1 in source order and hard-linked (copied across file systems);
meta.json gets ``num_episodes`` and each source's meta.json under ``sources``. The sources must
share the env, its kwargs and the frame, action, proprio and state sizes (wmplan/experience.py).
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from wmplan.experience import merge_datasets


@hydra.main(version_base="1.3", config_path="../configs", config_name="merge_datasets")
def main(cfg: DictConfig) -> None:
    meta = merge_datasets(list(cfg.sources), cfg.out_dir)
    parts = ", ".join(f"{s['path']} ({s['episodes']})" for s in meta["sources"])
    print(f"[merge_datasets] {cfg.out_dir}: {meta['num_episodes']} episodes of {meta['env_id']} from {parts}")


if __name__ == "__main__":
    main()
