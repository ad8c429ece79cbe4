r"""DDPM with a linear variance schedule (Ho et al. 2020), as used by the paper.

.. math::
    q(z_k | z_0) = \mathcal N\!\left(\sqrt{\bar\alpha_k}\, z_0,\ (1 - \bar\alpha_k) I\right),\quad
    \beta_k = \beta_1 + \tfrac{k-1}{K-1}(\beta_K - \beta_1),\quad \bar\alpha_k = \prod_{j \le k} (1 - \beta_j)

Training minimises :math:`\mathbb E_{k, \epsilon} \| \epsilon - \epsilon_\theta(z_k, k, c) \|^2`
with :math:`k` uniform in 1..K (here indexed 0..K-1).

Samplers of the next latent are pure functions of (denoiser, schedule, condition, noise):

* :func:`ddpm_sample` -- ancestral sampling through all K steps (Ho et al. 2020, Alg. 2) with
  :math:`\sigma_k^2 = \beta_k`.
* :func:`ddim_sample` -- deterministic DDIM (Song et al. 2021, eta = 0) on a subsequence of
  ``n_steps`` steps: one network call per step, e.g. 20 instead of 1000.

Both take a ``torch.Generator`` so that rollouts are reproducible from a seed, and both clip
the estimate of the clean latent :math:`\hat z_0` to a norm of ``clip * sqrt(d)`` (latents are
standardised so that :math:`E\|z\|^2 = d`), as DDPM clips images to [-1, 1]: without it, an
imperfect denoiser can let a long autoregressive rollout run away. ``clip=None`` disables it.
``temperature`` scales the sampled noise (the start and, for DDPM, every step): 1 is the learned
distribution, smaller values concentrate samples around its mode.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidInput

__all__ = ["LinearSchedule", "ddpm_sample", "ddim_sample", "clip_norm", "SAMPLERS"]


class LinearSchedule(nn.Module):
    """The noise schedule: ``beta``, ``alpha_bar`` (buffers of length K)."""

    def __init__(self, steps: int, beta_start: float, beta_end: float) -> None:
        super().__init__()
        beta = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
        alpha_bar = torch.cumprod(1 - beta, dim=0)
        self.register_buffer("beta", beta.float(), persistent=False)
        self.register_buffer("alpha_bar", alpha_bar.float(), persistent=False)
        self.steps = steps

    def q_sample(self, z0: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Corrupt clean latents ``z0`` (B, d) to step ``k`` (B,) with noise ``eps`` (B, d)."""
        ab = self.alpha_bar[k].unsqueeze(-1)
        return ab.sqrt() * z0 + (1 - ab).sqrt() * eps

    def loss(self, denoiser: nn.Module, z0: torch.Tensor, cond: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """The epsilon-prediction loss for a batch, with random steps and noise."""
        k = torch.randint(0, self.steps, (z0.shape[0],), device=z0.device, generator=generator)
        eps = torch.randn(z0.shape, device=z0.device, generator=generator)
        return torch.mean((denoiser(self.q_sample(z0, k, eps), k, cond) - eps) ** 2)




def clip_norm(z: torch.Tensor, clip: float | None) -> torch.Tensor:
    """Scale rows of z (B, d) whose norm exceeds ``clip * sqrt(d)`` back onto that sphere."""
    if clip is None:
        return z
    limit = clip * z.shape[-1] ** 0.5
    norm = z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return z * torch.clamp(limit / norm, max=1.0)


@torch.no_grad()
def ddpm_sample(denoiser: nn.Module, schedule: LinearSchedule, cond: torch.Tensor,
                generator: torch.Generator | None = None, clip: float | None = 2.0,
                temperature: float = 1.0) -> torch.Tensor:
    r"""Ancestral DDPM sample of z (B, d) given the condition ``cond`` (B, d).

    The posterior mean is formed from the (clipped) clean estimate, Ho et al. eq. 7:
    :math:`\tilde\mu = \frac{\sqrt{\bar\alpha_{k-1}}\beta_k}{1-\bar\alpha_k} \hat z_0
    + \frac{\sqrt{\alpha_k}(1-\bar\alpha_{k-1})}{1-\bar\alpha_k} z_k`.
    """
    z = temperature * torch.randn(cond.shape, device=cond.device, generator=generator)
    for k in range(schedule.steps - 1, -1, -1):
        kk = torch.full((cond.shape[0],), k, device=cond.device, dtype=torch.long)
        eps = denoiser(z, kk, cond)
        beta, ab = schedule.beta[k], schedule.alpha_bar[k]
        ab_prev = schedule.alpha_bar[k - 1] if k > 0 else torch.ones_like(ab)
        z0 = clip_norm((z - (1 - ab).sqrt() * eps) / ab.sqrt(), clip)
        mean = (ab_prev.sqrt() * beta * z0 + (1 - beta).sqrt() * (1 - ab_prev) * z) / (1 - ab)
        if k > 0:
            z = mean + temperature * beta.sqrt() * torch.randn(z.shape, device=z.device, generator=generator)
        else:
            z = mean
    return z


@torch.no_grad()
def ddim_sample(denoiser: nn.Module, schedule: LinearSchedule, cond: torch.Tensor,
                generator: torch.Generator | None = None, n_steps: int = 20, clip: float | None = 2.0,
                temperature: float = 1.0) -> torch.Tensor:
    r"""Deterministic DDIM sample (eta = 0) on ``n_steps`` evenly spaced steps.

    .. math::
        \hat z_0 = \frac{z_k - \sqrt{1-\bar\alpha_k}\,\epsilon_\theta}{\sqrt{\bar\alpha_k}},\qquad
        z_{k'} = \sqrt{\bar\alpha_{k'}}\,\hat z_0 + \sqrt{1-\bar\alpha_{k'}}\,\epsilon_\theta

    The only randomness is the starting noise, drawn from ``generator``.
    """
    if not 1 <= n_steps <= schedule.steps:
        raise InvalidInput(f"n_steps must be in 1..{schedule.steps}, got {n_steps}")
    ks = torch.linspace(schedule.steps - 1, 0, n_steps).round().long().tolist()
    z = temperature * torch.randn(cond.shape, device=cond.device, generator=generator)
    for i, k in enumerate(ks):
        kk = torch.full((cond.shape[0],), k, device=cond.device, dtype=torch.long)
        eps = denoiser(z, kk, cond)
        ab = schedule.alpha_bar[k]
        z0 = clip_norm((z - (1 - ab).sqrt() * eps) / ab.sqrt(), clip)
        eps = (z - ab.sqrt() * z0) / (1 - ab).sqrt()  # consistent with the clipped estimate
        if i + 1 < len(ks):
            ab_next = schedule.alpha_bar[ks[i + 1]]
            z = ab_next.sqrt() * z0 + (1 - ab_next).sqrt() * eps
        else:
            z = z0
    return z


SAMPLERS = {"ddpm": ddpm_sample, "ddim": ddim_sample}
