r"""Spherically averaged structure-factor amplitude :math:`|S(k)|` of a density field.

Following Appendix A of Chiang, Choi & Osei-Kuffuor, "Generative Latent Space Dynamics of
Electron Density":

.. math::

    S(\mathbf k) = \Delta V \sum_{\mathbf r} n(\mathbf r)\, e^{-i \mathbf k \cdot \mathbf r},
    \qquad
    |S|(k) = \frac{1}{N_k} \sum_{|\mathbf k| \in \text{shell}(k)} |S(\mathbf k)|,

computed with an FFT of :math:`n` times the voxel volume :math:`\Delta V` (the continuous-transform
normalisation), the modulus (amplitude, not intensity), and an average over shells of
:math:`|\mathbf k|` with the :math:`\mathbf k = 0` mode removed. Wave vectors are
:math:`\mathbf k = 2\pi\, \mathbf m B` for FFT integer frequencies :math:`\mathbf m` and
reciprocal cell :math:`B = (A^{-1})^T`, so any cell shape works.

Units: :math:`n` in electrons/Angstrom^3 and :math:`\Delta V` in Angstrom^3 give :math:`|S|` in
electrons; :math:`k` in 1/Angstrom.
"""

from __future__ import annotations

import numpy as np

from ..core.fourier import reciprocal_grid, reciprocal_vectors
from ..errors import InvalidInput

__all__ = ["StructureFactor", "structure_factor", "relative_curve_error", "K_BANDS"]

#: Band edges as fractions of the largest shell k: low, mid, high.
K_BANDS = {"low": (0.0, 1 / 3), "mid": (1 / 3, 2 / 3), "high": (2 / 3, 1.0 + 1e-9)}


class StructureFactor:
    """Shell-averaged :math:`|S(k)|` on one grid and cell, with the binning precomputed.

    Parameters
    ----------
    grid : (N1, N2, N3)
        Grid points per cell vector.
    cell : (3, 3) array
        Angstrom, rows are cell vectors.
    shell_width : float, optional
        Width of the :math:`|k|` shells, 1/Angstrom. Default: the shortest reciprocal vector
        :math:`\\min_c |2\\pi b_c|`, the natural resolution of the grid (one FFT step).

    Attributes
    ----------
    k : (K,) array
        Mean :math:`|k|` of each non-empty shell, 1/Angstrom.
    dV : float
        Voxel volume, Angstrom^3.
    """

    def __init__(self, grid: tuple[int, int, int], cell: np.ndarray, shell_width: float | None = None) -> None:
        cell = np.asarray(cell, float)
        if cell.shape != (3, 3) or abs(np.linalg.det(cell)) < 1e-9:
            raise InvalidInput(f"cell must be a (3, 3) matrix with nonzero volume, got {cell}")
        self.grid = tuple(int(n) for n in grid)
        self.cell = cell
        B = reciprocal_vectors(cell)
        kabs = np.linalg.norm(reciprocal_grid(cell, self.grid, half=False), axis=-1).ravel()
        self.shell_width = shell_width or float(np.linalg.norm(B, axis=1).min())
        shell = np.rint(kabs / self.shell_width).astype(np.int64)
        self._nshell = int(shell.max()) + 1
        shell[kabs == 0] = self._nshell  # k = 0 goes to an overflow bin that is dropped
        self._shell = shell
        counts = np.bincount(shell, minlength=self._nshell + 1)[: self._nshell]
        ksum = np.bincount(shell, weights=kabs, minlength=self._nshell + 1)[: self._nshell]
        self._keep = counts > 0
        self._counts = counts[self._keep]
        self.k = ksum[self._keep] / self._counts
        self.dV = abs(np.linalg.det(cell)) / float(np.prod(self.grid))

    def __call__(self, n_R: np.ndarray) -> np.ndarray:
        """:math:`|S|(k)` of one field.

        Parameters
        ----------
        n_R : (N1, N2, N3) array
            Density, electrons/Angstrom^3.

        Returns
        -------
        (K,) array
            Shell averages at :attr:`k` (1/Angstrom), electrons.
        """
        if n_R.shape != tuple(self.grid):
            raise InvalidInput(f"field of shape {n_R.shape} does not match the grid {tuple(self.grid)}")
        amp = np.abs(np.fft.fftn(n_R)).ravel() * self.dV
        sums = np.bincount(self._shell, weights=amp, minlength=self._nshell + 1)[: self._nshell]
        return sums[self._keep] / self._counts


def structure_factor(n_R: np.ndarray, cell: np.ndarray, shell_width: float | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """One-shot :math:`(k, |S|(k))` of a density on a periodic grid; see :class:`StructureFactor`."""
    sf = StructureFactor(tuple(n_R.shape), np.asarray(cell), shell_width)
    return sf.k, sf(n_R)


def relative_curve_error(s_pred: np.ndarray, s_ref: np.ndarray, k: np.ndarray) -> dict[str, float]:
    r"""Relative error of one :math:`|S|(k)` curve against another, overall and per k band.

    .. math:: \epsilon = \frac{\sum_k |S_\text{pred}(k) - S_\text{ref}(k)|}{\sum_k S_\text{ref}(k)}

    over all shells (``overall``) and over the low, mid and high thirds of the k range.
    """
    diff = np.abs(np.asarray(s_pred) - np.asarray(s_ref))
    out = {"overall": float(diff.sum() / np.sum(s_ref))}
    kmax = float(np.max(k))
    for name, (lo, hi) in K_BANDS.items():
        sel = (k >= lo * kmax) & (k < hi * kmax)
        out[name] = float(diff[sel].sum() / np.sum(s_ref[sel])) if sel.any() else float("nan")
    return out
