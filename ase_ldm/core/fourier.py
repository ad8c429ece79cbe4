"""Fourier helpers on periodic grids: the reciprocal grid, band masks and interpolation.

Units: cell in Angstrom, wave vectors in 1/Angstrom.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["reciprocal_vectors", "reciprocal_grid", "band_mask", "fourier_interpolate", "coarse_grid",
           "fourier_resample"]


def reciprocal_vectors(cell: np.ndarray) -> np.ndarray:
    """Rows b_j of the reciprocal cell, :math:`B = 2\\pi (A^{-1})^T`, shape (3, 3), 1/Angstrom."""
    return 2 * np.pi * np.linalg.inv(np.asarray(cell, np.float64)).T


def reciprocal_grid(cell: np.ndarray, grid: tuple[int, int, int], half: bool = True) -> np.ndarray:
    """Wave vectors G of an FFT grid, shape (N1, N2, N3 // 2 + 1, 3) for the half (rfft) grid
    (``half=True``) or (N1, N2, N3, 3) for the full grid, 1/Angstrom."""
    last = np.fft.rfftfreq(grid[2], 1 / grid[2]) if half else np.fft.fftfreq(grid[2], 1 / grid[2])
    m = [np.fft.fftfreq(grid[0], 1 / grid[0]), np.fft.fftfreq(grid[1], 1 / grid[1]), last]
    M = np.stack(np.meshgrid(*m, indexing="ij"), axis=-1)
    return M @ reciprocal_vectors(cell)


def band_mask(cell: np.ndarray, grid: tuple[int, int, int], g_max: float) -> np.ndarray:
    """Boolean half-grid (rfft) mask of the plane waves with |G| < ``g_max`` (1/Angstrom)."""
    return np.linalg.norm(reciprocal_grid(cell, grid), axis=-1) < g_max


def fourier_interpolate(n: np.ndarray, factor: int) -> np.ndarray:
    """Periodic band-limited interpolation of (N1, N2, N3) onto a grid ``factor`` times finer.

    Every plane wave of the coarse grid is kept (an even grid's Nyquist wave split evenly between
    +N/2 and -N/2), so the original points keep their values.
    """
    n = np.asarray(n)
    N = np.array(n.shape)
    F = np.fft.fftshift(np.fft.fftn(n))
    M = N * factor
    G = np.zeros(M, complex)
    lo = M // 2 - N // 2  # the zero frequency sits at index N // 2 of the shifted spectrum
    G[lo[0]:lo[0] + N[0], lo[1]:lo[1] + N[1], lo[2]:lo[2] + N[2]] = F
    # the real part of the inverse halves an even grid's one-sided Nyquist wave onto +-N/2
    return np.real(np.fft.ifftn(np.fft.ifftshift(G))) * factor**3


def coarse_grid(grid: tuple[int, ...], factor: int) -> tuple[int, ...]:
    """The grid ``factor`` times coarser along each axis, rounded up (so its Nyquist wave vector
    is at least the fine grid's divided by ``factor``)."""
    return tuple(max(1, -(-int(n) // int(factor))) for n in grid)


def fourier_resample(x: torch.Tensor, size: tuple[int, int, int],
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Band-limited periodic resampling of real (..., N1, N2, N3) onto (..., M1, M2, M3).

    The plane waves with :math:`|m_d| \\le (\\min(N_d, M_d) - 1) / 2` are kept along each axis
    (Nyquist components dropped, so the result stays real; with N = M nothing is dropped), and
    values are preserved: a constant stays the same constant. ``mask`` (M1, M2, M3 // 2 + 1) bool
    optionally removes further plane waves of the output (a band limit). Differentiable (torch
    FFTs). The coarse-grid network uses it (:mod:`ase_ldm.sync.net`); :func:`fourier_interpolate`
    keeps an even grid's Nyquist wave instead.
    """
    N = tuple(x.shape[-3:])
    M = tuple(int(m) for m in size)
    X = torch.fft.rfftn(x, dim=(-3, -2, -1))
    if N == M:
        Y = X
    else:
        idx = []
        for d in range(3):
            K = (min(N[d], M[d]) - 1) // 2
            if d < 2:
                src = list(range(K + 1)) + list(range(N[d] - K, N[d]))
                dst = list(range(K + 1)) + list(range(M[d] - K, M[d]))
            else:
                src = dst = list(range(K + 1))
            idx.append((torch.as_tensor(src, device=x.device), torch.as_tensor(dst, device=x.device)))
        (s1, d1), (s2, d2), (s3, d3) = idx
        Y = X.new_zeros(*X.shape[:-3], M[0], M[1], M[2] // 2 + 1)
        Y[..., d1[:, None, None], d2[None, :, None], d3[None, None, :]] = \
            X[..., s1[:, None, None], s2[None, :, None], s3[None, None, :]]
        Y = Y * (M[0] * M[1] * M[2] / (N[0] * N[1] * N[2]))
    if mask is not None:
        Y = Y * mask
    return torch.fft.irfftn(Y, s=M, dim=(-3, -2, -1))
