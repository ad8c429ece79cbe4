r"""The atom-synchronised density model: a periodic full-resolution CNN on a learned prior.

At MD step :math:`t` it predicts the converged pseudo-density :math:`\tilde n_t` and the PAW
matrices :math:`D^a_t` from the positions :math:`R_t` and, when available, the last ``H``
converged steps:

.. math::
   \tilde n_t = p_t + \hat r_t + s_h\, \mathrm{CNN}(\dots), \qquad
   \hat r_t = \sum_{k=1}^{h} c^{(h)}_k\, r_{t-k}, \qquad r = \tilde n - p,

where :math:`p_t` is the learned superposition of atomic densities at :math:`R_t`
(:mod:`ase_ldm.sync.prior`), :math:`\hat r_t` the polynomial extrapolation of the residual over the
:math:`h \le H` available steps (:math:`h = 0`: cold start, :math:`\hat r = 0`), and the CNN
learns what both miss (Delta-learning). Its inputs are the prior, the extrapolated residual, the
residual's recent changes and the prior's recent changes (how the atoms moved), all scaled to
unit variance on the training data, and flags saying which history entries exist.

The CNN keeps one grid (no pooling, no strides): circular dilated convolutions make it
equivariant to periodic translations by grid steps and let it run on cells of any size with
the training grid spacing. That grid is the density's, or (``coarsen`` > 1) a coarser one onto
which the inputs are Fourier-truncated and from which the correction is interpolated back:
the error left after extrapolation sits at interatomic wavelengths, which a grid of half the
resolution still resolves, at an eighth of the cost. A per-atom head samples its features at
each atom (trilinear, periodic) and corrects the extrapolated PAW matrices (upper triangle of the
spin-paired ``D``, zero-padded to the largest projector count of the species,
:mod:`ase_ldm.sync.layout`), so a guess is PAW-complete.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.conv import circular_conv3d
from ..core.extrapolation import weight_table
from ..core.fourier import coarse_grid, fourier_resample
from ..errors import InvalidInput
from .config import SyncConfig
from .layout import PAWLayout, pack_D, unpack_D

__all__ = ["SyncNet", "extrapolation_weights", "sample_at_atoms", "pack_D", "unpack_D"]


def extrapolation_weights(history: int) -> torch.Tensor:
    """Weights c^(h)_k, shape (history + 1, history): row h extrapolates from h past steps
    (:func:`ase_ldm.core.extrapolation.weight_table`)."""
    return torch.as_tensor(weight_table(history), dtype=torch.float64)


def sample_at_atoms(feat: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
    """Trilinear periodic interpolation of grid features at atoms.

    Parameters
    ----------
    feat : (B, C, N1, N2, N3) features; grid point (i, j, k) sits at fractional (i/N1, j/N2, k/N3).
    frac : (B, Na, 3) fractional coordinates of the atoms.

    Returns
    -------
    (B, Na, C)
    """
    B, C, *N = feat.shape
    n = torch.tensor(N, device=feat.device, dtype=frac.dtype)
    u = torch.remainder(frac, 1.0) * n
    i0 = torch.floor(u)
    w1 = u - i0
    i0 = i0.long()
    flat = feat.reshape(B, C, -1)
    out = feat.new_zeros(B, frac.shape[1], C)
    for corner in range(8):
        bits = [(corner >> d) & 1 for d in range(3)]
        idx = [(i0[..., d] + bits[d]) % N[d] for d in range(3)]
        w = torch.ones_like(w1[..., 0])
        for d in range(3):
            w = w * (w1[..., d] if bits[d] else 1 - w1[..., d])
        lin = (idx[0] * N[1] + idx[1]) * N[2] + idx[2]  # (B, Na)
        vals = torch.gather(flat, 2, lin[:, None, :].expand(B, C, -1))  # (B, C, Na)
        out = out + w[..., None].to(feat.dtype) * vals.transpose(1, 2)
    return out


class _Block(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, 3, padding=dilation, dilation=dilation, padding_mode="circular")
        self.mix = nn.Conv3d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(F.gelu(circular_conv3d(self.conv, F.gelu(x))))


class SyncNet(nn.Module):
    """The synchronised model; see the module docstring.

    Parameters
    ----------
    config : SyncConfig
    layout : PAWLayout
        The species (in the prior's order; one-hot input of the per-atom head) and their
        projector counts.

    The normalisation scales are buffers (saved with the weights), set once from the training
    data by :meth:`set_scales`.
    """

    def __init__(self, config: SyncConfig, layout: PAWLayout) -> None:
        super().__init__()
        if config.coarsen < 1:
            raise InvalidInput(f"coarsen must be a positive integer (1: the full grid), got {config.coarsen}")
        H = config.history
        self.config = config
        self.layout = layout
        n_species = len(layout.numbers)
        self.n_species = n_species
        self.ni = layout.ni_max
        self.nD = layout.nD
        # which packed entries exist for each species (derived from the layout, so not saved)
        self.register_buffer("D_mask", layout.mask(), persistent=False)
        self.register_buffer("coef", extrapolation_weights(H).float())
        # grid scales: p mean, p std, r_hat std, dr std, dp std; output std per h
        self.register_buffer("grid_scales", torch.ones(5))
        self.register_buffer("out_scale", torch.ones(H + 1))
        # D: mean per species, std of D, of its steps, of the correction per h
        self.register_buffer("D_mean", torch.zeros(n_species, self.nD))
        self.register_buffer("D_scales", torch.ones(2, self.nD))
        self.register_buffer("D_out_scale", torch.ones(H + 1, self.nD))
        c = config.channels
        n_in = 3 * H + 1
        self.stem = nn.Conv3d(n_in, c, 3, padding=1, padding_mode="circular")
        self.blocks = nn.ModuleList(_Block(c, d) for d in config.dilations)
        self.head = nn.Conv3d(c, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        d_in = c + self.nD * H + H + n_species
        self.d_head = nn.Sequential(nn.Linear(d_in, config.d_hidden), nn.GELU(),
                                    nn.Linear(config.d_hidden, config.d_hidden), nn.GELU(),
                                    nn.Linear(config.d_hidden, self.nD))
        nn.init.zeros_(self.d_head[-1].weight)
        nn.init.zeros_(self.d_head[-1].bias)

    @property
    def history(self) -> int:
        return self.config.history

    def forward(self, p: torch.Tensor, p_hist: torch.Tensor, r_hist: torch.Tensor, h: torch.Tensor,
                frac: torch.Tensor, species: torch.Tensor, D_hist: torch.Tensor,
                band: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict the density and PAW matrices of step t.

        Parameters
        ----------
        p : (B, N1, N2, N3) prior at the positions of step t, e/Angstrom^3.
        p_hist, r_hist : (B, H, N1, N2, N3) prior and residual ``nt - p`` at steps t-1 ... t-H
            (entries beyond ``h`` are ignored).
        h : (B,) long, number of past steps available (0 ... H).
        frac : (B, Na, 3) fractional positions at step t.
        species : (Na,) long, species index of each atom.
        D_hist : (B, H, Na, nD) packed padded PAW matrices at steps t-1 ... t-H.
        band : (N1, N2, N3 // 2 + 1) bool, optional
            Plane waves the density may contain (:func:`ase_ldm.sync.prior.band_mask`); the CNN's
            correction is projected onto them, so it adds nothing where GPAW's density has nothing.

        Returns
        -------
        nt : (B, N1, N2, N3) e/Angstrom^3
        D : (B, Na, nD) packed padded PAW matrices (zero where a species has no entry)
        """
        H = self.history
        B = p.shape[0]
        valid = (torch.arange(H, device=p.device)[None, :] < h[:, None]).to(p.dtype)  # (B, H)
        v5 = valid[:, :, None, None, None]
        r_hist = r_hist * v5
        p_hist = p_hist * v5
        w = self.coef[h].to(p.dtype)  # (B, H)
        r_hat = torch.einsum("bk,bk...->b...", w, r_hist)
        pm, ps, rs, drs, dps = self.grid_scales
        chans = [(p - pm) / ps, r_hat / rs]
        for k in range(H - 1):  # residual changes r_{t-1-k} - r_{t-2-k}
            chans.append((r_hist[:, k] - r_hist[:, k + 1]) * valid[:, k + 1, None, None, None] / drs)
        prev = p
        for k in range(H):  # prior changes p_{t-k} - p_{t-1-k}
            chans.append((prev - p_hist[:, k]) * valid[:, k, None, None, None] / dps)
            prev = p_hist[:, k]
        x = torch.stack(chans, 1)
        grid = tuple(p.shape[1:])
        f = self.config.coarsen
        if f > 1:
            x = fourier_resample(x, coarse_grid(grid, f))
        flags = valid[:, :, None, None, None].expand(-1, -1, *x.shape[2:])
        x = torch.cat([x, flags], 1)
        x = circular_conv3d(self.stem, x)
        for block in self.blocks:
            x = block(x)
        feat = F.gelu(x)
        delta = self.head(feat)[:, 0]
        if f > 1 or band is not None:
            delta = fourier_resample(delta, grid, band)
        nt = p + r_hat + self.out_scale[h][:, None, None, None] * delta

        # PAW matrices: extrapolate, or the species mean on a cold start, then correct per atom
        v4 = valid[:, :, None, None]
        D_hist = D_hist * v4
        D_mean = self.D_mean[species][None]  # (1, Na, nD)
        D_hat = torch.einsum("bk,bkad->bad", w, D_hist)
        D_hat = torch.where((h > 0)[:, None, None], D_hat, D_mean.expand(B, -1, -1))
        s_D, s_dD = self.D_scales
        d_in = [sample_at_atoms(feat, frac), (D_hat - D_mean) / s_D]
        for k in range(H - 1):
            d_in.append((D_hist[:, k] - D_hist[:, k + 1]) * v4[:, k + 1] / s_dD)
        Na = frac.shape[1]
        d_in.append(valid[:, None, :].expand(-1, Na, -1))
        d_in.append(F.one_hot(species, self.n_species).to(p.dtype)[None].expand(B, -1, -1))
        D = D_hat + self.D_out_scale[h][:, None, :] * self.d_head(torch.cat(d_in, -1))
        return nt, D * self.D_mask[species].to(D.dtype)
