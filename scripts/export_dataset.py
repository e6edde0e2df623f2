"""Export a wmplan episode dataset as a LeRobotDataset v3.0.

    python scripts/export_dataset.py format=lerobot source=data/pointmaze out_dir=exports/pointmaze_lerobot

The writer is ``wmplan.worldmodel.formats.lerobot_export.export_lerobot``; the result reads back
through ``scripts/import_dataset.py format=lerobot camera=observation.image`` and lerobot's own
``LeRobotDataset``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from wmplan.checks import ConfigError, check_number
from wmplan.worldmodel.data import DatasetError

WHERE = "export_dataset"


def run(cfg: DictConfig) -> Path:
    """Check the settings and write the export; returns out_dir."""
    if cfg.format != "lerobot":
        raise ConfigError(f"{WHERE}: format must be 'lerobot', got {cfg.format!r}")
    for key in ("source", "out_dir", "camera"):
        if not isinstance(cfg[key], str) or not cfg[key]:
            raise ConfigError(f"{WHERE}: '{key}' must be given, got {cfg[key]!r}")
    check_number(cfg.fps, "fps", WHERE, low=1e-9, allow_none=True)
    check_number(cfg.data_file_mb, "data_file_mb", WHERE, low=1e-9)
    try:
        from wmplan.worldmodel.formats.lerobot_export import export_lerobot
    except ImportError as e:
        raise ConfigError(f"{WHERE}: needs the optional package {e.name!r}: pip install 'wmplan[lerobot]'") from e
    out = export_lerobot(Path(cfg.source).expanduser(), Path(cfg.out_dir).expanduser(), fps=cfg.fps, task=cfg.task,
                         camera=cfg.camera, overwrite=bool(cfg.overwrite), data_file_mb=float(cfg.data_file_mb))
    print(f"[{WHERE}] wrote {out} (LeRobot v3.0 from {cfg.source})")
    return out


@hydra.main(version_base="1.3", config_path="../configs", config_name="export_dataset")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (ConfigError, DatasetError) as e:
        print(f"[{WHERE}] error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
