"""Fourier helpers on periodic grids: the reciprocal grid, band masks and interpolation.

Units: cell in Angstrom, wave vectors in 1/Angstrom.
"""

from __future__ import annotations

import numpy as np

__all__ = ["reciprocal_vectors", "reciprocal_grid", "band_mask", "fourier_interpolate"]


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
    """Periodic band-limited interpolation of (N1, N2, N3) onto a grid ``factor`` times finer."""
    N = np.array(n.shape)
    F = np.fft.fftshift(np.fft.fftn(n))
    M = N * factor
    G = np.zeros(M, complex)
    lo = (M - N) // 2
    G[lo[0]:lo[0] + N[0], lo[1]:lo[1] + N[1], lo[2]:lo[2] + N[2]] = F
    return np.real(np.fft.ifftn(np.fft.ifftshift(G))) * factor**3
