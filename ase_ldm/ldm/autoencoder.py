r"""Periodic 3D convolutional autoencoder of the density state (Chiang et al., Sec. 2.2).

Encoder: a circular-padded stem convolution, then per level residual blocks (ELU) and a
strided convolution that halves the grid, and finally global average pooling and a linear
map to a 1D latent :math:`z`. The pooling makes :math:`z` invariant to translations of the
density by whole grid steps (with circular padding every layer commutes with such shifts, up
to the stride phase; the tests check it). Decoder: a learned projection of :math:`z` to a
low-resolution 3D map, then per level upsampling (to the encoder's grid sizes, so any grid
works), residual blocks and a final convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AutoencoderConfig

__all__ = ["ResBlock3d", "Encoder", "Decoder", "Autoencoder", "level_shapes"]


def conv3d(c_in: int, c_out: int, stride: int = 1) -> nn.Conv3d:
    """3x3x3 convolution with circular padding (the cell is periodic)."""
    return nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, padding_mode="circular")


class ResBlock3d(nn.Module):
    """x + conv(ELU(conv(ELU(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3d(channels, channels)
        self.conv2 = conv3d(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.elu(self.conv1(F.elu(x))))


def level_shapes(grid: tuple[int, int, int], levels: int) -> list[tuple[int, int, int]]:
    """Grid sizes at each level of the encoder (stride 2, padding 1, kernel 3: ceil(n/2))."""
    shapes = [tuple(grid)]
    for _ in range(levels):
        shapes.append(tuple((n + 1) // 2 for n in shapes[-1]))
    return shapes  # type: ignore[return-value]


class Encoder(nn.Module):
    """State (B, C, N1, N2, N3) -> latent (B, latent_dim)."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        ch = cfg.channels
        self.stem = conv3d(cfg.in_channels, ch[0])
        self.levels = nn.ModuleList()
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            self.levels.append(nn.Sequential(*[ResBlock3d(c_in) for _ in range(cfg.blocks_per_level)],
                                             nn.ELU(), conv3d(c_in, c_out, stride=2)))
        self.head = nn.Sequential(*[ResBlock3d(ch[-1]) for _ in range(cfg.blocks_per_level)], nn.ELU())
        self.to_latent = nn.Linear(ch[-1], cfg.latent_dim)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        h = self.stem(s)
        for level in self.levels:
            h = level(h)
        h = self.head(h).mean(dim=(2, 3, 4))  # global average pooling
        return self.to_latent(h)


class Decoder(nn.Module):
    """Latent (B, latent_dim) -> state (B, C, N1, N2, N3) on a given grid."""

    def __init__(self, cfg: AutoencoderConfig, grid: tuple[int, int, int]) -> None:
        super().__init__()
        ch = cfg.channels
        self.shapes = level_shapes(grid, len(ch) - 1)
        low = self.shapes[-1]
        self.low_channels = ch[-1]
        self.project = nn.Linear(cfg.latent_dim, ch[-1] * low[0] * low[1] * low[2])
        self.bottom = nn.Sequential(*[ResBlock3d(ch[-1]) for _ in range(cfg.blocks_per_level)])
        self.ups = nn.ModuleList()
        for c_in, c_out in zip(ch[:0:-1], ch[-2::-1]):
            self.ups.append(nn.ModuleDict({
                "conv": conv3d(c_in, c_out),
                "blocks": nn.Sequential(*[ResBlock3d(c_out) for _ in range(cfg.blocks_per_level)]),
            }))
        self.out = nn.Sequential(nn.ELU(), conv3d(ch[0], cfg.in_channels))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(z.shape[0], self.low_channels, *self.shapes[-1])
        h = self.bottom(h)
        for up, shape in zip(self.ups, self.shapes[-2::-1]):
            h = F.interpolate(h, size=shape, mode="trilinear", align_corners=False)
            h = up["blocks"](up["conv"](F.elu(h)))
        return self.out(h)


class Autoencoder(nn.Module):
    """Encoder + decoder for one grid."""

    def __init__(self, cfg: AutoencoderConfig, grid: tuple[int, int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.grid = tuple(grid)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg, self.grid)

    def encode(self, s: torch.Tensor) -> torch.Tensor:
        return self.encoder(s)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(s))
