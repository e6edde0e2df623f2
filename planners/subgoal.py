"""Subgoal planning: a high-level search over dataset waypoints feeding any low-level planner.

At every replan the current latent and the goal latent are matched to their nearest waypoints
of a bank (``planners/waypoints.py``); the shortest path between them in the waypoint graph
gives the next subgoal, ``lookahead`` steps of recorded behaviour ahead, and the low-level
planner (``inner``, any registered planner) plans to that subgoal's latent with the same
energy. Once the goal is within ``lookahead`` of the current waypoint, the low-level planner
plans to the goal image itself. This is for goals that need a detour: around PointMaze's wall,
behind the block before pushing it.

    python scripts/plan.py task=point_maze planner=subgoal                     # inner: iCEM
    python scripts/plan.py task=arm_push planner=subgoal planner.lookahead=3 planner.inner.samples=256
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import (
    ActionPrior, ConfigError, Goal, PlanContext, Planner, PlannerConfig, PlanResult, WorldModelLike, check_choice,
    check_number,
)
from .registry import build_planner, register_planner
from .waypoints import WaypointBank, WaypointGraph, load_waypoint_bank, render_states


@dataclass
class SubgoalConfig(PlannerConfig):
    inner: Any = field(default_factory=lambda: {"name": "cem"})  # the low-level planner's config (name + fields)
    bank: str | None = None  # waypoint bank: bundled:<task> | a path (scripts/make_waypoint_bank.py)
    lookahead: float = 3.0  # path cost to the next subgoal, in waypoint steps (bank stride env steps each)
    candidates: int = 4  # nearest waypoints of the current and the goal latent tried as path ends
    links: int = 8  # same-state links tried per waypoint (its nearest others in latent space)
    link_quantile: float = 0.5  # keep a link when shorter than this quantile of one-step distances
    encode_batch: int = 256  # bank frames encoded per world-model call (bounds memory)
    # "always": every replan follows the waypoint path. "stall": an env plans straight to its goal
    # until that stops paying (its latent distance to the goal has not shrunk by min_progress
    # waypoint steps for `patience` replans: a wall, an object to go around), then follows the path.
    engage: str = "always"
    patience: int = 2
    min_progress: float = 0.25

    def validate(self, where: str) -> None:
        super().validate(where)
        if not self.bank:
            raise ConfigError(f"{where}: needs a waypoint bank: planner.bank=bundled:<task> or a path "
                              "(scripts/make_waypoint_bank.py writes one; task configs set waypoint_bank)")
        check_number(self.lookahead, "lookahead", where, low=0, low_open=True)
        check_number(self.candidates, "candidates", where, low=1, integer=True)
        check_number(self.links, "links", where, low=0, integer=True)
        check_number(self.link_quantile, "link_quantile", where, low=0, high=1)
        check_number(self.encode_batch, "encode_batch", where, low=1, integer=True)
        check_choice(self.engage, "engage", ("always", "stall"), where)
        check_number(self.patience, "patience", where, low=1, integer=True)
        check_number(self.min_progress, "min_progress", where, low=0)
        if not isinstance(self.inner, dict) or "name" not in self.inner:
            raise ConfigError(f"{where}: inner must be a planner config with a 'name', got {self.inner!r}")
        if self.inner["name"] == "subgoal":
            raise ConfigError(f"{where}: inner planner cannot be 'subgoal' itself")


@register_planner("subgoal")
class SubgoalPlanner(Planner):
    """Waypoint search (high level) + ``inner`` planner (low level); same plan/shift/select contract.

    ``plan`` returns the inner planner's result with ``stats["subgoal"]`` [B] (waypoint ids, -1
    where the env plans to its goal) and ``stats["subgoal_final"]`` [B] bool.
    """

    config_cls = SubgoalConfig
    config: SubgoalConfig

    def __init__(self, config: SubgoalConfig | None = None, energy: Any = None, prior: ActionPrior | None = None):
        super().__init__(config, energy, prior)
        inner = {**self.config.inner, "horizon": self.config.horizon}  # one horizon: the outer planner's
        self.inner = build_planner(inner, energy=self.energy, prior=prior)  # the prior proposes towards the subgoal
        self.bank: WaypointBank = load_waypoint_bank(self.config.bank)
        self._graph: WaypointGraph | None = None
        self._graph_of: int | None = None  # id() of the world model the graph was built for
        self._bank_latents: Tensor | None = None
        self._frames: np.ndarray | None = self.bank.frames
        self._progress: dict[str, np.ndarray] = {}  # engage=stall, per env: best distance, stalled replans, engaged

    def describe(self) -> dict[str, Any]:
        return {"waypoint_bank": self.bank.path, "waypoint_bank_sha256": self.bank.sha256}

    def prepare(self, env_id: str, env_kwargs: Mapping[str, Any]) -> None:
        """Check the bank was recorded in ``env_id``; render a bank of states with the run's env
        settings (camera, image size), so its frames look like the run's observations."""
        if env_id != self.bank.env_id:
            raise ConfigError(f"waypoint bank {self.bank.path} was recorded in {self.bank.env_id!r}, but env.id={env_id!r}")
        if self.bank.states is not None:
            self._frames = render_states(env_id, env_kwargs, self.bank.states)
            self._graph = None

    def graph(self, world_model: WorldModelLike) -> WaypointGraph:
        """The waypoint graph in ``world_model``'s latent space (built on first use, then cached)."""
        if self._graph is None or self._graph_of != id(world_model):
            if self._frames is None:
                raise ConfigError(f"waypoint bank {self.bank.path} holds states only: call planner.prepare(env_id, "
                                  "env_kwargs) first (the evaluator does) to render them")
            dev = torch.as_tensor(world_model.action_low).device
            parts = []
            with torch.no_grad():
                for i in range(0, len(self.bank), self.config.encode_batch):
                    chunk = torch.from_numpy(self._frames[i : i + self.config.encode_batch, None]).to(dev)
                    parts.append(world_model.encode(chunk)[:, -1].float())  # [w,N,D]
            self._bank_latents = torch.cat(parts)
            self._graph = WaypointGraph(self._bank_latents.flatten(1), self.bank.episode_ids, self.bank.steps,
                                        self.config.links, self.config.link_quantile)
            self._graph_of = id(world_model)
        return self._graph

    def subgoals(self, world_model: WorldModelLike, current: Tensor, goal: Goal,
                 direct: np.ndarray | None = None) -> tuple[Goal, np.ndarray, np.ndarray]:
        """Each env's subgoal: current latents [B,N,D] and goal -> (Goal [B,...], node ids [B], final [B]).
        ``direct`` [B]: envs that plan to the goal itself this time (final)."""
        g = self.graph(world_model)
        start, end = g.match(current.flatten(1), goal.latents.flatten(1), self.config.candidates)
        nodes, final = g.next_waypoint(start, end, float(self.config.lookahead))
        if direct is not None:
            final = final | direct
        assert self._bank_latents is not None
        dev = goal.latents.device
        keep = torch.from_numpy(final).to(dev)
        sub = self._bank_latents.index_select(0, torch.from_numpy(nodes).to(dev)).to(goal.latents.dtype)
        lat = torch.where(keep[:, None, None], goal.latents, sub)
        prop = None
        if goal.proprio is not None:
            bank_p = torch.from_numpy(self.bank.proprio[nodes]).to(goal.proprio)
            prop = torch.where(keep[:, None], goal.proprio, bank_p)
        return Goal(lat, prop), np.where(final, -1, nodes), final

    def engaged(self, current: Tensor, goal: Goal, unit: float) -> np.ndarray:
        """Which envs follow the waypoint path this replan [B] bool. engage=stall: from each env's
        latent distance to its goal (current [B,N,D], in waypoint-step units ``unit``), updating
        the per-env progress record; engage=always: every env, with nothing computed."""
        c, p = self.config, self._progress
        if c.engage == "always":
            return np.ones(current.shape[0], bool)
        distance = (current.flatten(1).float() - goal.latents.flatten(1).float()).norm(dim=1).cpu().numpy() / unit
        if not p or len(p["best"]) != len(distance):
            self._progress = {"best": distance.copy(), "stalled": np.zeros(len(distance), int),
                              "engaged": np.zeros(len(distance), bool)}
            return self._progress["engaged"].copy()
        progressed = distance < p["best"] - c.min_progress
        p["stalled"] = np.where(progressed, 0, p["stalled"] + 1)
        p["best"] = np.minimum(p["best"], distance)
        p["engaged"] |= p["stalled"] >= c.patience  # once engaged, the env follows the path to the end
        return p["engaged"].copy()

    def plan(self, world_model: WorldModelLike, context: PlanContext, goal: Goal, init: Tensor | None = None,
             generator: Any = None, horizon: int | None = None) -> PlanResult:
        """Plan actions [B,H,A] towards each env's next subgoal (see the module docstring)."""
        current = context.latents[:, -1]
        use = self.engaged(current, goal, self.graph(world_model).unit)
        sub, nodes, final = self.subgoals(world_model, current, goal, direct=~use)
        result = self.inner.plan(world_model, context, sub, init, generator, horizon)
        stats = dict(result.stats or {})
        stats["subgoal"], stats["subgoal_final"] = torch.from_numpy(nodes), torch.from_numpy(final)
        return PlanResult(result.actions, result.energy, stats)

    def reset(self) -> None:
        self.inner.reset()
        self._progress = {}

    def shift(self, steps: int) -> None:
        self.inner.shift(steps)

    def select(self, index: Tensor | Sequence[int]) -> None:
        self.inner.select(index)
        idx = np.asarray(torch.as_tensor(index).cpu(), dtype=np.int64)
        self._progress = {k: v[idx] for k, v in self._progress.items()}
