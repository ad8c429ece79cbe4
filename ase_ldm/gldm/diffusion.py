r"""Cosine-schedule diffusion on the latent grid, parameterised by the clean latent.

Levels :math:`k = 1..K` noise a standardised latent as
:math:`z_k = \sqrt{\bar\alpha_k} z_0 + \sqrt{1 - \bar\alpha_k}\,\epsilon` (Nichol and Dhariwal's
cosine schedule). The denoiser returns :math:`\hat z_0`. Level :math:`K + 1` is the mean level:
the input is zero, so the squared-error optimum is the conditional mean
:math:`E[z_0 \mid \text{condition}]`, one network pass (the deterministic mode for calculators and SCF
guesses). Samplers: ancestral DDPM over all K levels, and DDIM over a few levels (``eta`` = 0:
deterministic given the starting noise; 1: as noisy as DDPM).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import InvalidInput

__all__ = ["CosineSchedule", "Denoise", "ddpm_sample", "ddim_sample", "mean_estimate"]

#: ``denoise(z_k, k)`` -> estimate of z_0, the condition already bound.
Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class CosineSchedule(nn.Module):
    """:math:`\\bar\\alpha_k`, k = 0..K (index 0: clean), as a buffer."""

    def __init__(self, steps: int, s: float = 0.008) -> None:
        super().__init__()
        if steps < 2:
            raise InvalidInput(f"diffusion needs at least 2 steps, got {steps}")
        t = torch.arange(steps + 1, dtype=torch.float64) / steps
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        ab = (f / f[0]).clamp(min=1e-8)
        beta = (1 - ab[1:] / ab[:-1]).clamp(max=0.999)
        ab = torch.cat([ab[:1], torch.cumprod(1 - beta, 0)])
        self.steps = steps
        self.register_buffer("alpha_bar", ab.float(), persistent=False)

    def q_sample(self, z0: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Noise clean latents (B, ...) to levels k (B,) in 1..K."""
        ab = self.alpha_bar[k].view(-1, *([1] * (z0.ndim - 1)))
        return ab.sqrt() * z0 + (1 - ab).sqrt() * eps


def _levels(batch: int, k: int, device: torch.device) -> torch.Tensor:
    return torch.full((batch,), k, dtype=torch.long, device=device)


def mean_estimate(denoise: Denoise, shape: tuple[int, ...], levels: int, device: torch.device) -> torch.Tensor:
    """The conditional mean: one pass at the mean level ``levels`` = K + 1 with a zero input."""
    return denoise(torch.zeros(shape, device=device), _levels(shape[0], levels, device))


def ddpm_sample(denoise: Denoise, schedule: CosineSchedule, shape: tuple[int, ...], *,
                generator: torch.Generator | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Ancestral sampling over all K levels (the posterior q(z_{k-1} | z_k, z_0 estimate))."""
    device = device or schedule.alpha_bar.device
    ab = schedule.alpha_bar
    z = torch.randn(shape, generator=generator, device=device)
    for k in range(schedule.steps, 0, -1):
        z0 = denoise(z, _levels(shape[0], k, device))
        a_k, a_prev = ab[k], ab[k - 1]
        beta = 1 - a_k / a_prev
        mean = (a_prev.sqrt() * beta / (1 - a_k)) * z0 + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a_k)) * z
        if k > 1:
            var = beta * (1 - a_prev) / (1 - a_k)
            z = mean + var.sqrt() * torch.randn(shape, generator=generator, device=device)
        else:
            z = mean
    return z


def ddim_sample(denoise: Denoise, schedule: CosineSchedule, shape: tuple[int, ...], n_steps: int = 10, *,
                eta: float = 1.0, generator: torch.Generator | None = None,
                device: torch.device | None = None) -> torch.Tensor:
    """DDIM over ``n_steps`` evenly spaced levels; ``eta`` scales the fresh noise (0: none)."""
    if not 1 <= n_steps <= schedule.steps:
        raise InvalidInput(f"the few-step sampler takes 1 to {schedule.steps} steps, got {n_steps}")
    device = device or schedule.alpha_bar.device
    ab = schedule.alpha_bar
    ks = torch.linspace(schedule.steps, 0, n_steps + 1).round().long().tolist()
    z = torch.randn(shape, generator=generator, device=device)
    z0 = z
    for k, k_next in zip(ks[:-1], ks[1:]):
        z0 = denoise(z, _levels(shape[0], k, device))
        if k_next == 0:
            return z0
        a_k, a_n = ab[k], ab[k_next]
        eps = (z - a_k.sqrt() * z0) / (1 - a_k).sqrt()
        sigma = eta * ((1 - a_n) / (1 - a_k) * (1 - a_k / a_n)).clamp(min=0).sqrt()
        z = a_n.sqrt() * z0 + (1 - a_n - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0:
            z = z + sigma * torch.randn(shape, generator=generator, device=device)
    return z0
