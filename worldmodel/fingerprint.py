"""Dataset fingerprints: what a latent cache or a training resume point was built from.

A fingerprint is a small JSON-able dict::

    {"num_episodes": E, "meta_sha256": "...", "episodes": {"<id>": "<size>:<sha256[:16]>", ...},
     "sha256": "<digest of all of the above>"}

Two fingerprints are equal exactly when meta.json and every episode file are byte-identical
(episode files carry zip timestamps, so re-collected data counts as changed even when its
arrays are equal). :func:`describe_change` says in words what differs.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def dataset_fingerprint(root: str | Path) -> dict[str, Any]:
    """Fingerprint of the dataset folder ``root`` (its meta.json and ``episodes/ep_*.npz``)."""
    root = Path(root)
    meta = root / "meta.json"
    eps = {}
    for p in sorted((root / "episodes").glob("ep_*.npz")):
        eps[str(int(p.stem.split("_")[1]))] = f"{p.stat().st_size}:{file_sha256(p)[:16]}"
    fp = {"num_episodes": len(eps), "meta_sha256": file_sha256(meta) if meta.is_file() else None, "episodes": eps}
    fp["sha256"] = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()
    return fp


def describe_change(old: dict[str, Any] | None, new: dict[str, Any]) -> str | None:
    """None when ``old`` and ``new`` fingerprint the same data, else a one-line description."""
    if old is None:
        return "the saved run has no dataset fingerprint (made by an older wmplan)"
    if old.get("sha256") == new.get("sha256"):
        return None
    parts = []
    if old.get("meta_sha256") != new.get("meta_sha256"):
        parts.append("meta.json changed")
    o, n = old.get("episodes", {}), new.get("episodes", {})
    added = sorted(set(n) - set(o), key=int)
    removed = sorted(set(o) - set(n), key=int)
    changed = sorted((k for k in set(o) & set(n) if o[k] != n[k]), key=int)
    if len(o) != len(n):
        parts.append(f"{len(o)} -> {len(n)} episodes")
    for label, ids in (("added", added), ("removed", removed), ("rewritten", changed)):
        if ids:
            shown = ", ".join(ids[:5]) + (f", ... ({len(ids)} in all)" if len(ids) > 5 else "")
            parts.append(f"episodes {label}: {shown}")
    return "; ".join(parts) or "dataset contents changed"
