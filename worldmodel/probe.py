"""Linear (ridge) probes of frozen-encoder latents, e.g. latents -> agent (x, y).

The probe answers "does the representation linearly encode the state?"; a frozen random
encoder of the same architecture is the baseline it has to beat.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .latents import encode_latents


def encode_features(
    encoder: nn.Module, frames: np.ndarray | Tensor, features: str = "pooled", pool_k: int | None = 2,
    batch_size: int = 128,
) -> Tensor:
    """Per-frame probe features: the planning latents of
    :func:`~wmplan.worldmodel.latents.encode_latents` (without standardisation, which the
    ridge probe does itself), flattened.

    Args:
        encoder: a frozen registered encoder.
        frames: uint8 ``[M, H, W, 3]``.
        features: ``"tokens"`` (all patch tokens, layer-normed) or ``"pooled"`` (avg-pool to
            ``pool_k x pool_k`` then layer-norm, as the world model sees them).
    Returns:
        float32 CPU ``[M, F]`` with F = tokens * D.
    """
    if features not in ("tokens", "pooled"):
        raise ValueError(f"features must be 'tokens' or 'pooled', got {features!r}")
    k = pool_k if features == "pooled" else None
    z = encode_latents(encoder, torch.as_tensor(frames)[:, None], k, chunk_size=batch_size, device="cpu")
    return z[:, 0].flatten(1)


@dataclass
class RidgeProbe:
    """Standardise-then-linear map fitted by :func:`fit_ridge`."""

    mean: Tensor  # [F]
    std: Tensor  # [F]
    weight: Tensor  # [F, O]
    bias: Tensor  # [O]
    lam: float

    def predict(self, x: Tensor) -> Tensor:
        """x ``[M, F]`` -> ``[M, O]``."""
        return ((x.double() - self.mean) / self.std) @ self.weight + self.bias


def _ridge_solutions(x: Tensor, y: Tensor, lams: list[float]) -> list[Tensor]:
    """Weights ``[F, O]`` for each lambda, for standardised x ``[n, F]`` and centred y ``[n, O]``.

    The penalty is ``lam * n`` so lambda is comparable across sample sizes. One
    eigendecomposition of the smaller Gram matrix (primal F x F or dual n x n) serves all lambdas.
    """
    n, f = x.shape
    if f <= n:
        evals, evecs = torch.linalg.eigh(x.T @ x)  # [F], [F, F]
        proj = evecs.T @ (x.T @ y)  # [F, O]
        return [evecs @ (proj / (evals + lam * n).unsqueeze(1)) for lam in lams]
    evals, evecs = torch.linalg.eigh(x @ x.T)  # dual: w = X^T (X X^T + lam n I)^-1 y
    proj = evecs.T @ y  # [n, O]
    return [x.T @ (evecs @ (proj / (evals + lam * n).unsqueeze(1))) for lam in lams]


def r2_score(pred: Tensor, y: Tensor) -> float:
    """Coefficient of determination, averaged over output columns. pred, y: ``[M, O]``."""
    y = y.double()
    ss_res = ((y - pred.double()) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0).clamp_min(1e-12)
    return (1.0 - ss_res / ss_tot).mean().item()


def fit_ridge(x: Tensor, y: Tensor, lams: float | list[float] = 1e-3, val_fraction: float = 0.2) -> RidgeProbe:
    """Closed-form ridge regression on standardised features (float64).

    With several ``lams`` the best one is picked on the last ``val_fraction`` of the rows
    (pass rows grouped by episode so this is a held-out-episode choice), then refitted on all.

    Args:
        x: ``[n, F]`` features; y: ``[n, O]`` targets.
    """
    lams = [float(lams)] if isinstance(lams, (int, float)) else [float(v) for v in lams]
    x, y = x.double(), y.double()
    best = lams[0]
    if len(lams) > 1:
        cut = int(round(x.shape[0] * (1 - val_fraction)))
        if not 0 < cut < x.shape[0]:
            raise ValueError(f"fit_ridge: {x.shape[0]} rows are too few to select lambda")
        scores = [r2_score(p.predict(x[cut:]), y[cut:]) for p in _fit_many(x[:cut], y[:cut], lams)]
        best = lams[int(np.argmax(scores))]
    return _fit_many(x, y, [best])[0]


def _fit_many(x: Tensor, y: Tensor, lams: list[float]) -> list[RidgeProbe]:
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)  # constant features stay 0 after scaling
    xs = (x - mean) / std
    ym = y.mean(0)
    ws = _ridge_solutions(xs, y - ym, lams)
    return [RidgeProbe(mean, std, w, ym, lam) for w, lam in zip(ws, lams)]
