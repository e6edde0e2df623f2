"""Object subspace of a world model's latents, learned without object labels.

A goal image shows the agent and the object. A latent distance to it is dominated by the
agent: on PushT (lamp, 2x2 pooled tokens) squared L2 between frames 25 steps apart correlates
0.85 with the pusher's displacement and 0.27 with the block's, so a planner moves the pusher to
where the goal image has it and leaves the block. The object is what the agent's own state does
not explain. This module finds the latent directions with the most variance left after a
nonlinear regression on proprio (the agent's state, an observation, not an object label) relative
to the variance that regression explains: a generalized eigenproblem

    Sigma_res v = lambda Sigma_agent v,   Sigma_agent = Cov(f(p)),  Sigma_res = Cov(z - f(p)),

with f a ridge regression on random Fourier features of the standardised proprio. The top ``k``
eigenvectors, scaled to unit residual variance, are the projection ``[N*D, k]`` that
``planners/energies/object.py`` measures the goal distance in. The file format is
``wmplan/object_projection.py``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..checks import ConfigError, check_finite
from ..object_projection import FORMAT_VERSION, KIND
from .fingerprint import file_sha256
from .utils import atomic_save


def proprio_features(proprio: Tensor, num_features: int, bandwidth: float, seed: int) -> Tensor:
    """Random Fourier features of standardised proprio ``[F, P]`` -> ``[F, num_features + P + 1]``
    (cosines, the proprio itself and a constant), so a linear fit on them is a smooth nonlinear map."""
    gen = torch.Generator().manual_seed(seed)
    omega = torch.randn(proprio.shape[1], num_features, generator=gen, dtype=torch.float64) / bandwidth
    phase = torch.rand(num_features, generator=gen, dtype=torch.float64) * 2 * math.pi
    p = proprio.double()
    rff = torch.cos(p @ omega + phase) * math.sqrt(2.0 / num_features)
    return torch.cat([rff, p, torch.ones(len(p), 1, dtype=torch.float64)], 1)


def fit_object_projection(latents: Tensor, proprio: Tensor, k: int = 32, num_features: int = 256,
                          bandwidth: float = 1.0, ridge: float = 1e-3, seed: int = 0) -> dict[str, Any]:
    """Fit the object projection.

    Args:
        latents: ``[F, N, D]`` planning latents (``WorldModel.encode``: pooled, normalised).
        proprio: ``[F, P]`` the agent's proprio at the same frames (P >= 1).
        k: directions kept. num_features / bandwidth: random Fourier features of the
            standardised proprio. ridge: relative regulariser of both covariances.
    Returns:
        ``{"projection": [N*D, k] float32, "eigenvalues": [k], "explained_by_proprio": float}``.
    """
    if latents.ndim != 3 or proprio.ndim != 2 or len(latents) != len(proprio):
        raise ValueError(f"fit_object_projection: latents [F,N,D] and proprio [F,P] with the same F, got "
                         f"{list(latents.shape)} and {list(proprio.shape)}")
    if proprio.shape[1] == 0:
        raise ConfigError("fit_object_projection: the data has no proprio (P=0): nothing tells the agent from the object")
    f, n, d = latents.shape
    if not 1 <= k <= n * d:
        raise ConfigError(f"fit_object_projection: k must be in [1, {n * d}] (N*D), got {k}")
    check_finite(latents, "latents", "fit_object_projection")
    check_finite(proprio, "proprio", "fit_object_projection")
    z = latents.reshape(f, n * d).double()
    z = z - z.mean(0)
    p = (proprio.double() - proprio.double().mean(0)) / proprio.double().std(0).clamp_min(1e-6)
    x = proprio_features(p, num_features, bandwidth, seed)
    gram = x.T @ x
    w = torch.linalg.solve(gram + ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype), x.T @ z)
    agent = x @ w
    res = z - agent
    eye = torch.eye(n * d, dtype=torch.float64)
    s_agent, s_res = agent.T @ agent / (f - 1), res.T @ res / (f - 1)
    s_agent = s_agent + ridge * s_agent.diagonal().mean() * eye
    s_res = s_res + ridge * s_res.diagonal().mean() * eye
    chol = torch.linalg.cholesky(s_agent)  # reduce to a symmetric eigenproblem: L^-1 S_res L^-T
    inv_l = torch.linalg.solve_triangular(chol, eye, upper=False)
    evals, evecs = torch.linalg.eigh(inv_l @ s_res @ inv_l.T)
    v = inv_l.T @ evecs[:, -k:].flip(1)  # largest first
    v = v / (v * (s_res @ v)).sum(0).sqrt()  # unit residual variance per direction
    explained = 1.0 - float(res.pow(2).sum() / z.pow(2).sum())
    return {"projection": v.float(), "eigenvalues": evals[-k:].flip(0).float(), "explained_by_proprio": explained}


def save_object_projection(fit: dict[str, Any], path: str | Path, tokens: int, dim: int,
                           world_model_path: str | Path | None, settings: dict[str, Any]) -> None:
    """Write the projection file atomically (see the module docstring)."""
    obj = {"kind": KIND, "version": FORMAT_VERSION, "projection": fit["projection"], "tokens": int(tokens),
           "dim": int(dim), "eigenvalues": fit["eigenvalues"], "explained_by_proprio": float(fit["explained_by_proprio"]),
           "world_model_sha256": file_sha256(world_model_path) if world_model_path else None, "fit": settings}
    atomic_save(obj, path)
