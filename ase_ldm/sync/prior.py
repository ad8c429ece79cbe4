r"""A learned superposition of atomic densities: the prior the synchronised model corrects.

Each species :math:`s` has a radial profile, stored as its Fourier transform
:math:`\tilde f_s(|G|)` on knots :math:`g_k = k\,\Delta g` (piecewise linear between knots).
The prior density on a periodic grid is

.. math::  p(\mathbf r) = \frac{1}{V} \sum_{\mathbf G} \Big[\sum_s \tilde f_s(|\mathbf G|)
           \sum_{a \in s} e^{-i \mathbf G \cdot \mathbf R_a}\Big] e^{i \mathbf G \cdot \mathbf r},

evaluated with one inverse real FFT, so it follows the atoms exactly, works on any cell and grid,
and needs no GPAW. The profiles are fitted by linear least squares to converged densities
(:func:`fit_radial_prior`); on the Li16 reference they leave a smaller residual than GPAW's
free-atom superposition, because they absorb the average bonding of the liquid (the DenSNet
idea of learning on top of a physical prior, ../shared/seeds/003).

Units: positions and cell in Angstrom, densities in electrons/Angstrom^3, :math:`|G|` in 1/Angstrom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.fourier import reciprocal_grid
from ..errors import InvalidInput, ModelMismatch

__all__ = ["RadialPrior", "fit_radial_prior", "band_limit"]


def species_index(known: tuple[int, ...], numbers: Any) -> np.ndarray:
    """The index in ``known`` (atomic numbers of a model's species) of each atom's element.

    Raises
    ------
    ModelMismatch
        An element the model does not know.
    """
    numbers = np.asarray(numbers).ravel()
    lookup = {z: s for s, z in enumerate(known)}
    missing = sorted({int(z) for z in numbers} - set(lookup))
    if missing:
        raise ModelMismatch(f"the model knows atomic numbers {list(known)}, not {missing}; "
                            "train on data that contains these elements")
    return np.array([lookup[int(z)] for z in numbers], np.int64)


def _hat_weights(g: np.ndarray, dg: float, nknots: int) -> tuple[np.ndarray, np.ndarray]:
    """Knot index k and weight of knot k (the other weight, 1 - w, goes to k + 1)."""
    x = np.clip(g / dg, 0, nknots - 1 - 1e-9)
    k = np.floor(x).astype(np.int64)
    return k, 1.0 - (x - k)


@dataclass(frozen=True)
class RadialPrior:
    """Radial Fourier profiles of the atomic pseudo-densities, one per species.

    Parameters
    ----------
    numbers : tuple of int
        Atomic numbers of the species, in the order of ``profiles``.
    dg : float
        Knot spacing in 1/Angstrom.
    profiles : tuple of tuple of float
        :math:`\\tilde f_s(g_k)` in electrons, shape (n_species, n_knots); ``profiles[s][0]`` is
        the number of electrons one atom of species s carries.
    """

    numbers: tuple[int, ...]
    dg: float
    profiles: tuple[tuple[float, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"numbers": list(self.numbers), "dg": self.dg, "profiles": [list(p) for p in self.profiles]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RadialPrior:
        return cls(tuple(int(z) for z in d["numbers"]), float(d["dg"]),
                   tuple(tuple(float(x) for x in p) for p in d["profiles"]))

    def species_index(self, numbers: np.ndarray) -> np.ndarray:
        """Index into ``profiles`` for each atom; raises ModelMismatch for an unknown element."""
        return species_index(self.numbers, numbers)

    def form_factors(self, cell: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
        """:math:`\\tilde f_s(|G|)` on the half grid, shape (n_species, N1, N2, N3 // 2 + 1), electrons."""
        g = np.linalg.norm(reciprocal_grid(cell, grid), axis=-1)
        prof = np.asarray(self.profiles, np.float64)
        k, w = _hat_weights(g, self.dg, prof.shape[1])
        return prof[:, k] * w + prof[:, np.minimum(k + 1, prof.shape[1] - 1)] * (1 - w)

    def density(self, positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray,
                grid: tuple[int, int, int]) -> np.ndarray:
        """The prior at one configuration, shape ``grid``, electrons/Angstrom^3 (float64)."""
        ev = PriorEvaluator(self, numbers, cell, grid, dtype=torch.float64)
        return ev(torch.as_tensor(np.asarray(positions, np.float64))[None])[0].numpy()


class PriorEvaluator(torch.nn.Module):
    """Batched torch evaluation of a :class:`RadialPrior` for fixed species, cell and grid.

    Call with positions of shape (B, Na, 3) (Angstrom); returns (B, N1, N2, N3) in e/Angstrom^3.
    """

    def __init__(self, prior: RadialPrior, numbers: np.ndarray, cell: np.ndarray, grid: tuple[int, int, int],
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        cell = np.asarray(cell, np.float64)
        self.grid = tuple(int(n) for n in grid)
        self.dV = abs(np.linalg.det(cell)) / np.prod(self.grid)
        species = prior.species_index(np.asarray(numbers))
        ff = prior.form_factors(cell, self.grid)[species]  # (Na, N1, N2, N3h)
        self.register_buffer("G", torch.as_tensor(reciprocal_grid(cell, self.grid), dtype=dtype), persistent=False)
        self.register_buffer("ff", torch.as_tensor(ff / self.dV, dtype=dtype), persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        pos = positions.to(self.G.dtype)
        # phase (B, Na, N1, N2, N3h): one einsum, then the per-atom form factor, summed over atoms
        phase = torch.einsum("xyzc,bac->baxyz", self.G, pos)
        re = (torch.cos(phase) * self.ff).sum(1)
        im = -(torch.sin(phase) * self.ff).sum(1)
        return torch.fft.irfftn(torch.complex(re, im), s=self.grid, dim=(-3, -2, -1))


def fit_radial_prior(frames: Any, numbers: np.ndarray, cell: np.ndarray, *, dg: float = 0.25,
                     smoothness: float = 1e-3) -> RadialPrior:
    """Fit radial profiles to converged densities by linear least squares.

    Parameters
    ----------
    frames : iterable of (positions, nt)
        positions (Na, 3) Angstrom and ``nt`` (N1, N2, N3) e/Angstrom^3 (spin-summed), same cell.
    numbers : (Na,) atomic numbers.
    cell : (3, 3) Angstrom.
    dg : knot spacing in 1/Angstrom.
    smoothness : weight of the second-difference penalty that fixes knots between G shells.
    """
    numbers = np.asarray(numbers)
    species = sorted({int(z) for z in numbers})
    sidx = np.array([species.index(int(z)) for z in numbers])
    ns = len(species)
    cell = np.asarray(cell, np.float64)
    A = B = None
    grid = None
    for positions, nt in frames:
        nt = np.asarray(nt, np.float64)
        if grid is None:
            grid = nt.shape
            G = reciprocal_grid(cell, grid)
            dV = abs(np.linalg.det(cell)) / np.prod(grid)
            A = np.zeros((*G.shape[:3], ns, ns), np.complex128)
            B = np.zeros((*G.shape[:3], ns), np.complex128)
        elif nt.shape != grid:
            raise InvalidInput(f"all frames need the grid {grid}, got {nt.shape}")
        y = dV * np.fft.rfftn(nt)
        phase = np.exp(-1j * np.einsum("xyzc,ac->axyz", G, np.asarray(positions, np.float64)))
        S = np.stack([phase[sidx == s].sum(0) for s in range(ns)], axis=-1)  # (..., ns)
        A += np.conj(S)[..., :, None] * S[..., None, :]
        B += np.conj(S) * y[..., None]
    if grid is None:
        raise InvalidInput("no frames to fit the prior to")
    # multiplicity of each half-grid point in the full FFT grid
    mult = np.full(grid[2] // 2 + 1, 2.0)
    mult[0] = 1.0
    if grid[2] % 2 == 0:
        mult[-1] = 1.0
    g = np.linalg.norm(G, axis=-1)
    nk = int(math.ceil(g.max() / dg)) + 2
    k, w = _hat_weights(g, dg, nk)
    n = ns * nk
    M = np.zeros((n, n))
    v = np.zeros(n)
    for kk, ww in ((k, w), (np.minimum(k + 1, nk - 1), 1 - w)):
        for s in range(ns):
            np.add.at(v, s * nk + kk.ravel(), (mult * ww * B[..., s].real).ravel())
            for kk2, ww2 in ((k, w), (np.minimum(k + 1, nk - 1), 1 - w)):
                for s2 in range(ns):
                    np.add.at(M, (s * nk + kk.ravel(), s2 * nk + kk2.ravel()),
                              (mult * ww * ww2 * A[..., s, s2].real).ravel())
    D2 = np.zeros((nk - 2, nk))
    for i in range(nk - 2):
        D2[i, i:i + 3] = (1.0, -2.0, 1.0)
    scale = np.trace(M) / n
    for s in range(ns):
        sl = slice(s * nk, (s + 1) * nk)
        M[sl, sl] += smoothness * scale * D2.T @ D2
    c = np.linalg.solve(M + 1e-12 * scale * np.eye(n), v)
    return RadialPrior(tuple(species), float(dg), tuple(tuple(c[s * nk:(s + 1) * nk].tolist()) for s in range(ns)))


def band_limit(nt_frames: Any, cell: np.ndarray, *, threshold: float = 1e-6, dg: float = 0.25) -> float:
    """The |G| (1/Angstrom) above which the densities carry no weight.

    GPAW's plane-wave densities are band-limited (Li16 at PW(300): nothing above 12.75 1/A on a
    grid whose corners reach 22 1/A). Returns the lower edge of the first shell of width ``dg``
    from which on every shell's mean Fourier amplitude is below ``threshold`` times the G = 0
    amplitude (the largest |G| on the grid plus ``dg`` if there is none).
    """
    amp = None
    for nt in nt_frames:
        nt = np.asarray(nt, np.float64)
        a = np.abs(np.fft.rfftn(nt))
        if amp is None:
            amp = a
            g = np.linalg.norm(reciprocal_grid(cell, nt.shape), axis=-1)
        else:
            amp += a
    if amp is None:
        raise InvalidInput("no frames to find the band limit of")
    ratio = amp / amp[0, 0, 0]
    edges = np.arange(0.0, g.max() + dg, dg)
    cut = float(edges[-1] + dg)
    for lo in edges[::-1]:
        m = (g >= lo) & (g < lo + dg)
        if m.any() and ratio[m].mean() >= threshold:
            break
        cut = float(lo)
    return cut
