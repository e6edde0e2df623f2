"""Training helpers for the action-conditioned predictor: windows, statistics, losses, eval.

A *predictor step* is ``frameskip`` env actions (the predictor's ``frameskip``, not the
env's MuJoCo ``substeps`` per env action): latents/proprio are taken every ``frameskip``-th
frame and the predictor action of a step is the ``frameskip`` env actions in between,
concatenated (``A = frameskip * A_env``). Window latents are the cached latents standardised
with :func:`~wmplan.worldmodel.latents.standardise`, as ``WorldModel.encode`` does.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .latent_cache import LatentCache
from .latents import standardise
from .predictor import ACPredictor

# Floor for per-dimension std: a (near-)constant action/proprio dim in the data must not
# turn a planner's slightly different value into a huge normalised input.
STD_FLOOR = 1e-2
# Latent std floor relative to the mean per-dimension std: (near-)constant latent dims are
# scaled up at most 10x more than typical ones instead of amplifying rendering noise.
LATENT_STD_REL_FLOOR = 0.1


@dataclass
class Window:
    """A batch of normalised training windows of W predictor steps.

    latents ``[B, W, N, D]`` fp32, actions ``[B, W-1, A]`` (normalised), proprio ``[B, W, P]`` | None,
    episode_ids ``[B]`` long: the dataset episode each window came from (errors name them).
    """

    latents: Tensor
    actions: Tensor
    proprio: Tensor | None
    episode_ids: Tensor | None = None

    def to(self, device: torch.device) -> "Window":
        """The same windows on ``device`` (``non_blocking`` copies; pinned by a CUDA loader)."""
        mv = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Window(mv(self.latents), mv(self.actions), mv(self.proprio), mv(self.episode_ids))


@dataclass
class Stats:
    """Normalisation statistics: action ``[A]`` (env stats tiled frameskip times), proprio ``[P]``,
    and optionally latent ``[N, D]`` (per token position and channel)."""

    action_mean: Tensor
    action_std: Tensor
    proprio_mean: Tensor | None
    proprio_std: Tensor | None
    latent_mean: Tensor | None = None
    latent_std: Tensor | None = None

    def as_dict(self) -> dict[str, Tensor | None]:
        return {"action_mean": self.action_mean, "action_std": self.action_std,
                "proprio_mean": self.proprio_mean, "proprio_std": self.proprio_std,
                "latent_mean": self.latent_mean, "latent_std": self.latent_std}


def compute_stats(cache: LatentCache, positions: list[int], frameskip: int, use_proprio: bool,
                  latent_norm: str | bool | None = None) -> Stats:
    """Per-dimension mean/std over the given cached episodes (by cache position).

    ``latent_norm`` also standardises the latents: ``"global"`` subtracts the per-dimension
    mean and divides by one scalar (the mean per-dimension std), which leaves goal-energy
    geometry unchanged up to scale; ``"dim"`` (or True) divides each token/channel by its
    own std, which also re-weights channels in the energy. Layer-normed latents of a small
    moving object vary by ~0.03 around a large constant part; either mode puts that
    variation at unit scale for the predictor.
    """
    if latent_norm is True:
        latent_norm = "dim"
    if latent_norm not in (None, False, "none", "global", "dim"):
        raise ValueError(f"latent_norm={latent_norm!r}: must be none, global or dim")
    ao, fo = cache.action_offsets, cache.frame_offsets
    acts = torch.cat([cache.actions[ao[e]:ao[e + 1]] for e in positions]).double()
    am, asd = acts.mean(0), acts.std(0, unbiased=False).clamp_min(STD_FLOOR)
    pm = psd = None
    if use_proprio:
        prop = torch.cat([cache.proprio[fo[e]:fo[e + 1]] for e in positions]).double()
        pm, psd = prop.mean(0).float(), prop.std(0, unbiased=False).clamp_min(STD_FLOOR).float()
    lm = lsd = None
    if latent_norm in ("global", "dim"):
        if cache.memmapped:  # never materialise all latents: two streaming passes over episodes
            lm, lsd = _streamed_mean_std(cache.latents, [(int(fo[e]), int(fo[e + 1])) for e in positions])
        else:
            lat = torch.cat([cache.latents[fo[e]:fo[e + 1]] for e in positions]).double()  # [F, N, D]
            lm, lsd = lat.mean(0), lat.std(0, unbiased=False)
        if latent_norm == "global":
            lsd = torch.full_like(lsd, float(lsd.mean()) + 1e-8)
        lsd = lsd.clamp_min(LATENT_STD_REL_FLOOR * float(lsd.mean()) + 1e-8)
        lm, lsd = lm.float(), lsd.float()
    return Stats(am.float().repeat(frameskip), asd.float().repeat(frameskip), pm, psd, lm, lsd)


def _streamed_mean_std(latents: Tensor, spans: list[tuple[int, int]], chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Float64 mean and (biased) std over the frames ``latents[a:b]`` of every span, ``[N, D]``
    each, reading at most ``chunk`` frames at a time (two passes: mean, then squared deviations)."""
    def chunks():
        for a, b in spans:
            for i in range(a, b, chunk):
                yield latents[i:min(b, i + chunk)].double()
    total = sum(b - a for a, b in spans)
    mean = sum(x.sum(0) for x in chunks()) / total
    var = sum((x - mean).pow(2).sum(0) for x in chunks()) / total
    return mean, var.sqrt()


class WindowSampler:
    """Draws windows of ``window`` predictor steps from cached episodes.

    Args:
        cache: the latent cache.
        positions: cache positions (not ids) of the episodes to draw from.
        frameskip: env actions per predictor step.
        window: number of predictor-step frames per window (W).
        stats: normalisation statistics.
        use_proprio: include proprio.
        device: where batches are produced (the cache tensors are moved there once; a
            memory-mapped cache's latents stay in the map and only gathered windows move).
    """

    def __init__(self, cache: LatentCache, positions: list[int], frameskip: int, window: int,
                 stats: Stats, use_proprio: bool, device: torch.device):
        self.fs, self.window, self.device = frameskip, window, device
        span = (window - 1) * frameskip  # env steps covered by one window
        fstart, astart, eids = [], [], []
        for e in positions:
            T = cache.episode_length(e)
            n = T - span + 1
            if n > 0:
                fstart.append(cache.frame_offsets[e] + torch.arange(n))
                astart.append(cache.action_offsets[e] + torch.arange(n))
                eids.append(torch.full((n,), int(cache.episode_ids[e])))  # cache position -> episode id
        if not fstart:
            raise ValueError(f"no episode is long enough for a window of {window} predictor steps "
                             f"x frameskip {frameskip} = {span} env steps")
        self.fstart = torch.cat(fstart).to(device)
        self.astart = torch.cat(astart).to(device)
        self.window_episode = torch.cat(eids).to(device)  # [num windows] dataset episode id
        # a memory-mapped cache is gathered from on the CPU, window by window (no full copy)
        self.latents = cache.latents if cache.memmapped else cache.latents.to(device)
        self.actions = cache.actions.to(device)
        self.proprio = cache.proprio.to(device) if use_proprio else None
        self.stats = Stats(*(None if t is None else t.to(device) for t in stats.as_dict().values()))
        self.f_off = torch.arange(window, device=device) * frameskip
        self.a_off = torch.arange(span, device=device)

    def __len__(self) -> int:
        """Number of distinct windows."""
        return int(self.fstart.numel())

    def gather(self, idx: Tensor) -> Window:
        """Windows for window indices ``idx [B]``."""
        fidx = self.fstart[idx, None] + self.f_off  # [B, W]
        aidx = self.astart[idx, None] + self.a_off  # [B, (W-1)*fs]
        lat = self.latents[fidx.to(self.latents.device)].to(self.device).float()  # [B, W, N, D]
        lat = standardise(lat, self.stats.latent_mean, self.stats.latent_std)
        B = idx.shape[0]
        act = self.actions[aidx].reshape(B, self.window - 1, -1)
        act = (act - self.stats.action_mean) / self.stats.action_std
        prop = None
        if self.proprio is not None:
            prop = (self.proprio[fidx] - self.stats.proprio_mean) / self.stats.proprio_std
        return Window(lat, act, prop, self.window_episode[idx])

    def sample(self, batch_size: int, generator: torch.Generator, shard: slice | None = None) -> Window:
        """Uniform random windows (with replacement); ``generator`` lives on CPU.

        ``shard``: keep only these positions of the ``batch_size`` drawn indices (a rank's share
        of the global batch, :func:`~wmplan.worldmodel.distributed.shard_slice`); every rank
        draws the same global indices, so the union of the shards is the unsharded batch.
        """
        idx = torch.randint(len(self), (batch_size,), generator=generator)
        if shard is not None:
            idx = idx[shard]
        return self.gather(idx.to(self.device))

    def fixed(self, n: int, seed: int = 0) -> Window:
        """A deterministic set of at most ``n`` distinct windows (for validation)."""
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].to(self.device)
        return self.gather(idx)


class _WindowsByIndex(Dataset):
    """Map-style view of a sampler for a DataLoader: key = window indices ``[B]`` -> Window."""

    def __init__(self, sampler: WindowSampler):
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __getitem__(self, idx: Tensor) -> Window:
        return self.sampler.gather(idx)


class WindowStream:
    """The training batches of steps ``start .. stop-1``, in order, drawn as
    :meth:`WindowSampler.sample` draws them (same generator stream, same windows).

    ``num_workers=0`` gathers in the loop (today's behaviour); ``num_workers > 0`` gathers in
    DataLoader worker processes (from a memory-mapped cache too: the map is shared with the
    forked workers), a few steps ahead, while the window indices are still drawn here in the main
    process. ``sampler.device`` must then be the CPU; move batches with :meth:`Window.to`.
    :meth:`generator_state` gives the generator state at a step boundary for resume points
    (the loader may have drawn ahead of it).
    """

    def __init__(self, sampler: WindowSampler, batch_size: int, generator: torch.Generator, start: int, stop: int,
                 shard: slice | None = None, num_workers: int = 0, pin_memory: bool = False):
        if num_workers and sampler.device.type != "cpu":
            raise ValueError(f"WindowStream: worker processes gather on the CPU; the sampler is on {sampler.device}")
        self.sampler, self.batch_size, self.gen, self.shard = sampler, batch_size, generator, shard
        self.start, self.stop, self.num_workers, self.pin_memory = start, stop, num_workers, pin_memory
        self._states: dict[int, torch.Tensor] = {}  # step -> generator state before drawing its indices

    def _keys(self) -> Iterator[Tensor]:
        for step in range(self.start, self.stop):
            self._states[step] = self.gen.get_state()
            idx = torch.randint(len(self.sampler), (self.batch_size,), generator=self.gen)
            yield idx if self.shard is None else idx[self.shard]

    def __iter__(self) -> Iterator[Window]:
        if not self.num_workers:
            for idx in self._keys():
                yield self.sampler.gather(idx.to(self.sampler.device))
            return
        loader = DataLoader(_WindowsByIndex(self.sampler), batch_size=None, sampler=self._keys(),
                            num_workers=self.num_workers, pin_memory=self.pin_memory,
                            multiprocessing_context="fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        yield from loader

    def generator_state(self, step: int) -> torch.Tensor:
        """The generator state after the draws of steps ``< step`` (what a resume at ``step`` needs)."""
        for k in [k for k in self._states if k < step]:
            del self._states[k]
        return self._states.get(step, self.gen.get_state())


def distance(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    """Mean element-wise L1 (``"l1"``) or squared error (``"l2"``) in fp32 (a bf16 autocast forward's
    outputs are upcast first; fp32 inputs are untouched); broadcasts."""
    pred, target = pred.float(), target.float()
    if kind == "l1":
        return (pred - target).abs().mean()
    if kind == "l2":
        return (pred - target).pow(2).mean()
    raise ValueError(f"loss must be 'l1' or 'l2', got {kind!r}")


def training_losses(model: ACPredictor, w: Window, context: int, rollout_steps: int, kind: str = "l1",
                    rollout_weight: float = 1.0, proprio_weight: float = 1.0) -> dict[str, Tensor]:
    """Teacher-forcing loss over all W-1 transitions + weighted multi-step rollout loss.

    Window layout (W = context + rollout_steps frames): the rollout starts from frames
    ``0..context-1`` and predicts frames ``context..context+rollout_steps-1`` autoregressively
    (with gradients through the fed-back predictions). Every ensemble head gets the
    teacher-forcing loss; the rollout loss is on the head mean (what is fed back).
    Returns a dict of scalar tensors including ``"loss"`` (the total to minimise).
    """
    lat, act, prop = w.latents, w.actions, w.proprio
    pk, pp = model(lat[:, :-1], None if prop is None else prop[:, :-1], act)
    out = {"tf": distance(pk, lat[:, 1:, None], kind)}  # [B,T,K,N,D] vs [B,T,1,N,D]
    total = out["tf"]
    if pp is not None:
        out["tf_proprio"] = distance(pp, prop[:, 1:], kind)
        total = total + proprio_weight * out["tf_proprio"]
    if rollout_steps > 0 and rollout_weight > 0:
        c, R = context, rollout_steps
        ro = model.rollout(lat[:, :c], None if prop is None else prop[:, :c], act[:, c - 1:c - 1 + R],
                           ctx_actions=act[:, :c - 1] if c > 1 else None)
        out["rollout"] = distance(ro.latents, lat[:, c:c + R], kind)
        total = total + rollout_weight * out["rollout"]
        if ro.proprio is not None:
            out["rollout_proprio"] = distance(ro.proprio, prop[:, c:c + R], kind)
            total = total + rollout_weight * proprio_weight * out["rollout_proprio"]
    out["loss"] = total
    return out


@torch.no_grad()
def open_loop_errors(model: ACPredictor, w: Window, batch_size: int = 256) -> dict[str, float | list[float]]:
    """Open-loop error of a rollout from ONE context frame over the rest of each window.

    Returns mean L1 per element over all ``W-1`` predicted steps for the predictor
    (``pred_l1``), the copy-the-last-latent baseline (``copy_l1``), their ratio, the
    per-step predictor/copy errors, and a collapse diagnostic: the std across windows of the
    predicted (``pred_std``) and target (``target_std``) latents, averaged over steps, tokens
    and channels (a predictor that collapses to the mean latent has ``pred_std`` << ``target_std``).
    """
    was_training = model.training
    model.eval()
    pred_err, copy_err = [], []
    sums = {"pred": [0.0, 0.0], "target": [0.0, 0.0]}  # sum, sum of squares over windows (float64)
    n = w.latents.shape[0]
    for i in range(0, n, batch_size):
        lat = w.latents[i:i + batch_size]
        prop = None if w.proprio is None else w.proprio[i:i + batch_size, :1]
        ro = model.rollout(lat[:, :1], prop, w.actions[i:i + batch_size])
        tgt = lat[:, 1:]
        pred_err.append((ro.latents.float() - tgt).abs().mean(dim=(2, 3)))  # [b, H]
        copy_err.append((lat[:, :1] - tgt).abs().mean(dim=(2, 3)))
        for k, x in (("pred", ro.latents), ("target", tgt)):
            x = x.double()
            sums[k][0] = sums[k][0] + x.sum(0)
            sums[k][1] = sums[k][1] + x.pow(2).sum(0)
    model.train(was_training)
    pe, ce = torch.cat(pred_err).mean(0), torch.cat(copy_err).mean(0)  # [H]
    p, c = float(pe.mean()), float(ce.mean())
    std = {k: float(((ss / n - (s / n) ** 2).clamp_min(0.0)).sqrt().mean()) for k, (s, ss) in sums.items()}
    return {"pred_l1": p, "copy_l1": c, "ratio": p / max(c, 1e-12),
            "pred_l1_per_step": pe.tolist(), "copy_l1_per_step": ce.tolist(),
            "pred_std": std["pred"], "target_std": std["target"]}
