r"""The networks of the grid-latent diffusion model: a periodic patch autoencoder and a denoiser.

Both are built from circular convolutions only (no pooling, no global averages), so they are
equivariant to periodic translations: shifting the density by whole patches shifts the latent
grid by whole voxels, and the denoiser's output moves with its inputs. Nothing depends on the
grid's size, so a model trained on one cell runs on any cell with the same grid spacing.

Shapes: densities (B, 1, N1, N2, N3) in the standardised log variable, latents
(B, C, N1/p, N2/p, N3/p) with p the patch edge.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.conv import CircularConv3d
from ..errors import InvalidInput
from .config import GridAutoencoderConfig, GridDenoiserConfig

__all__ = ["GridAutoencoder", "GridDenoiser", "voxel_shuffle", "latent_grid"]


def latent_grid(grid: tuple[int, int, int], patch: int) -> tuple[int, int, int]:
    """The latent grid of a density grid; raises InvalidInput if ``patch`` does not divide it."""
    if any(int(n) % patch for n in grid):
        raise InvalidInput(f"the density grid {tuple(grid)} is not divisible by the model's patch edge {patch}; "
                           f"record with --gpts N N N where each N is a multiple of {patch}")
    return tuple(int(n) // patch for n in grid)  # type: ignore[return-value]


def _conv(cin: int, cout: int, k: int = 3, dilation: int = 1) -> nn.Conv3d:
    return CircularConv3d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation)


def voxel_shuffle(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C p^3, n1, n2, n3) -> (B, C, n1 p, n2 p, n3 p): channel (a, b, c) of latent voxel i fills
    voxel (i1 p + a, i2 p + b, i3 p + c), the inverse of a stride-p patch convolution's layout."""
    B, Cp, n1, n2, n3 = x.shape
    C = Cp // p**3
    x = x.view(B, C, p, p, p, n1, n2, n3).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(B, C, n1 * p, n2 * p, n3 * p)


class ResBlock(nn.Module):
    """x + conv(silu(FiLM(conv(silu(x))))), circular, optionally modulated by an embedding."""

    def __init__(self, channels: int, dilation: int = 1, embedding_dim: int = 0) -> None:
        super().__init__()
        self.c1 = _conv(channels, channels, 3, dilation)
        self.c2 = _conv(channels, channels, 3, dilation)
        self.film = nn.Linear(embedding_dim, 2 * channels) if embedding_dim else None
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.c1(F.silu(x))
        if self.film is not None and emb is not None:
            scale, shift = self.film(emb)[:, :, None, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return x + self.c2(F.silu(h))


class GridAutoencoder(nn.Module):
    """Density (B, 1, N1, N2, N3) <-> latent grid (B, C, N1/p, N2/p, N3/p)."""

    def __init__(self, cfg: GridAutoencoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p, c = cfg.patch, cfg.channels
        self.patchify = nn.Conv3d(1, c, p, stride=p)
        self.enc = nn.ModuleList(ResBlock(c) for _ in range(cfg.blocks))
        self.to_latent = nn.Conv3d(c, cfg.latent_channels, 1)
        self.from_latent = nn.Conv3d(cfg.latent_channels, c, 1)
        self.dec = nn.ModuleList(ResBlock(c) for _ in range(cfg.blocks))
        self.unpatchify = nn.Conv3d(c, p**3, 1)
        self.refine = None
        if cfg.refine_channels:
            self.refine = nn.Sequential(_conv(1, cfg.refine_channels, 3), nn.SiLU(), _conv(cfg.refine_channels, 1, 3))
            nn.init.zeros_(self.refine[2].weight)
            nn.init.zeros_(self.refine[2].bias)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        latent_grid(tuple(x.shape[-3:]), self.cfg.patch)
        h = self.patchify(x)
        for block in self.enc:
            h = block(h)
        return self.to_latent(F.silu(h))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z)
        for block in self.dec:
            h = block(h)
        x = voxel_shuffle(self.unpatchify(F.silu(h)), self.cfg.patch)
        return x if self.refine is None else x + self.refine(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def level_embedding(k: torch.Tensor, levels: int, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of diffusion levels k (B,) in 0..levels."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=k.device, dtype=torch.float32) / half)
    arg = (k.float() / levels * 1000.0)[:, None] * freqs[None]
    return torch.cat([arg.sin(), arg.cos()], dim=1)


class GridDenoiser(nn.Module):
    r"""Estimate of the clean latent :math:`z_0` from a noised latent at level k and the condition.

    Inputs, all on the latent grid (B, ., n1, n2, n3):

    - ``z_k`` (C): the noised latent (zero at the mean level K + 1);
    - ``past`` (H C): the last H latents, newest first (zero where absent);
    - ``atoms`` ((H + 1) C): the encoded prior densities of the target's atoms and of the past
      steps' atoms (zero where absent);
    - ``flags`` (H + 1): 1 where a past latent exists, last: 1 where the atoms are known.

    The output is the network's correction of a base: with history, the newest past latent or
    (``base`` 'linear', two past latents) its linear extrapolation; else zero.
    """

    def __init__(self, cfg: GridDenoiserConfig, latent_channels: int) -> None:
        super().__init__()
        self.cfg = cfg
        C, H, c, e = latent_channels, cfg.history, cfg.channels, cfg.embedding_dim
        self.latent_channels = C
        self.inp = _conv(C * (2 * H + 2) + H + 1, c, 3)
        self.embed = nn.Sequential(nn.Linear(e, 4 * e), nn.SiLU(), nn.Linear(4 * e, 4 * e))
        self.blocks = nn.ModuleList(ResBlock(c, d, 4 * e) for d in cfg.dilations)
        self.out = _conv(c, C, 3)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def levels(self) -> int:
        """The mean level K + 1."""
        return self.cfg.steps + 1

    def forward(self, z_k: torch.Tensor, k: torch.Tensor, past: torch.Tensor, atoms: torch.Tensor,
                flags: torch.Tensor) -> torch.Tensor:
        n = z_k.shape[-3:]
        if any(int(s) < max(self.cfg.dilations) for s in n):
            raise InvalidInput(f"the latent grid {tuple(n)} is smaller than the denoiser's largest dilation "
                               f"{max(self.cfg.dilations)}; use a larger cell")
        f = flags[:, :, None, None, None].expand(-1, -1, *n)
        h = self.inp(torch.cat([z_k, past, atoms, f], dim=1))
        emb = self.embed(level_embedding(k, self.levels, self.cfg.embedding_dim))
        for block in self.blocks:
            h = block(h, emb)
        C = self.latent_channels
        base = past[:, :C] * flags[:, :1, None, None, None]
        if self.cfg.base == "linear" and self.cfg.history >= 2:
            base = base + (past[:, :C] - past[:, C:2 * C]) * (flags[:, :1] * flags[:, 1:2])[:, :, None, None, None]
        return base + self.out(F.silu(h))
