"""Command-line shorthands rewritten before Hydra parses ``sys.argv``.

``env=gym:<id>`` selects any registered gymnasium env that renders ``rgb_array`` through the
adapter (envs/gym_adapter.py). It becomes ``env=<name>`` when a ``configs/env/<name>.yaml`` has
``kwargs.inner: <id>`` (a dedicated config: camera, proprio, task hook), else the generic
``env=gym env.kwargs.inner=<id>``. An id gymnasium does not know stops the script before Hydra
starts, naming the id and the registered ids closest to it. ``<module>:<id>`` imports the module
first (gymnasium's own syntax for envs that a package registers on import).

Scripts with an ``env`` config group call ``expand_gym_env(__file__)`` before ``main()``.
"""
from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import yaml

from .checks import ConfigError

PREFIX = "env=gym:"
GENERIC = "gym"  # configs/env/gym.yaml


def dedicated_config(env_dir: Path, inner: str) -> str | None:
    """The name of the first (sorted) ``env_dir/<name>.yaml`` whose ``kwargs.inner`` is ``inner``."""
    for path in sorted(Path(env_dir).glob("*.yaml")):
        kwargs = (yaml.safe_load(path.read_text()) or {}).get("kwargs") or {}
        if isinstance(kwargs, dict) and kwargs.get("inner") == inner:
            return path.stem
    return None


def check_registered(inner: str) -> None:
    """Raise ConfigError unless gymnasium has ``inner`` registered (after importing ``module:``)."""
    module, _, name = inner.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"{PREFIX}{inner}: module {module!r} (which would register {name!r}) "
                              f"does not import: {e}") from e
    if not name:
        raise ConfigError(f"{PREFIX}{inner}: give a gymnasium id, e.g. env=gym:Pusher-v5")
    if name.startswith("wmplan/"):
        raise ConfigError(f"{PREFIX}{inner}: a wmplan task is selected by its own config, env=<name> (configs/env/)")
    if name not in gym.registry:
        ids = [i for i in gym.registry if not i.startswith("wmplan/")]  # those are refused above
        close = difflib.get_close_matches(name, ids, n=5, cutoff=0.5)
        hint = f"; close registered ids: {', '.join(close)}" if close else ""
        raise ConfigError(f"{PREFIX}{inner}: no gymnasium env {name!r} is registered{hint} "
                          "(gymnasium.pprint_registry() lists them all)")


def rewrite_gym_env(args: Sequence[str], env_dir: str | Path) -> list[str]:
    """``args`` with each ``env=gym:<id>`` replaced (see the module docstring); others unchanged."""
    out: list[str] = []
    for arg in args:
        if not arg.startswith(PREFIX):
            out.append(arg)
            continue
        inner = arg[len(PREFIX):]
        if "," in inner:
            raise ConfigError(f"{arg}: one gymnasium id per run (sweep with a shell loop, not -m env=gym:a,gym:b)")
        check_registered(inner)
        name = dedicated_config(Path(env_dir), inner)
        out += [f"env={name}"] if name else [f"env={GENERIC}", f"env.kwargs.inner={inner}"]
    return out


def expand_gym_env(script: str | Path) -> None:
    """Rewrite ``sys.argv`` for the script at ``script`` (its configs: ``../configs/env``); on a bad
    id print the error and exit with status 2, before Hydra starts."""
    env_dir = Path(script).resolve().parents[1] / "configs" / "env"
    try:
        sys.argv[1:] = rewrite_gym_env(sys.argv[1:], env_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
