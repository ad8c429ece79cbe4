r"""DDPM with a linear variance schedule (Ho et al. 2020), as used by the paper.

.. math::
    q(z_k | z_0) = \mathcal N\!\left(\sqrt{\bar\alpha_k}\, z_0,\ (1 - \bar\alpha_k) I\right),\quad
    \beta_k = \beta_1 + \tfrac{k-1}{K-1}(\beta_K - \beta_1),\quad \bar\alpha_k = \prod_{j \le k} (1 - \beta_j)

Training minimises :math:`\mathbb E_{k, \epsilon} \| \epsilon - \epsilon_\theta(z_k, k, c) \|^2`
with :math:`k` uniform in 1..K (here indexed 0..K-1).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LinearSchedule"]


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
