"""The density-trajectory dataset schema: names, units, and what a frame must satisfy.

One HDF5 file holds one trajectory. Per-frame arrays grow along the first axis (time);
every one is chunked one frame per chunk and compressed. The names below are the
contract other tools (training, evaluation, the SCF hook) rely on.

========================  ==========================  =============================================
name                      shape, dtype                meaning, units
========================  ==========================  =============================================
``nt``                    (T, S, N1, N2, N3) float32  smooth pseudo-density incl. pseudo-core, no
                                                      compensation charges, electrons/Angstrom^3
``positions``             (T, Na, 3) float64          Angstrom
``cell``                  (T, 3, 3) float64           Angstrom (rows are cell vectors)
``time_fs``               (T,) float64                fs; written last, so it counts complete frames
``D``                     (T, S, P) float32           PAW density matrices, atoms concatenated: atom a
                                                      occupies ``D_offsets[a]:D_offsets[a+1]`` and is
                                                      reshaped to (ni_a, ni_a), row-major
``velocities``            (T, Na, 3) float64          Angstrom / ASE time unit (``atoms.get_velocities()``)
``energy``                (T,) float64                eV
``forces``                (T, Na, 3) float64          eV/Angstrom
``scf_iterations``        (T,) int32                  GPAW SCF iterations of that step
``nt_spread``             (T,) float64                a generative model's spread: L1 norm of the
                                                      per-voxel standard deviation over its samples,
                                                      relative to the L1 norm of their mean
                                                      (dimensionless, comparable with a relative L1
                                                      error); only in predicted datasets
``numbers``               (Na,) int32                 atomic numbers (fixed for the file)
``pbc``                   (3,) bool                   periodic boundary conditions
``D_ni``                  (Na,) int32                 projectors per atom (``ni``); only with ``D``
``D_offsets``             (Na + 1,) int64             cumulative ``ni**2``; only with ``D``
========================  ==========================  =============================================

Grid point (i, j, k) sits at fractional coordinates (i/N1, j/N2, k/N3), as in GPAW and in
cube files written by ASE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DatasetError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "UNITS",
    "PER_FRAME",
    "OPTIONAL_PER_FRAME",
    "DatasetError",
    "Frame",
]

FORMAT_NAME = "ase_ldm.density_trajectory"
FORMAT_VERSION = 1

#: Largest atomic number accepted (oganesson).
MAX_ATOMIC_NUMBER = 118

UNITS: dict[str, str] = {
    "nt": "electrons/Angstrom^3",
    "positions": "Angstrom",
    "cell": "Angstrom",
    "time_fs": "fs",
    "D": "dimensionless (PAW atomic density matrix elements)",
    "velocities": "Angstrom/(ASE time unit)",
    "energy": "eV",
    "forces": "eV/Angstrom",
    "scf_iterations": "count",
    "nt_spread": "dimensionless (relative L1)",
}

#: Per-frame arrays always present, in the order they are written (``time_fs`` last).
PER_FRAME = ("nt", "positions", "cell")
#: Per-frame arrays a trajectory may have; once the first frame has one, every frame must.
OPTIONAL_PER_FRAME = ("D", "velocities", "energy", "forces", "scf_iterations", "nt_spread")


@dataclass(frozen=True)
class Frame:
    """One time step of a density trajectory, in the dataset's units.

    Parameters
    ----------
    nt_sR : (S, N1, N2, N3) array
        Smooth pseudo-density without compensation charges, electrons/Angstrom^3.
    positions : (Na, 3) array
        Angstrom.
    cell : (3, 3) array
        Angstrom, rows are the cell vectors.
    numbers : (Na,) int array
        Atomic numbers.
    time_fs : float
        Simulation time of the frame, fs.
    D_asii : list of (S, ni, ni) arrays, optional
        PAW atomic density matrices, one per atom.
    velocities : (Na, 3) array, optional
        ASE units (Angstrom per ASE time unit).
    energy : float, optional
        eV.
    forces : (Na, 3) array, optional
        eV/Angstrom.
    scf_iterations : int, optional
        SCF iterations GPAW needed for this frame.
    nt_spread : float, optional
        Relative spread of a generative model's samples of ``nt_sR`` (see the table above).
    pbc : (3,) bool array
        Periodic boundary conditions.
    """

    nt_sR: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    numbers: np.ndarray
    time_fs: float
    D_asii: list[np.ndarray] | None = None
    velocities: np.ndarray | None = None
    energy: float | None = None
    forces: np.ndarray | None = None
    scf_iterations: int | None = None
    nt_spread: float | None = None
    pbc: np.ndarray = field(default_factory=lambda: np.ones(3, bool))

    @property
    def natoms(self) -> int:
        return len(self.numbers)

    @property
    def nspins(self) -> int:
        return self.nt_sR.shape[0]

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(self.nt_sR.shape[1:])  # type: ignore[return-value]

    def electron_count(self) -> float:
        """Integral of ``nt`` over the cell, summed over spins (electrons)."""
        dv = abs(np.linalg.det(self.cell)) / np.prod(self.grid)
        return float(self.nt_sR.sum(dtype=np.float64) * dv)

    def validate(self, where: str = "frame") -> None:
        """Raise :class:`DatasetError` naming what is wrong with this frame."""
        nt = np.asarray(self.nt_sR)
        if nt.ndim != 4:
            raise DatasetError(
                f"{where}: nt must have shape (S, N1, N2, N3), got {nt.shape}; "
                "add a leading spin axis for spin-paired densities (nt[None])")
        if not np.all(np.isfinite(nt)):
            raise DatasetError(f"{where}: nt contains NaN or inf values")
        if nt.min() <= 0:
            raise DatasetError(
                f"{where}: nt has non-positive values (min {nt.min():.3g} e/A^3). "
                "This looks like a density with compensation charges (new GPAW's "
                "get_pseudo_density()); store calc.dft.density.nt_sR instead, or convert "
                "with ase_ldm.data.gpaw_io.nt_from_compensated")
        _check_numbers(where, self.numbers)
        na = len(self.numbers)
        _check_shape(where, "positions", self.positions, (na, 3))
        _check_shape(where, "cell", self.cell, (3, 3))
        if abs(np.linalg.det(self.cell)) < 1e-6:
            raise DatasetError(f"{where}: cell has zero volume; a density needs a 3D cell")
        if not np.isfinite(self.time_fs):
            raise DatasetError(f"{where}: time_fs is not finite")
        for name in ("velocities", "forces"):
            value = getattr(self, name)
            if value is not None:
                _check_shape(where, name, value, (na, 3))
        if self.D_asii is not None:
            if len(self.D_asii) != na:
                raise DatasetError(
                    f"{where}: D_asii has {len(self.D_asii)} atoms, positions have {na}")
            for a, D_sii in enumerate(self.D_asii):
                D_sii = np.asarray(D_sii)
                if D_sii.ndim != 3 or D_sii.shape[0] != nt.shape[0] or D_sii.shape[1] != D_sii.shape[2]:
                    raise DatasetError(
                        f"{where}: D_asii[{a}] must have shape (S={nt.shape[0]}, ni, ni), "
                        f"got {D_sii.shape}")
                if not np.all(np.isfinite(D_sii)):
                    raise DatasetError(f"{where}: D_asii[{a}] contains NaN or inf values")
        if self.energy is not None and not np.isfinite(self.energy):
            raise DatasetError(f"{where}: energy is not finite")


def _check_numbers(where: str, numbers: Any) -> None:
    """Atomic numbers must be a 1D array of whole numbers 1 .. MAX_ATOMIC_NUMBER."""
    z = np.asarray(numbers)
    if z.ndim != 1:
        raise DatasetError(f"{where}: numbers must be a 1D array of atomic numbers, one per atom, got shape {z.shape}")
    if z.dtype.kind not in "iuf" or (z.dtype.kind == "f" and not np.all(np.isfinite(z) & (z == np.round(z)))):
        raise DatasetError(f"{where}: atomic numbers must be whole numbers, got {z.dtype} values")
    bad = (z < 1) | (z > MAX_ATOMIC_NUMBER)
    if np.any(bad):
        a = int(np.argmax(bad))
        raise DatasetError(
            f"{where}: atom {a} has atomic number {z[a]:g}, not an element (1 .. {MAX_ATOMIC_NUMBER}); "
            "fix the 'numbers' array of the source data")


def _check_shape(where: str, name: str, value: Any, shape: tuple[int, ...]) -> None:
    arr = np.asarray(value)
    if arr.shape != shape:
        raise DatasetError(f"{where}: {name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DatasetError(f"{where}: {name} contains NaN or inf values")
