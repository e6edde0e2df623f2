"""Waypoint banks and the waypoint graph that subgoal planning searches.

A waypoint bank is a file of waypoints from recorded episodes (``scripts/make_waypoint_bank.py``
writes one from any wmplan dataset)::

    states [W,S] float64 (full physics states) and/or frames [W,H,W,3] uint8
    proprio [W,P] float32   episode_ids [W] int   steps [W] int
    stride int (env steps between an episode's consecutive waypoints)   env_id str

A bank of states is a few hundred kB and is rendered into frames by the task itself
(:func:`render_states`, the way goal images of the dataset-goal protocol are), so it matches
whatever camera and image size the run uses; a bank of frames serves data that cannot be
re-rendered (imported datasets). Either way one bank serves every world model of its task.

The graph is built per world model from the bank's latents: an edge from each waypoint to the
next one of its episode (cost 1: ``stride`` env steps of recorded behaviour), plus "same state"
links between waypoints of any episodes whose latents are closer than a typical step (cost =
their distance in step units, both ways). Shortest paths over it turn a far goal into a chain
of reachable waypoints (search on the replay buffer, as in SoRB and HWM's high level).
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path
from torch import Tensor

from ..checks import ConfigError, check_finite, check_number
from .goals import resolve_bundled

BANK_KEYS = ("proprio", "episode_ids", "steps", "stride", "env_id")  # plus states and/or frames


@dataclass
class WaypointBank:
    """The contents of a waypoint-bank file (fields as in the module docstring)."""

    states: np.ndarray | None
    frames: np.ndarray | None
    proprio: np.ndarray
    episode_ids: np.ndarray
    steps: np.ndarray
    stride: int
    env_id: str
    path: str = ""
    sha256: str = ""  # of the file's bytes, recorded in the run summary

    def __len__(self) -> int:
        return int(len(self.episode_ids))


def resolve_waypoint_bank(spec: str) -> Path:
    """``bundled:<task>`` -> the bank shipped in ``wmplan/planners/waypoint_banks/``; else a path."""
    return resolve_bundled(spec, "waypoint_banks", "waypoint_bank")


def load_waypoint_bank(spec: str | Path) -> WaypointBank:
    """Read and check a bank file (``bundled:<task>`` or a path); errors name the file and field."""
    path = resolve_waypoint_bank(str(spec))
    if not path.is_file():
        raise ConfigError(f"waypoint bank {path} not found (make one with scripts/make_waypoint_bank.py)")
    try:
        raw = path.read_bytes()  # read once: parsed here and hashed for the run summary
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            missing = [k for k in BANK_KEYS if k not in z.files]
            if "states" not in z.files and "frames" not in z.files:
                missing.append("states or frames")
            if missing:
                raise ConfigError(f"waypoint bank {path}: missing field(s) {missing}")
            d = {k: z[k] for k in (*BANK_KEYS, "states", "frames") if k in z.files}
    except (OSError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"waypoint bank {path}: unreadable ({type(e).__name__}: {e})") from e
    w = len(d["episode_ids"])
    if w < 2:
        raise ConfigError(f"waypoint bank {path}: field 'episode_ids' has {w} rows; a bank needs at least 2 waypoints")
    frames, states = d.get("frames"), d.get("states")
    if frames is not None and (frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3):
        raise ConfigError(f"waypoint bank {path}: field 'frames' must be uint8 [W,H,W,3], got {frames.dtype} {list(frames.shape)}")
    if states is not None:
        if states.ndim != 2:
            raise ConfigError(f"waypoint bank {path}: field 'states' must be [W,S], got {list(states.shape)}")
        check_finite(states, "states", f"waypoint bank {path}")
    for key, a in (("proprio", d["proprio"]), ("steps", d["steps"]), ("frames", frames), ("states", states)):
        if a is not None and len(a) != w:
            raise ConfigError(f"waypoint bank {path}: field '{key}' has {len(a)} rows, 'episode_ids' has {w}")
    check_finite(d["proprio"], "proprio", f"waypoint bank {path}")
    stride = int(d["stride"])
    check_number(stride, "stride", f"waypoint bank {path}", low=1, integer=True)
    return WaypointBank(None if states is None else states.astype(np.float64), frames, d["proprio"].astype(np.float32),
                        d["episode_ids"].astype(np.int64), d["steps"].astype(np.int64), stride, str(d["env_id"]),
                        str(path), hashlib.sha256(raw).hexdigest())


def render_states(env_id: str, env_kwargs: Mapping[str, Any], states: np.ndarray) -> np.ndarray:
    """Frames [W,H,W,3] uint8 of full physics states [W,S], rendered by the task itself
    (``reset(options={"state": s, "goal_state": s})``, the task contract the dataset goals use)."""
    env = gym.make(env_id, disable_env_checker=True, **dict(env_kwargs))
    try:
        return np.stack([env.reset(seed=0, options={"state": s, "goal_state": s})[0]["pixels"] for s in states]).astype(np.uint8)
    finally:
        env.close()


class WaypointGraph:
    """Shortest paths between the waypoints of a bank, in one latent space.

    ``latents`` [W,F] (one flattened latent per waypoint), ``episode_ids``/``steps`` [W].
    ``links``: same-state links per waypoint (its nearest others); a link is kept when its
    latent distance is at most ``link_quantile`` of the one-step distances (the median by
    default), and costs that distance over the median one-step distance.
    """

    def __init__(self, latents: Tensor, episode_ids: np.ndarray, steps: np.ndarray, links: int = 8,
                 link_quantile: float = 0.5):
        z = latents.detach().float().cpu()
        w = z.shape[0]
        order = np.lexsort((steps, episode_ids))
        nxt = order[1:][episode_ids[order[1:]] == episode_ids[order[:-1]]]
        prv = order[:-1][episode_ids[order[1:]] == episode_ids[order[:-1]]]
        if len(prv) == 0:
            raise ConfigError("waypoint bank: no episode has two waypoints; the graph has no steps")
        step_len = (z[prv] - z[nxt]).norm(dim=1).numpy()
        unit = max(float(np.median(step_len)), 1e-8)
        tau = float(np.quantile(step_len, link_quantile))
        d = torch.cdist(z, z).numpy()
        np.fill_diagonal(d, np.inf)
        k = min(int(links), w - 1)
        nn = np.argpartition(d, k - 1, axis=1)[:, :k] if k > 0 else np.zeros((w, 0), int)
        src = np.repeat(np.arange(w), nn.shape[1])
        dst = nn.reshape(-1)
        keep = d[src, dst] <= tau
        src, dst = src[keep], dst[keep]
        rows = np.concatenate([prv, src, dst])
        cols = np.concatenate([nxt, dst, src])
        cost = np.concatenate([np.ones(len(prv)), d[src, dst] / unit, d[src, dst] / unit])
        cost = np.maximum(cost, 1e-6)  # a zero entry would be read as "no edge"
        order = np.argsort(cost, kind="stable")  # a pair given twice (step and link) keeps its cheaper edge
        _, first = np.unique((rows * w + cols)[order], return_index=True)
        keep_e = order[first]
        adj = coo_matrix((cost[keep_e], (rows[keep_e], cols[keep_e])), shape=(w, w)).tocsr()
        self.dist, self.pred = shortest_path(adj, method="D", directed=True, return_predecessors=True)
        self.latents = z
        self.unit = unit  # median one-step latent distance: the graph's cost unit

    def match(self, current: Tensor, goal: Tensor, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(start [B], goal [B]) nodes for current latents [B,F] and goal latents [B,F].

        Of the ``k`` nearest waypoints of each, the pair with the least total cost: latent
        distance to the start node + path cost + latent distance from the goal node (distances
        in step units). Several candidates make the match robust to which recorded episode
        happens to pass closest (the nearest may lead nowhere); unconnected pairs count only
        when no pair is connected (then the nearest pair)."""
        cur, gl = current.detach().float().cpu(), goal.detach().float().cpu()
        ds, s = torch.cdist(cur, self.latents).topk(min(int(k), len(self.latents)), dim=1, largest=False)
        dg, g = torch.cdist(gl, self.latents).topk(min(int(k), len(self.latents)), dim=1, largest=False)
        s, g = s.numpy(), g.numpy()
        cost = self.dist[s[:, :, None], g[:, None, :]] + (ds.numpy()[:, :, None] + dg.numpy()[:, None, :]) / self.unit
        flat = cost.reshape(len(s), -1)
        best = np.where(np.isfinite(flat).any(1), flat.argmin(1), 0)
        rows = np.arange(len(s))
        return s[rows, best // g.shape[1]], g[rows, best % g.shape[1]]

    def next_waypoint(self, start: np.ndarray, goal: np.ndarray, lookahead: float) -> tuple[np.ndarray, np.ndarray]:
        """(waypoint [B], is_final [B]) for node pairs ``start``/``goal`` [B].

        The waypoint is the first node on the shortest path whose path cost from ``start`` is at
        least ``lookahead``; ``is_final`` where the goal is within ``lookahead`` (or unreachable
        in the graph), and then the waypoint is the goal node itself.
        """
        out, final = np.empty(len(start), np.int64), np.zeros(len(start), bool)
        for b, (s, g) in enumerate(zip(start.tolist(), goal.tolist())):
            total = self.dist[s, g]
            if not np.isfinite(total) or total <= lookahead:
                out[b], final[b] = g, True
                continue
            node = g
            while self.pred[s, node] >= 0 and self.dist[s, self.pred[s, node]] >= lookahead:
                node = self.pred[s, node]
            out[b] = node
        return out, final
