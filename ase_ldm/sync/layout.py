r"""How the PAW matrices of several species share one vector per atom.

Species differ in their projector counts (GPAW's PBE setups: H and Li 5; Na, Mg, Al, Si, O, F
13; Cu 18). The synchronised model handles every atom alike, so each atom's spin-paired
:math:`D^a_{ii'}` is zero-padded to the largest count :math:`n_i^\max` of the model's species
and packed as the upper triangle of that square (``nD = ni_max (ni_max + 1) / 2`` numbers). A
mask per species marks the entries that exist; the network's output is multiplied by it, so
padded entries are exactly zero, and losses count existing entries only.

A symmetry operation rotates each atom's block with its own species' angular momenta; padded
projectors are treated as s projectors (rotation 1), which keeps their zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InvalidInput, ModelMismatch
from .prior import species_index

__all__ = ["PAWLayout", "pack_D", "unpack_D"]


def pack_D(D: torch.Tensor) -> torch.Tensor:
    """Upper triangles of symmetric (..., ni, ni) matrices, shape (..., ni (ni + 1) / 2)."""
    ni = D.shape[-1]
    i, j = torch.triu_indices(ni, ni, device=D.device)
    return D[..., i, j]


def unpack_D(packed: torch.Tensor, ni: int) -> torch.Tensor:
    """Inverse of :func:`pack_D`: symmetric (..., ni, ni)."""
    i, j = torch.triu_indices(ni, ni, device=packed.device)
    D = packed.new_zeros(*packed.shape[:-1], ni, ni)
    D[..., i, j] = packed
    D[..., j, i] = packed
    return D


@dataclass(frozen=True)
class PAWLayout:
    """Projector counts (and angular momenta) of a model's species.

    Parameters
    ----------
    numbers : tuple of int
        Atomic numbers of the species, in the prior's order (species index s).
    ni : tuple of int
        Projector count of each species.
    l_i : tuple of tuple of int, optional
        Angular momentum of each projector of each species, in GPAW's order (what symmetry
        operations need); None when unknown (then no symmetry operation can act on D).
    """

    numbers: tuple[int, ...]
    ni: tuple[int, ...]
    l_i: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if len(self.ni) != len(self.numbers) or not self.numbers or min(self.ni) < 1:
            raise InvalidInput(f"a PAW layout needs a positive projector count for each of the species "
                               f"{list(self.numbers)}, got {list(self.ni)}")
        if self.l_i is not None and [len(ell) for ell in self.l_i] != list(self.ni):
            raise InvalidInput(f"projector angular momenta {self.l_i} do not match the counts {list(self.ni)}")

    @property
    def ni_max(self) -> int:
        """The padded projector count."""
        return max(self.ni)

    @property
    def nD(self) -> int:
        """Packed entries per atom."""
        return self.ni_max * (self.ni_max + 1) // 2

    def species_index(self, numbers: Sequence[int] | np.ndarray) -> np.ndarray:
        """The species index of each atom; unknown elements are refused."""
        return species_index(self.numbers, numbers)

    def mask(self) -> torch.Tensor:
        """(n_species, nD) float: 1 where the packed entry exists for that species."""
        m = torch.zeros(len(self.ni), self.ni_max, self.ni_max)
        for s, n in enumerate(self.ni):
            m[s, :n, :n] = 1
        return pack_D(m)

    def pad(self, D_aii: Sequence[Any], species: np.ndarray) -> np.ndarray:
        """(Na, ni_max, ni_max) float64 from per-atom (ni_a, ni_a) matrices; checks each count."""
        if len(D_aii) != len(species):
            raise InvalidInput(f"PAW matrices for {len(D_aii)} atoms, but there are {len(species)} atoms")
        out = np.zeros((len(species), self.ni_max, self.ni_max))
        for a, (D, s) in enumerate(zip(D_aii, species)):
            D = np.asarray(D, np.float64)
            n = self.ni[s]
            if D.shape != (n, n):
                raise InvalidInput(f"atom {a} (Z = {self.numbers[s]}): PAW matrix of shape {D.shape}, expected "
                                   f"({n}, {n}): pass one spin-paired (ni, ni) matrix per atom, with the "
                                   "projectors of the setups the model was trained with")
            if not np.all(np.isfinite(D)):
                raise InvalidInput(f"atom {a}: the PAW matrix contains NaN or inf values")
            out[a, :n, :n] = D
        return out

    def unpad(self, D: np.ndarray, species: np.ndarray) -> list[np.ndarray]:
        """Per-atom (ni_a, ni_a) matrices from padded (Na, ni_max, ni_max)."""
        return [np.array(D[a, :self.ni[s], :self.ni[s]]) for a, s in enumerate(species)]

    @property
    def can_rotate(self) -> bool:
        """Whether symmetry operations can act on D here (see :func:`~ase_ldm.sync.symmetry.can_rotate`)."""
        from .symmetry import can_rotate

        return self.l_i is not None and all(can_rotate(list(ell)) for ell in self.l_i)

    def padded_l(self, s: int) -> tuple[int, ...]:
        """Species s's angular momenta padded with s projectors to ``ni_max``."""
        if self.l_i is None:
            raise ModelMismatch("the projectors' angular momenta (l_i) are unknown; symmetry operations need them")
        return tuple(self.l_i[s]) + (0,) * (self.ni_max - self.ni[s])

    def rotations(self, op: Any, species: np.ndarray) -> np.ndarray:
        """(Na, ni_max, ni_max) matrices M_a with ``D_a' = M_a D_a M_a^T`` for a symmetry operation."""
        from .symmetry import projector_rotation

        return np.stack([projector_rotation(op, self.padded_l(s)) for s in range(len(self.ni))])[np.asarray(species)]

    def transform(self, D: torch.Tensor, op: Any, species: np.ndarray) -> torch.Tensor:
        """Apply ``op`` to packed padded D of shape (..., Na, nD)."""
        M = torch.as_tensor(self.rotations(op, species), dtype=D.dtype, device=D.device)
        full = unpack_D(D, self.ni_max)
        return pack_D(M @ full @ M.transpose(-1, -2))

    # -- model.json ---------------------------------------------------------------------------
    def to_meta(self) -> dict[str, Any]:
        """``ni`` and ``l_i`` as model.json stores them: per atomic number."""
        return {"ni": {str(z): n for z, n in zip(self.numbers, self.ni)},
                "l_i": None if self.l_i is None else {str(z): list(ell) for z, ell in zip(self.numbers, self.l_i)}}

    @classmethod
    def from_meta(cls, meta: dict[str, Any], numbers: Sequence[int]) -> PAWLayout:
        """Read ``ni`` and ``l_i`` of a model.json or pack: per atomic number, or (older files) one
        count and one list shared by every species."""
        numbers = tuple(int(z) for z in numbers)
        ni, l_i = meta["ni"], meta.get("l_i")
        if isinstance(ni, dict):
            ni = tuple(int(ni[str(z)]) for z in numbers)
        else:
            ni = (int(ni),) * len(numbers)
        if isinstance(l_i, dict):
            l_i = tuple(tuple(int(x) for x in l_i[str(z)]) for z in numbers)
        elif l_i is not None:
            l_i = (tuple(int(x) for x in l_i),) * len(numbers)
        return cls(numbers, ni, l_i)
