"""Import a LeRobot (v3.0, v2.1) or Minari dataset as a wmplan episode dataset.

    python scripts/import_dataset.py format=lerobot source=path/to/dataset camera=observation.images.top \
        image_size=64 out_dir=data/mine
    python scripts/import_dataset.py format=minari source=path/to/name-v0 camera=pixels state=state out_dir=data/m

The readers live in ``wmplan.worldmodel.formats`` (``lerobot.py``, ``minari.py``); episodes are
written by ``worldmodel/data.py``'s validating writers, meta.json first (with ``num_episodes``).
A bad source (missing camera key, mismatched lengths, truncated parquet, unsupported
codebase_version, ...) stops with an error naming the file, before or instead of writing garbage.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from wmplan.checks import ConfigError, check_number
from wmplan.worldmodel.data import DatasetError
from wmplan.worldmodel.formats import FORMATS, import_episodes, open_reader

WHERE = "import_dataset"


def run(cfg: DictConfig) -> Path:
    """Check the settings, open the source and write the dataset; returns out_dir."""
    if cfg.format not in FORMATS:
        raise ConfigError(f"{WHERE}: format must be one of {list(FORMATS)}, got {cfg.format!r}")
    for key in ("source", "camera", "out_dir"):
        if not isinstance(cfg[key], str) or not cfg[key]:
            raise ConfigError(f"{WHERE}: '{key}' must be given, got {cfg[key]!r}")
    check_number(cfg.image_size, "image_size", WHERE, low=1, integer=True, allow_none=True)
    check_number(cfg.max_episodes, "max_episodes", WHERE, low=1, integer=True, allow_none=True)
    source = Path(cfg.source).expanduser()
    if not source.is_dir():
        raise ConfigError(f"{WHERE}: source={cfg.source!r} is not a folder")
    reader = open_reader(cfg.format, source, cfg.camera, state=cfg.state, action=cfg.action,
                         image_size=None if cfg.image_size is None else int(cfg.image_size))
    out = import_episodes(reader, Path(cfg.out_dir).expanduser(), overwrite=bool(cfg.overwrite),
                          max_episodes=cfg.max_episodes)
    print(f"[{WHERE}] wrote {out} ({reader.num_episodes() if cfg.max_episodes is None else cfg.max_episodes} "
          f"episodes from {cfg.format} {source})")
    return out


@hydra.main(version_base="1.3", config_path="../configs", config_name="import_dataset")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (ConfigError, DatasetError) as e:
        print(f"[{WHERE}] error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
