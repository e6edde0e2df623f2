"""Foreign dataset formats: read LeRobot (v3.0, v2.1) and Minari datasets as wmplan episodes,
write wmplan datasets as LeRobot v3.0.

    reader = open_reader("lerobot", "path/to/dataset", camera="observation.images.top", image_size=64)
    import_episodes(reader, "data/mine")          # a wmplan dataset (meta.json + episodes/)

The format modules import their optional dependencies (``wmplan[lerobot]``: pyarrow, av, pillow;
``wmplan[minari]``: h5py, pillow) only when used, so this package imports without them.
"""
from __future__ import annotations

from pathlib import Path

from .common import DatasetReader, FormatError, crop_resize, frame_transform, import_episodes

FORMATS = ("lerobot", "minari")
EXTRAS = {"lerobot": "pip install 'wmplan[lerobot]'  (pyarrow, av, pillow)",
          "minari": "pip install 'wmplan[minari]'  (h5py, pillow)"}


def _missing_extra(fmt: str, e: ImportError) -> FormatError:
    return FormatError(f"format={fmt} needs the optional package {e.name!r}: {EXTRAS[fmt]}")


def open_reader(fmt: str, source: str | Path, camera: str, state: str | None = "auto", action: str | None = None,
                image_size: int | None = None) -> DatasetReader:
    """A reader for ``source`` in format ``fmt`` ("lerobot" or "minari"); see the format modules
    for what ``camera`` / ``state`` / ``action`` name there (``action=None``: the format's default)."""
    if fmt == "lerobot":
        try:
            from .lerobot import LeRobotReader
        except ImportError as e:
            raise _missing_extra(fmt, e) from e
        return LeRobotReader(source, camera, state=state, action=action or "action", image_size=image_size)
    if fmt == "minari":
        try:
            from .minari import MinariReader
        except ImportError as e:
            raise _missing_extra(fmt, e) from e
        return MinariReader(source, camera, state=state, action=action, image_size=image_size)
    raise FormatError(f"format must be one of {list(FORMATS)}, got {fmt!r}")


__all__ = ["DatasetReader", "FORMATS", "FormatError", "crop_resize", "frame_transform", "import_episodes",
           "open_reader"]
