"""Small shared helpers: devices, seeding, checked atomic checkpoint I/O, resume checks,
JSON-lines logs, settings checks, a progress bar, TensorBoard.

Every checkpoint this package writes carries ``"version": FORMAT_VERSION`` (files without
the field, e.g. the bundled models, are version 1). :func:`atomic_save` refuses to write a
non-finite tensor and :func:`load_checkpoint` refuses to read one, or a file of a newer version.
"""
from __future__ import annotations

import dataclasses
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from ..checks import ConfigError, NonFiniteError, check_finite, check_number
from ..io import atomic_write_bytes  # noqa: F401 (re-exported: the one atomic writer of every layer)
from .fingerprint import describe_change

T = TypeVar("T")

# Checkpoint format version written by this wmplan (field "version"); a larger one in a file
# means a newer wmplan wrote it. Bump when a reader of today could misread a new file.
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, not of the expected kind, or its contents are
    unusable (non-finite, a newer version, fields that do not fit); the message names the file."""


def config_from_dict(cls: type[T], d: dict[str, Any]) -> T:
    """Build config dataclass ``cls`` from a plain dict; unknown keys are an error naming them
    (a typo in a saved or given config must not be silently ignored)."""
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - valid)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; valid fields are {sorted(valid)}")
    return cls(**d)


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """'auto' -> the CUDA device if one is visible, else CPU; anything else is passed to torch."""
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def start_job(threads: int | None, seed: int, device: str | torch.device = "auto") -> torch.device:
    """A script's common start: torch CPU threads (``threads`` falsy: torch's default), every seed,
    and the resolved device."""
    if threads:
        torch.set_num_threads(int(threads))
    seed_everything(int(seed))
    return resolve_device(device)


def tensor_fields(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(dotted field name, tensor)`` for every tensor in nested dicts/lists/tuples."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensor_fields(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensor_fields(v, f"{prefix}[{i}]")


def check_tensors_finite(obj: Any, where: str) -> None:
    """Raise NonFiniteError naming ``where`` and the first field holding NaN/inf."""
    for name, t in tensor_fields(obj):
        check_finite(t, name, where)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that is atomic (temp file + rename). Save only tensors/plain containers
    so the file loads with ``weights_only=True``.

    Raises NonFiniteError (and writes nothing) if any tensor holds NaN/inf: a diverged
    model must never replace the last good checkpoint.
    """
    check_tensors_finite(obj, f"refusing to write {path} (nothing written)")
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def cpu_fp32(t: torch.Tensor | None) -> torch.Tensor | None:
    """Detached CPU copy for a checkpoint: floating tensors as fp32, others unchanged, None kept."""
    if t is None:
        return None
    t = t.detach().cpu()
    return t.float() if t.is_floating_point() else t


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)`` on CPU.

    Raises CheckpointError naming the file when it is missing, unreadable, written by a
    newer wmplan (``"version"`` > :data:`FORMAT_VERSION`), holds a non-finite tensor, or when
    ``kind`` is given and the file's ``"kind"`` field differs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for torn/foreign files
        raise CheckpointError(f"could not read checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict, got {type(ckpt).__name__}")
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(
            f"checkpoint {path}: field 'kind' is {ckpt.get('kind')!r}, expected {kind!r}"
        )
    version = ckpt.get("version", 1)  # files from before the field (bundled models) are version 1
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"checkpoint {path}: field 'version' is {version!r}, expected an integer")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} was made by a newer wmplan (version {version} > "
                              f"{FORMAT_VERSION}); upgrade wmplan to read it")
    try:
        check_tensors_finite(ckpt, f"checkpoint {path}")
    except NonFiniteError as e:
        raise CheckpointError(str(e)) from e
    return ckpt


# ---- resume points -------------------------------------------------------------------------
def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts (and lists of dicts) flattened to ``a.b[0].c`` keys; other lists stay values."""
    if isinstance(d, list) and any(isinstance(v, dict) for v in d):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(d)]
    elif isinstance(d, dict):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in d.items()]
    else:
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(_flat(v, k))
    return out


def run_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every (dotted) key whose value differs between two run-key dicts."""
    a, b = _flat(saved), _flat(current)
    missing = object()
    out = []
    for k in list(b) + [k for k in a if k not in b]:
        old, new = a.get(k, missing), b.get(k, missing)
        if old != new:
            fmt = lambda v: "(not set)" if v is missing else repr(v)  # noqa: E731
            out.append(f"{k}: {fmt(old)} -> {fmt(new)}")
    return out


def check_resume(state_path: str | Path, saved: dict[str, Any] | None, current: dict[str, Any],
                 saved_fingerprint: dict | None = None, fingerprint: dict | None = None) -> None:
    """Refuse to resume ``state_path`` unless the run keys (and the dataset fingerprint, when
    ``fingerprint`` is given) equal the saved ones; the CheckpointError says what changed
    (keys with old and new values, the data change in words) and how to start fresh."""
    fresh = f"start fresh with out_dir=<a new folder> (or delete {state_path})"
    if saved is None or (fingerprint is not None and saved_fingerprint is None):
        raise CheckpointError(f"{state_path} was written by an older wmplan and records no run settings or "
                              f"dataset fingerprint, so resuming it cannot be checked; {fresh}")
    changes = run_changes(saved, current)
    if fingerprint is not None:
        data = describe_change(saved_fingerprint, fingerprint)
        if data is not None:
            changes.insert(0, f"data: {data}")
    if changes:
        raise CheckpointError(f"{state_path}: cannot resume, this run differs from the saved one: "
                              + "; ".join(changes) + f". Rerun with the saved settings and data to continue it, or {fresh}")


# ---- JSON-lines logs -----------------------------------------------------------------------
def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines log; a torn line (a run killed mid-write) or any other
    unparseable line is dropped with a printed warning naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for n, ln in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            rec = None
        if not isinstance(rec, dict):
            print(f"warning: {path} line {n} is torn or not a JSON record (a killed run?); dropping it: {ln[:80]!r}")
            continue
        out.append(rec)
    return out


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    """Atomically (re)write a JSON-lines log."""
    text = "".join(json.dumps(r) + "\n" for r in records).encode()
    atomic_write_bytes(path, lambda f: f.write(text))


# ---- settings and training guards ------------------------------------------------------------
def check_settings(cfg: Any, rules: dict[str, dict[str, Any]], where: str) -> None:
    """``check_number(cfg[field], field, where, **rule)`` for every rule (ConfigError names the
    field and value); dotted fields reach into nested config nodes."""
    for field, rule in rules.items():
        node = cfg
        for part in field.split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        check_number(node, field, where, **rule)


def check_bool(value: Any, field: str, where: str) -> None:
    """Raise ConfigError unless ``value`` is true or false."""
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: '{field}' must be true or false, got {value!r}")


def check_step_finite(values: dict[str, torch.Tensor], step: int, episode_ids: Any, where: str,
                      hint: str = "", after_update: bool = False, found_after: int | None = None) -> None:
    """Stop training when a loss or gradient norm (or, ``after_update``, a value computed with the
    updated weights) of this step is NaN/inf: raise NonFiniteError naming the step, the values
    and the episodes the batch came from. One host sync for all values. ``found_after``: the check
    was deferred (``train_loop.FiniteGuard``) and runs after that step's update, before any save."""
    vals = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    if bool(torch.isfinite(vals).all()):
        return
    ids = sorted(set(torch.as_tensor(episode_ids).flatten().tolist())) if episode_ids is not None else "unknown"
    shown = ", ".join(f"{k}={float(v):.4g}" for k, v in zip(values, vals.tolist()))
    what = (f"non-finite values after the update of step {step}" if after_update
            else f"non-finite loss or gradient at step {step}")
    stop = "the update made the model non-finite" if after_update else "training stopped before the update"
    if found_after is not None:
        stop = f"found by the deferred check after step {found_after} (finite_check=deferred), before any save"
    raise NonFiniteError(f"{where}: {what} ({shown}) on a batch from episodes {ids}; {stop}, "
                         f"nothing of this step was saved. {hint}".rstrip())


class _LineStream:
    """File adaptor for tqdm when stderr is not a terminal: each refresh becomes one log line
    (tqdm's carriage-return redraws would pile up into one endless line in a CI log)."""

    def __init__(self, stream) -> None:
        self.stream, self.last = stream, ""

    def write(self, s: str) -> None:
        s = s.replace("\r", "").rstrip()
        if s and s != self.last:  # close() redraws the final state once more
            self.stream.write(s + "\n")
            self.last = s

    def flush(self) -> None:
        self.stream.flush()


class ProgressBar:
    """A thin wrapper over ``tqdm`` on stderr: ``for x in ProgressBar(it, total, "desc")``, or
    manually ``bar.update(n, **postfix)`` / ``bar.close()``.

    On a terminal it redraws at most 5 times a second; otherwise (logs, CI) it writes one
    line at most every ``log_interval`` seconds, plus the final line. ``disable``: draw nothing
    (the non-zero ranks of a distributed run).
    """

    def __init__(self, iterable=None, total: int | None = None, desc: str = "", initial: int = 0,
                 log_interval: float = 10.0, disable: bool = False):
        tty = sys.stderr.isatty()
        self.bar = tqdm(iterable, total=total, desc=desc, initial=initial,
                        file=sys.stderr if tty else _LineStream(sys.stderr), dynamic_ncols=tty,
                        mininterval=0.2 if tty else log_interval, ascii=not tty, disable=disable)

    @property
    def n(self) -> int:
        return self.bar.n

    def __iter__(self):
        yield from self.bar

    def update(self, n: int = 1, **postfix: Any) -> None:
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


class TensorBoardLog:
    """Scalars to TensorBoard event files in ``log_dir`` beside a script's JSON logs.

    ``enabled=False`` or a missing ``tensorboard`` package (one line says how to install it)
    make every call a no-op, so training never depends on the optional extra.
    ``purge_step``: on a resumed run, the first step that is redone (resume step + 1); events at
    or after it, written by the interrupted run, are dropped when TensorBoard reads the curves.
    """

    def __init__(self, log_dir: str | Path, enabled: bool = True, purge_step: int | None = None):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("tensorboard: true, but the tensorboard package is not installed; "
                  "pip install 'wmplan[tensorboard]' for training curves (continuing with the JSON logs)")
            return
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def scalars(self, step: int, values: dict[str, Any], prefix: str = "") -> None:
        """Write every finite int/float of ``values`` as ``<prefix><key>`` at ``step``."""
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(f"{prefix}{k}", float(v), int(step))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_tensorboard_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve of a TensorBoard log directory: tag -> [(step, value)] (needs tensorboard)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
