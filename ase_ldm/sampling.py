r"""Samplers of the next latent: pure functions of (denoiser, schedule, condition, noise).

* :func:`ddpm_sample` -- ancestral sampling through all K steps (Ho et al. 2020, Alg. 2) with
  :math:`\sigma_k^2 = \beta_k`.
* :func:`ddim_sample` -- deterministic DDIM (Song et al. 2021, eta = 0) on a subsequence of
  ``n_steps`` steps: one network call per step, e.g. 20 instead of 1000.

Both take a ``torch.Generator`` so that rollouts are reproducible from a seed.
"""

from __future__ import annotations

import torch
from torch import nn

from .models.diffusion import LinearSchedule

__all__ = ["ddpm_sample", "ddim_sample", "SAMPLERS"]


@torch.no_grad()
def ddpm_sample(denoiser: nn.Module, schedule: LinearSchedule, cond: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Ancestral DDPM sample of z (B, d) given the condition ``cond`` (B, d)."""
    z = torch.randn(cond.shape, device=cond.device, generator=generator)
    for k in range(schedule.steps - 1, -1, -1):
        kk = torch.full((cond.shape[0],), k, device=cond.device, dtype=torch.long)
        eps = denoiser(z, kk, cond)
        beta, ab = schedule.beta[k], schedule.alpha_bar[k]
        mean = (z - beta / (1 - ab).sqrt() * eps) / (1 - beta).sqrt()
        if k > 0:
            z = mean + beta.sqrt() * torch.randn(z.shape, device=z.device, generator=generator)
        else:
            z = mean
    return z


@torch.no_grad()
def ddim_sample(denoiser: nn.Module, schedule: LinearSchedule, cond: torch.Tensor,
                generator: torch.Generator | None = None, n_steps: int = 20) -> torch.Tensor:
    r"""Deterministic DDIM sample (eta = 0) on ``n_steps`` evenly spaced steps.

    .. math::
        \hat z_0 = \frac{z_k - \sqrt{1-\bar\alpha_k}\,\epsilon_\theta}{\sqrt{\bar\alpha_k}},\qquad
        z_{k'} = \sqrt{\bar\alpha_{k'}}\,\hat z_0 + \sqrt{1-\bar\alpha_{k'}}\,\epsilon_\theta

    The only randomness is the starting noise, drawn from ``generator``.
    """
    if not 1 <= n_steps <= schedule.steps:
        raise ValueError(f"n_steps must be in 1..{schedule.steps}, got {n_steps}")
    ks = torch.linspace(schedule.steps - 1, 0, n_steps).round().long().tolist()
    z = torch.randn(cond.shape, device=cond.device, generator=generator)
    for i, k in enumerate(ks):
        kk = torch.full((cond.shape[0],), k, device=cond.device, dtype=torch.long)
        eps = denoiser(z, kk, cond)
        ab = schedule.alpha_bar[k]
        z0 = (z - (1 - ab).sqrt() * eps) / ab.sqrt()
        if i + 1 < len(ks):
            ab_next = schedule.alpha_bar[ks[i + 1]]
            z = ab_next.sqrt() * z0 + (1 - ab_next).sqrt() * eps
        else:
            z = z0
    return z


SAMPLERS = {"ddpm": ddpm_sample, "ddim": ddim_sample}
