"""The Planner base class (a template method: ``plan`` = shared setup + a per-planner
``_optimise`` hook), the best-so-far tracker and the helpers every planner shares.

Shapes follow ``wmplan.protocols`` (whose types are re-exported here): B envs, S samples per
env, M = B*S rollout rows, H horizon, A planner action dim. Module-level imports only reach
leaf modules (protocols, constraints, energies), so nothing here can form an import cycle.
"""
from __future__ import annotations

import dataclasses
import platform
import time
from abc import ABC
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..checks import ConfigError, check_choice, check_number
from ..protocols import ActionPrior, Goal, PlanContext, PlanResult, Rollout, TeacherForcedModel, WorldModelLike, row_chunks
from .constraints import box_centre, project_actions
from .energies import GoalEnergy
from .validation import check_plan_inputs, check_plan_output

__all__ = [
    "ActionPrior", "Goal", "PlanContext", "PlanResult", "Rollout", "TeacherForcedModel", "WorldModelLike",
    "PlannerConfig", "Planner", "PlanSetup", "BestSoFar", "GeneratorArg", "row_bytes", "slice_context",
    "box_centre", "half_range", "shift_actions", "make_noise", "make_uniform", "action_bounds",
    "gather_rows", "argmin_rows", "to_plain", "dataclass_from_dict", "check_number", "check_choice", "ConfigError",
]


@dataclass
class PlannerConfig:
    """Fields shared by all planners. Subclasses add their own."""

    horizon: int = 8
    warm_start: bool = True  # keep the last plan (and elites) to seed the next call
    shift_fill: str = "last"  # how a shifted plan is padded at the end: "last" | "zero"
    amp: bool = False  # bf16 autocast for the world-model rollout; CUDA only, ignored elsewhere
    constraint: str = "box"  # "box" | "l1" (L1 ball around the box centre, then box)
    l1_radius: float = 1.0
    l1_group: int = 0  # L1 ball per chunk of this many action dims (0 = whole action vector)
    # Score the B*S candidate rows in chunks so one rollout + energy call stays within this many
    # MiB (bytes per row from the world model's ``rollout_bytes_per_row``, see ``rows_per_call``).
    # None: one call for all rows (the default; plans are unchanged either way, up to float rounding).
    memory_budget_mb: float | None = None

    def validate(self, where: str) -> None:
        """Raise ConfigError naming the first option out of range (subclasses extend this)."""
        check_number(self.horizon, "horizon", where, low=1, integer=True)
        check_choice(self.shift_fill, "shift_fill", ("last", "zero"), where)
        check_choice(self.constraint, "constraint", ("box", "l1"), where)
        check_number(self.l1_radius, "l1_radius", where, low=0, low_open=True)
        check_number(self.l1_group, "l1_group", where, low=0, integer=True)
        if self.memory_budget_mb is not None:
            check_number(self.memory_budget_mb, "memory_budget_mb", where, low=0, low_open=True)


GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


@dataclass
class PlanSetup:
    """What ``Planner.plan`` works out before a planner's ``_optimise`` runs.

    ``low``/``high``/``scale`` are [A] (scale = box half-range, 1 on unbounded dims);
    ``mean`` [B,H,A] is ``init`` > warm-start plan > box centre. The generator is only stored:
    each planner draws its noise itself, so the draw order is the planner's own.
    """

    b: int
    h: int
    low: Tensor
    high: Tensor
    scale: Tensor
    mean: Tensor
    generator: GeneratorArg

    @property
    def a_dim(self) -> int:
        return int(self.low.shape[0])

    @property
    def dev(self) -> torch.device:
        return self.low.device

    def noise(self, shape: Sequence[int]) -> Tensor:
        """Standard normal noise [B,*shape,H,A] (see ``make_noise`` for the generator rules)."""
        return make_noise(self.generator, self.b, (*shape, self.h, self.a_dim), self.dev)

    def uniform(self, shape: Sequence[int]) -> Tensor:
        """Uniform samples in the box [B,*shape,H,A]; unbounded dims use centre +- 1."""
        lo = torch.where(torch.isfinite(self.low), self.low, box_centre(self.low, self.high) - 1)
        return lo + 2 * self.scale * make_uniform(self.generator, self.b, (*shape, self.h, self.a_dim), self.dev)


class BestSoFar:
    """Per-row best candidate across iterations, kept with ``torch.where`` (no host syncs).

    ``actions`` [R,H,A] (starts as a copy of the initial actions), ``energy`` [R] (starts at
    +inf), ``terms`` {k: [R]} (the terms of the kept candidate; filled on the first update).
    """

    def __init__(self, actions: Tensor):
        self.actions = actions.clone()
        self.energy = torch.full((actions.shape[0],), float("inf"), device=actions.device)
        self.terms: dict[str, Tensor] = {}

    def update(self, actions: Tensor, energy: Tensor, terms: Mapping[str, Tensor] | None = None) -> Tensor:
        """Keep ``actions`` [R,H,A] where ``energy`` [R] is lower; returns that mask [R]."""
        better = energy < self.energy
        self.actions = torch.where(better[:, None, None], actions, self.actions)
        self.energy = torch.where(better, energy, self.energy)
        for k, v in (terms or {}).items():
            self.terms[k] = torch.where(better, v, self.terms[k]) if k in self.terms else v
        return better


class Planner(ABC):
    """Base class: holds config + energy, warm-start state, and the shared ``plan``.

    Subclasses implement ``_optimise`` (``plan`` does the common setup and stores the warm
    start); a planner that needs none of that may override ``plan`` itself. Warm-start state
    is a dict of per-env tensors whose last two dims are [H,A] (``mean`` [B,H,A], e.g.
    ``elites`` [B,K,H,A]); ``shift`` and ``select`` operate on all of them, so the MPC runner
    stays planner-agnostic.
    """

    name: ClassVar[str] = "base"
    config_cls: ClassVar[type[PlannerConfig]] = PlannerConfig

    def __init__(self, config: PlannerConfig | None = None, energy: Any = None, prior: ActionPrior | None = None):
        self.config = config if config is not None else self.config_cls()
        self.config.validate(f"planner {self.name!r}")
        self.energy = energy if energy is not None else GoalEnergy()
        # An action prior (e.g. a goal policy, worldmodel/goal_policy.py): its proposal seeds the
        # search's initial mean on every call (``init`` still overrides it).
        self.prior = prior
        self._warm: dict[str, Tensor] = {}

    # ----------------------------------------------------------------- interface
    @torch.no_grad()  # sampling planners need no graph; the gradient planner re-enables grad inside
    def plan(
        self,
        world_model: WorldModelLike,
        context: PlanContext,
        goal: Goal,
        init: Tensor | None = None,
        generator: GeneratorArg = None,
        horizon: int | None = None,
    ) -> PlanResult:
        """Optimise actions [B,H,A] for B envs at once -> PlanResult(actions [B,H,A], energy [B], stats).

        ``init`` [B,H,A] seeds the search (overrides the internal warm start). ``generator``:
        one ``torch.Generator`` shared by all envs, or a list of B (one noise stream per env,
        so planning envs together equals planning them one by one), or None (a fresh
        generator seeded 0). ``horizon`` overrides ``config.horizon``.
        """
        b, h = context.batch, self._horizon(init, horizon)
        low, high = action_bounds(world_model)
        where = f"planner {self.name!r}"
        check_plan_inputs(context, goal, init, h, low, high, where)
        if init is None and self.prior is not None:  # the prior's plan replaces the warm start
            mean = self._project(self.prior.propose(world_model, context, goal, h).to(low), low, high)
        else:
            mean = self._initial_mean(init, b, h, low, high)
        setup = PlanSetup(b, h, low, high, half_range(low, high), mean, generator)
        result, extra_warm = self._optimise(world_model, context, goal, setup)
        check_plan_output(result.actions, result.energy, where)
        if self.config.warm_start:
            self._warm = {"mean": result.actions, **extra_warm}
        return result

    def _optimise(
        self, world_model: WorldModelLike, context: PlanContext, goal: Goal, setup: PlanSetup
    ) -> tuple[PlanResult, dict[str, Tensor]]:
        """The planner's search. Returns the result and the warm-start tensors to keep besides
        ``mean`` (which is always the returned plan), each [B,...,H,A]."""
        raise NotImplementedError(f"{type(self).__name__} must implement _optimise (or override plan)")

    def prepare(self, env_id: str, env_kwargs: Mapping[str, Any]) -> None:
        """Called once by the evaluator, before its episodes, with the env they run in. A
        planner that needs facts of the task (the subgoal planner renders its waypoint bank)
        overrides it; the others need nothing."""

    def describe(self) -> dict[str, Any]:
        """Files and facts this planner read beyond its config, for the run summary (the subgoal
        planner: its waypoint bank and the bank's sha256); {} for the others."""
        return {}

    def reset(self) -> None:
        """Forget warm-start state (call at episode start)."""
        self._warm = {}

    def shift(self, steps: int) -> None:
        """Advance warm-start state by ``steps`` executed predictor steps."""
        self._warm = {k: shift_actions(v, steps, self.config.shift_fill) for k, v in self._warm.items()}

    def select(self, index: Tensor | Sequence[int]) -> None:
        """Keep warm-start state only for env rows ``index`` (batch compaction)."""
        if not self._warm:
            return
        dev = next(iter(self._warm.values())).device
        idx = torch.as_tensor(index, dtype=torch.long, device=dev)
        self._warm = {k: v.index_select(0, idx) for k, v in self._warm.items()}

    # ----------------------------------------------------------------- helpers
    def _horizon(self, init: Tensor | None, horizon: int | None) -> int:
        if horizon is not None:
            return int(horizon)
        if init is not None:
            return int(init.shape[1])
        return int(self.config.horizon)

    def _warm_tensor(self, key: str, batch: int, horizon: int) -> Tensor | None:
        """Warm-start tensor ``key`` if it matches the current batch and horizon."""
        v = self._warm.get(key) if self.config.warm_start else None
        if v is None or v.shape[0] != batch or v.shape[-2] != horizon:
            return None
        return v

    def _initial_mean(self, init: Tensor | None, batch: int, horizon: int, low: Tensor, high: Tensor) -> Tensor:
        """[B,H,A]: ``init`` > warm state > box centre (0 where bounds are infinite)."""
        if init is not None:
            return init.to(low.dtype)
        warm = self._warm_tensor("mean", batch, horizon)
        if warm is not None:
            return warm
        return box_centre(low, high).expand(batch, horizon, -1).clone()

    def _project(self, actions: Tensor, low: Tensor, high: Tensor) -> Tensor:
        """Project [...,A] onto the configured constraint set (always ends inside the box)."""
        c = self.config
        return project_actions(actions, low, high, c.constraint, c.l1_radius, c.l1_group)

    def _rollout(self, world_model: WorldModelLike, context: PlanContext, actions: Tensor) -> Rollout:
        """Roll [M,H,A] through the model; bf16 autocast on CUDA when ``config.amp``.

        Outputs are cast back to fp32 so energies, top-k and statistics stay fp32.
        """
        use_amp = self.config.amp and actions.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else nullcontext():
            if context.actions is None:
                r = world_model.rollout(context.latents, context.proprio, actions)
            else:
                r = world_model.rollout(context.latents, context.proprio, actions, ctx_actions=context.actions)
        f32 = lambda x: None if x is None else x.float()  # noqa: E731
        return Rollout(f32(r.latents), f32(getattr(r, "proprio", None)), f32(getattr(r, "disagreement", None)))

    def _energy(
        self, world_model: WorldModelLike, context: PlanContext, goal_rows: Goal, actions: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Roll out and score actions [M,H,A] against ``goal_rows`` [M,...] -> (total [M], {term: [M]})."""
        return self.energy.evaluate(self._rollout(world_model, context, actions), goal_rows, actions, {})

    def _evaluate(
        self, world_model: WorldModelLike, context: PlanContext, goal_rows: Goal, cand: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Score candidates [B,S,H,A] -> (total [B,S], {term: [B,S]}): one rollout of B*S rows,
        or, with ``config.memory_budget_mb``, chunks of whole envs or part of one env
        (``row_chunks``), each with its slice of the context and its own goal rows."""
        b, s = cand.shape[:2]
        flat = cand.reshape(b * s, *cand.shape[2:])
        spans = self.row_spans(world_model, context, s, cand.shape[2])
        if len(spans) == 1:  # all rows in one call: no slicing (GoalRows would copy its rows)
            total, terms = self._energy(world_model, context, goal_rows, flat)
        else:
            totals, parts = [], {}
            for b0, b1, r0, r1 in spans:
                t, tm = self._energy(world_model, slice_context(context, b0, b1), goal_rows.rows(r0, r1), flat[r0:r1])
                totals.append(t)
                for k, v in tm.items():
                    parts.setdefault(k, []).append(v)
            total, terms = torch.cat(totals), {k: torch.cat(v) for k, v in parts.items()}
        return total.reshape(b, s), {k: v.reshape(b, s) for k, v in terms.items()}

    def row_spans(
        self, world_model: WorldModelLike, context: PlanContext, samples: int, horizon: int, grad: bool = False
    ) -> list[tuple[int, int, int, int]]:
        """(b0, b1, r0, r1) spans of the B*S rows (contexts b0:b1, rows r0:r1) that one call may
        take under the budget (``rows_per_call``); the single span (0, B, 0, B*S) when all fit."""
        b = context.batch
        rows = self.rows_per_call(world_model, context, horizon, grad)
        return [(0, b, 0, b * samples)] if rows >= b * samples else row_chunks(b, samples, rows)

    def rows_per_call(self, world_model: WorldModelLike, context: PlanContext, horizon: int, grad: bool = False) -> int:
        """Most rollout rows one ``_evaluate`` call may score at once (a huge number without a budget).

        bytes/row = the world model's ``rollout_bytes_per_row(horizon, context_len)`` (optional,
        read with ``getattr``; without it, the [H,N,D] fp32 output and its copy) + what scoring a
        row holds (the fp32 rollout and one [H,N,D] temporary of the energy, the goal row).
        The world model's per-call part (``rollout_bytes_fixed``, optional, 0 without it) comes
        off the budget first. A budget below one row still scores one row per call.
        ``grad=True``: rows of one backward pass, which keeps the graph: the world model's
        ``gradient_bytes_per_row`` / ``gradient_bytes_fixed`` when it has them, else
        ``GRAPH_FACTOR`` times the no-grad estimates.
        """
        if self.config.memory_budget_mb is None:
            return 1 << 62
        fixed = _estimate(world_model, "fixed", horizon, context.latents.shape[1], grad)
        free = self.config.memory_budget_mb * 2**20 - fixed
        return max(1, int(free // row_bytes(world_model, context, horizon, grad)))


# Without a world model's own gradient estimate: a backward pass keeps every block's activations.
GRAPH_FACTOR = 8


def _estimate(world_model: WorldModelLike, part: str, horizon: int, ctx_len: int, grad: bool) -> int | None:
    """The world model's optional byte estimate ``part`` ("per_row" | "fixed"): None (per_row) or 0 (fixed) without one."""
    fn = getattr(world_model, f"gradient_bytes_{part}", None) if grad else None
    own = None if fn is None else fn(horizon, ctx_len)  # a world model may answer None: no estimate
    if own is not None:
        return int(own)
    fn = getattr(world_model, f"rollout_bytes_{part}", None)
    if fn is None:
        return None if part == "per_row" else 0
    return int(fn(horizon, ctx_len)) * (GRAPH_FACTOR if grad else 1)


def row_bytes(world_model: WorldModelLike, context: PlanContext, horizon: int, grad: bool = False) -> int:
    """Estimated peak bytes one rollout row costs a planner: world model + energy (see ``rows_per_call``)."""
    n, d = context.latents.shape[-2:]
    out = 4 * horizon * n * d  # one fp32 [H,N,D]
    model = _estimate(world_model, "per_row", horizon, context.latents.shape[1], grad)
    if model is None:
        model = 2 * out * (GRAPH_FACTOR if grad else 1)
    return model + 2 * out + 4 * n * d


def slice_context(context: PlanContext, b0: int, b1: int) -> PlanContext:
    """Envs ``b0:b1`` of a context (views)."""
    cut = lambda x: None if x is None else x[b0:b1]  # noqa: E731
    return PlanContext(context.latents[b0:b1], cut(context.proprio), cut(context.actions))


# ---------------------------------------------------------------------- free helpers
def half_range(low: Tensor, high: Tensor) -> Tensor:
    """[A] half-width of the box; 1 on unbounded dims (so relative stds stay meaningful)."""
    h = (high - low) / 2
    return torch.where(torch.isfinite(h), h, torch.ones_like(h))


def shift_actions(x: Tensor, steps: int, fill: str = "last") -> Tensor:
    """Drop the first ``steps`` entries of the H axis (dim -2) and pad the end.

    x: [...,H,A] -> [...,H,A]; padding repeats the last step ("last") or is zero ("zero").
    """
    h = x.shape[-2]
    steps = max(0, min(int(steps), h))
    if steps == 0:
        return x
    kept = x[..., steps:, :]
    if fill == "zero":
        pad = torch.zeros_like(x[..., :steps, :])
    else:
        pad = x[..., -1:, :].expand(*x.shape[:-2], steps, x.shape[-1])
    return torch.cat([kept, pad], dim=-2)


def _draw(
    sample: Callable[..., Tensor], generator: GeneratorArg, batch: int, shape: Sequence[int],
    device: torch.device, dtype: torch.dtype,
) -> Tensor:
    """[B,*shape] from ``sample`` (torch.randn / torch.rand) under the generator conventions."""
    shape = tuple(int(s) for s in shape)
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    if isinstance(generator, torch.Generator):
        return sample((batch, *shape), generator=generator, device=device, dtype=dtype)
    gens = list(generator)
    if len(gens) != batch:
        raise ValueError(f"got {len(gens)} generators for a batch of {batch} envs")
    return torch.stack([sample(shape, generator=g, device=device, dtype=dtype) for g in gens])


def make_noise(
    generator: GeneratorArg, batch: int, shape: Sequence[int], device: torch.device, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Standard normal noise [B,*shape], drawn once per plan call (outside the loop).

    A list of B generators gives env b its own stream (batched == one-by-one); a single
    generator draws the whole block at once; None uses a fresh generator seeded 0.
    """
    return _draw(torch.randn, generator, batch, shape, device, dtype)


def make_uniform(
    generator: GeneratorArg, batch: int, shape: Sequence[int], device: torch.device, dtype: torch.dtype = torch.float32
) -> Tensor:
    """U[0,1) noise [B,*shape] with the same generator conventions as ``make_noise``."""
    return _draw(torch.rand, generator, batch, shape, device, dtype)


def action_bounds(world_model: WorldModelLike, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """(low [A], high [A]) of the world model as fp32 tensors."""
    low = torch.as_tensor(world_model.action_low).to(dtype)
    high = torch.as_tensor(world_model.action_high).to(dtype)
    return low, high


def gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """x [B,S,...], idx [B,K] -> [B,K,...] (top-k gather along the sample axis)."""
    view = idx.reshape(*idx.shape, *([1] * (x.dim() - 2)))
    return torch.gather(x, 1, view.expand(*idx.shape, *x.shape[2:]))


def argmin_rows(
    energy: Tensor, cand: Tensor, terms: Mapping[str, Tensor] | None = None
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Lowest-energy sample per env: energy [B,S], cand [B,S,...], terms {k: [B,S]} ->
    (cand [B,...], energy [B], {k: [B]})."""
    e_min, idx = energy.min(1)
    best = cand[torch.arange(cand.shape[0], device=cand.device), idx]
    return best, e_min, {k: v.gather(1, idx[:, None]).squeeze(1) for k, v in (terms or {}).items()}


# ---------------------------------------------------------------------- config plumbing
def to_plain(cfg: Any) -> Any:
    """Recursively turn Mapping/Sequence configs (incl. OmegaConf containers) into dict/list."""
    if isinstance(cfg, Mapping):
        return {str(k): to_plain(v) for k, v in cfg.items()}
    if isinstance(cfg, Sequence) and not isinstance(cfg, (str, bytes)):
        return [to_plain(v) for v in cfg]
    return cfg


def dataclass_from_dict(cls: type, values: Mapping[str, Any], what: str) -> Any:
    """Build dataclass ``cls`` from ``values``; unknown keys raise naming the valid ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{what}: unknown option(s) {unknown}; valid: {sorted(names)}")
    return cls(**values)


def planning_run_record(planner: Planner, device: Any, started: float, config: dict[str, Any]) -> dict[str, Any]:
    """The fields every offline planning summary records: the device, the planner and energy as
    built, the wall time since ``started`` (``time.time()``), library versions and the composed config."""
    return {"device": str(device), "planner_built": repr(planner.config), "energy_built": repr(planner.energy),
            "wall_time_s": round(time.time() - started, 2),
            "versions": {"torch": torch.__version__, "python": platform.python_version()}, "config": config}
