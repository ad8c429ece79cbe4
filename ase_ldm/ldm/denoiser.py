r"""MLP noise predictor :math:`\epsilon_\theta(z_k, k, z_t)` for the latent diffusion.

The corrupted next latent :math:`z_k` is concatenated with the condition (the current
latent :math:`z_t`) and a sinusoidal embedding of the diffusion step :math:`k`, as in the
paper's conditional generation (Sec. 2.2).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import DiffusionConfig

__all__ = ["sinusoidal_embedding", "LatentDenoiser"]


def sinusoidal_embedding(k: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    r"""Transformer-style embedding of integer steps ``k`` (B,) -> (B, dim).

    .. math:: e_{2i} = \sin(k\, \omega_i), \quad e_{2i+1} = \cos(k\, \omega_i), \quad
              \omega_i = T^{-2i/d}
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=k.device, dtype=torch.float32) / half)
    args = k.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    return torch.nn.functional.pad(emb, (0, dim % 2))


class LatentDenoiser(nn.Module):
    """(z_k (B, d), k (B,), condition (B, d)) -> predicted noise (B, d)."""

    def __init__(self, latent_dim: int, cfg: DiffusionConfig) -> None:
        super().__init__()
        self.embedding_dim = cfg.embedding_dim
        self.step_mlp = nn.Sequential(nn.Linear(cfg.embedding_dim, cfg.hidden), nn.SiLU(),
                                      nn.Linear(cfg.hidden, cfg.hidden))
        layers: list[nn.Module] = [nn.Linear(2 * latent_dim + cfg.hidden, cfg.hidden), nn.SiLU()]
        for _ in range(cfg.layers - 1):
            layers += [nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU()]
        layers.append(nn.Linear(cfg.hidden, latent_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z_k: torch.Tensor, k: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        e = self.step_mlp(sinusoidal_embedding(k, self.embedding_dim))
        return self.net(torch.cat([z_k, cond, e], dim=-1))
