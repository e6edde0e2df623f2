"""Boundary checks every layer uses: finite values and option ranges, with errors that name
where, which field and what value (numpy arrays and torch tensors alike; no torch import).

Raise :class:`ConfigError` for a bad setting and :class:`NonFiniteError` for NaN/inf data;
both are ``ValueError`` so callers that already catch ``ValueError`` keep working.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np


class ConfigError(ValueError):
    """A setting is out of range or of the wrong type (the message names field and value)."""


class NonFiniteError(ValueError):
    """An array or tensor holds NaN or inf (the message names where, the field and the first bad index)."""


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def first_nonfinite(x: Any) -> tuple[int, ...] | None:
    """Index of the first NaN/inf entry of a numpy array or torch tensor, or None if all are finite.

    Non-floating arrays (ints, bools, uint8 frames) are always finite. One host sync for tensors.
    """
    if hasattr(x, "is_floating_point") and hasattr(x, "isfinite"):  # torch.Tensor
        if not (x.is_floating_point() or x.is_complex()):
            return None
        bad = ~x.isfinite()
        if not bool(bad.any()):
            return None
        return tuple(int(i) for i in bad.nonzero()[0].tolist())
    a = np.asarray(x)
    if a.dtype.kind not in "fc":
        return None
    bad = ~np.isfinite(a)
    if not bad.any():
        return None
    return tuple(int(i) for i in np.argwhere(bad)[0])


def check_finite(x: Any, field: str, where: str = "") -> None:
    """Raise NonFiniteError naming ``field`` (and ``where``) if ``x`` holds NaN or inf."""
    idx = first_nonfinite(x)
    if idx is not None:
        v = x[idx] if len(idx) else x
        v = float(v.item() if hasattr(v, "item") else v)
        n = int((~(x.isfinite() if hasattr(x, "isfinite") else np.isfinite(np.asarray(x)))).sum())
        raise NonFiniteError(f"{_prefix(where)}field '{field}' holds {n} non-finite value(s); "
                             f"first {v} at index {list(idx)}")


def check_number(value: Any, field: str, where: str = "", *, low: float | None = None,
                 high: float | None = None, low_open: bool = False, high_open: bool = False,
                 integer: bool = False, allow_none: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a finite number in the given range.

    ``low``/``high`` are inclusive unless ``low_open``/``high_open``; ``integer`` requires a whole
    number (bools are never numbers here); ``allow_none`` lets None through (an unset option).
    """
    p = _prefix(where)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{p}'{field}' must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{p}'{field}' must be finite, got {value!r}")
    if integer and v != int(v):
        raise ConfigError(f"{p}'{field}' must be a whole number, got {value!r}")
    if low is not None and (v <= low if low_open else v < low):
        raise ConfigError(f"{p}'{field}' must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if high is not None and (v >= high if high_open else v > high):
        raise ConfigError(f"{p}'{field}' must be {'<' if high_open else '<='} {high:g}, got {value!r}")


def check_choice(value: Any, field: str, choices: tuple | list, where: str = "") -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{_prefix(where)}'{field}' must be one of {list(choices)}, got {value!r}")
