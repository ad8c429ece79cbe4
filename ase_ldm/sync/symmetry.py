"""Point symmetries of a periodic orthorhombic grid and their action on densities, positions and PAW matrices.

The synchronised model is trained with random operations that map the cell and grid onto
themselves (axis permutations between equal axes, mirrors: 48 for a cubic cell), applied to the
density (grid), the fractional positions and the PAW matrices together, and may average its
predictions over them (:class:`~ase_ldm.sync.predictor.SyncPredictor`, ``symmetry_average``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InvalidInput

__all__ = ["SymmetryOp", "symmetry_ops", "projector_l", "projector_rotation", "can_rotate", "transform_D"]


def projector_l(numbers: np.ndarray, xc: str = "PBE") -> dict[int, list[int]] | None:
    """Angular momentum of each projector of each species' PAW matrices (GPAW's setups), by
    atomic number, or None when GPAW is unavailable."""
    try:
        from ase.data import chemical_symbols
        from gpaw.setup import create_setup
    except ImportError:
        return None
    out = {}
    for z in sorted({int(z) for z in numbers}):
        setup = create_setup(chemical_symbols[z], xc)
        out[z] = [ell for ell in setup.l_j for _ in range(2 * ell + 1)]
    return out


@dataclass(frozen=True)
class SymmetryOp:
    """A point operation that maps an orthorhombic periodic grid onto itself.

    ``r'_i = sign_i * r_{perm_i}``: axes permuted (only between axes of equal length and grid
    size), then mirrored. Grid point ``j`` maps to ``-j mod N`` on a mirrored axis.
    """

    perm: tuple[int, int, int]
    sign: tuple[int, int, int]

    @property
    def R(self) -> np.ndarray:
        """The Cartesian matrix, (3, 3)."""
        R = np.zeros((3, 3))
        for i in range(3):
            R[i, self.perm[i]] = self.sign[i]
        return R

    def inverse(self) -> SymmetryOp:
        """The operation that undoes this one."""
        perm, sign = [0, 0, 0], [1, 1, 1]
        for i in range(3):
            perm[self.perm[i]] = i
            sign[self.perm[i]] = self.sign[i]
        return SymmetryOp(tuple(perm), tuple(sign))

    def grid(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to (..., N1, N2, N3)."""
        nd = x.ndim
        x = x.permute(*range(nd - 3), *(nd - 3 + p for p in self.perm))
        for i, s in enumerate(self.sign):
            if s < 0:
                d = nd - 3 + i
                x = torch.roll(torch.flip(x, [d]), 1, d)
        return x

    def frac(self, f: torch.Tensor) -> torch.Tensor:
        """Apply to fractional coordinates (..., 3) of an orthorhombic cell."""
        out = f[..., list(self.perm)]
        return out * torch.tensor(self.sign, dtype=f.dtype, device=f.device)


#: Cartesian index of each real l = 1 harmonic in GPAW's order (y, z, x).
_GPAW_P_ORDER = (1, 2, 0)


def _gpaw_rotation() -> Any:
    try:
        from gpaw.rotation import rotation
    except ImportError:
        return None
    return rotation


def can_rotate(l_i: list[int] | None) -> bool:
    """Whether :func:`transform_D` can rotate PAW matrices with these projector angular momenta
    here: any l where GPAW is installed, s and p without it."""
    return l_i is not None and (max(l_i) <= 1 or _gpaw_rotation() is not None)


@functools.lru_cache(maxsize=4096)
def projector_rotation(op: SymmetryOp, l_i: tuple[int, ...]) -> np.ndarray:
    """The (ni, ni) matrix M with ``D' = M D M^T``: block diagonal, one block per projector
    (2l + 1 real spherical harmonics in GPAW's order).

    Where GPAW is installed each block is ``gpaw.rotation.rotation(l, R)`` (any l). Without GPAW
    (a training machine), s blocks are 1 and p blocks are ``R`` in GPAW's (y, z, x) order, which is
    what ``gpaw.rotation`` gives for l = 1 (tested); higher l then needs GPAW.
    """
    rotation = _gpaw_rotation()
    ni, R = len(l_i), op.R
    M = np.eye(ni)
    i = 0
    while i < ni:
        ell = l_i[i]
        if ell > 0:
            if rotation is not None:
                M[i:i + 2 * ell + 1, i:i + 2 * ell + 1] = rotation(ell, R)
            elif ell == 1:
                M[i:i + 3, i:i + 3] = R[np.ix_(_GPAW_P_ORDER, _GPAW_P_ORDER)]
            else:
                raise InvalidInput(f"rotating l = {ell} projectors needs GPAW (gpaw.rotation); install GPAW or "
                                   "disable augmentation (augment=false)")
        i += 2 * ell + 1
    return M


def transform_D(D: np.ndarray | torch.Tensor, op: SymmetryOp, l_i: list[int]) -> Any:
    """The PAW matrices (..., ni, ni) of the transformed density: ``M D M^T`` (:func:`projector_rotation`)."""
    M = projector_rotation(op, tuple(int(ell) for ell in l_i))
    if isinstance(D, torch.Tensor):
        Mt = torch.as_tensor(M, dtype=D.dtype, device=D.device)
        return Mt @ D @ Mt.T
    return M @ np.asarray(D) @ M.T


def symmetry_ops(cell: np.ndarray, grid: tuple[int, int, int]) -> list[SymmetryOp]:
    """The axis permutations and mirrors that map this cell and grid onto themselves: 48 for a
    cubic cell with an equal grid, 8 mirrors for an orthorhombic one, and the identity and the
    inversion for any other cell (inversion maps every lattice onto itself; other operations of
    a skewed cell do not act on fractional coordinates as axis permutations and mirrors)."""
    import itertools

    cell = np.asarray(cell, float)
    lengths = np.linalg.norm(cell, axis=1)
    if np.abs(cell - np.diag(np.diag(cell))).max() > 1e-8:
        return [SymmetryOp((0, 1, 2), (1, 1, 1)), SymmetryOp((0, 1, 2), (-1, -1, -1))]
    ops = []
    for perm in itertools.permutations(range(3)):
        if any(abs(lengths[p] - lengths[i]) > 1e-8 or grid[p] != grid[i] for i, p in enumerate(perm)):
            continue
        for sign in itertools.product((1, -1), repeat=3):
            ops.append(SymmetryOp(tuple(perm), tuple(sign)))
    return ops
