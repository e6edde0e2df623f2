"""Temporally coloured (power-law) noise for sampling planners (iCEM-style)."""
from __future__ import annotations

import torch
from torch import Tensor


def colour_noise(white: Tensor, beta: float, dim: int = -2) -> Tensor:
    """Turn white N(0,1) noise into power-law noise with PSD ∝ 1/f^beta along ``dim``.

    white: [..., H, ...] -> same shape, still zero-mean with unit marginal variance.
    beta = 0 returns the input; beta = 1 is pink, 2 is red/brown (smoother action sequences).
    Deterministic given ``white``, so seeding stays with the caller's generator. The filter
    is the amplitude spectrum f^(-beta/2) (f = 0 uses the lowest non-zero frequency), and the
    output is divided by its exact standard deviation (Parseval) rather than an estimate.
    """
    h = white.shape[dim]
    if beta == 0 or h < 2:
        return white
    f = torch.fft.rfftfreq(h, device=white.device, dtype=torch.float64)
    f[0] = f[1]
    amp = f.pow(-beta / 2.0)
    # Var(y_t) = (1/h) * sum over the full spectrum of amp^2; rfft bins except DC/Nyquist count twice.
    mult = torch.full_like(amp, 2.0)
    mult[0] = 1.0
    if h % 2 == 0:
        mult[-1] = 1.0
    sigma = torch.sqrt((mult * amp.pow(2)).sum() / h)
    amp = (amp / sigma).to(white.dtype)
    shape = [1] * white.dim()
    shape[dim] = amp.shape[0]
    spec = torch.fft.rfft(white, dim=dim) * amp.reshape(shape)
    return torch.fft.irfft(spec, n=h, dim=dim)
