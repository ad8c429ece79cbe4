"""Read density-trajectory HDF5 files (schema: :mod:`ase_ldm.data.schema`): frames, windows,
splits and torch tensors, with clear errors for damaged files."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DatasetError, FrameOutOfRange, InvalidInput
from .hdf5 import H5_ERRORS, _check_density, _check_format, _close_quietly, _damaged, _h5open, decode_attrs
from .schema import UNITS, Frame

__all__ = ["DensityDataset", "open_dataset"]

log = logging.getLogger(__name__)


def _formula(numbers: np.ndarray) -> str:
    from ase.symbols import Symbols

    return str(Symbols(np.asarray(numbers))) if len(numbers) else "(none)"


def _read_D_asii(f: h5py.File, i: int) -> list[np.ndarray]:
    """Unpack frame ``i`` of the concatenated ``D`` array into (S, ni, ni) float64 blocks."""
    D_sP = f["D"][i].astype(np.float64)
    offsets, ni_a = f["D_offsets"][()], f["D_ni"][()]
    return [D_sP[:, p0:p1].reshape(-1, ni, ni) for p0, p1, ni in zip(offsets[:-1], offsets[1:], ni_a)]


class DensityDataset:
    """Read access to a density-trajectory file; frames are read on demand.

    Use :func:`open_dataset`. Indices count complete frames only.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._f = _h5open(self.path, "r")
        try:
            _check_format(self._f, self.path)
            if "time_fs" not in self._f or "nt" not in self._f:
                raise DatasetError(f"{self.path}: no 'time_fs'/'nt' arrays; the file is incomplete")
            self._n = len(self._f["time_fs"])
        except H5_ERRORS as err:
            _close_quietly(self._f)
            raise _damaged(self.path, "the file's header", err) from None
        except BaseException:
            self._f.close()
            raise

    def _read(self, name: str, sel: Any, what: str) -> np.ndarray:
        """``self._f[name][sel]``; a failed read (corrupt chunk, cut-short file) is a :class:`DatasetError`."""
        try:
            return self._f[name][sel]
        except H5_ERRORS as err:
            raise _damaged(self.path, what, err) from None

    # -- metadata ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def attrs(self) -> dict[str, Any]:
        """File attributes (provenance); JSON-text attributes are decoded."""
        return decode_attrs(self._f.attrs)

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self._f["nt"].shape[2:])  # type: ignore[return-value]

    @property
    def nspins(self) -> int:
        return int(self._f["nt"].shape[1])

    @property
    def numbers(self) -> np.ndarray:
        return self._read("numbers", (), "the atomic numbers")

    @property
    def pbc(self) -> np.ndarray:
        return self._read("pbc", (), "the periodic boundary conditions")

    @property
    def natoms(self) -> int:
        return len(self.numbers)

    @property
    def time_fs(self) -> np.ndarray:
        return self._read("time_fs", slice(0, self._n), "the frame times")

    @property
    def timestep_fs(self) -> float:
        """The MD timestep the trajectory was run with (file attribute ``timestep_fs``), fs;
        the frame interval when the file does not say."""
        if "timestep_fs" in self._f.attrs:
            return float(self._f.attrs["timestep_fs"])
        return self.frame_interval_fs

    @property
    def frame_interval_fs(self) -> float:
        """Time between consecutive frames, fs (the MD timestep times the recording interval)."""
        if "frame_interval_fs" in self._f.attrs:
            return float(self._f.attrs["frame_interval_fs"])
        if "timestep_fs" in self._f.attrs:
            return float(self._f.attrs["timestep_fs"])
        raise DatasetError(f"{self.path}: fewer than two frames and no timestep_fs attribute")

    def has(self, name: str) -> bool:
        """Whether the per-frame array ``name`` (e.g. ``'D'``, ``'energy'``) is stored."""
        return name in self._f

    def cell(self, index: int = 0) -> np.ndarray:
        i = self._index(index)
        return self._read("cell", i, f"the cell of frame {i}")

    def volume_element(self, index: int = 0) -> float:
        """Volume of one grid cell, Angstrom^3."""
        return abs(float(np.linalg.det(self.cell(index)))) / float(np.prod(self.grid))

    # -- frames --------------------------------------------------------------------------
    def frame_index(self, index: int) -> int:
        """The frame number ``index`` refers to: 0 .. len-1, or -len .. -1 counting from the end.

        Raises
        ------
        FrameOutOfRange
            ``index`` is outside the dataset (it never wraps around).
        """
        return self._index(index)

    def _index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            valid = f"valid frames are 0..{self._n - 1}, or -{self._n}..-1 counting from the end" if self._n else \
                "it has no frames"
            raise FrameOutOfRange(f"frame {index} out of range: {self.path} has {self._n} frames; {valid}")
        return i

    def _slice(self, start: int, stop: int | None) -> slice:
        stop = self._n if stop is None else stop
        if start < 0 or stop > self._n or start > stop:
            raise FrameOutOfRange(f"frames {start}:{stop} out of range: {self.path} has {self._n} frames")
        return slice(start, stop)

    def nt(self, index: int) -> np.ndarray:
        """Density of one frame, (S, N1, N2, N3) float32, electrons/Angstrom^3."""
        i = self._index(index)
        return _check_density(self.path, self._read("nt", i, f"the density of frame {i}")[None], [i])[0]

    def nt_range(self, start: int, stop: int | None = None) -> np.ndarray:
        """Densities of frames ``start:stop``, (T, S, N1, N2, N3) float32."""
        sl = self._slice(start, stop)
        return _check_density(self.path, self._read("nt", sl, f"the densities of frames {sl.start}..{sl.stop - 1}"),
                              range(sl.start, sl.stop))

    def window(self, index: int, length: int) -> np.ndarray:
        """``length`` consecutive densities ending at frame ``index`` (e.g. for time derivatives).

        Returns
        -------
        (length, S, N1, N2, N3) float32 array, oldest first.
        """
        i = self._index(index)
        if i + 1 < length:
            raise FrameOutOfRange(f"a window of {length} frames ending at frame {index} starts before frame 0")
        frames = range(i + 1 - length, i + 1)
        return _check_density(self.path, self._read("nt", slice(frames.start, frames.stop),
                                                    f"the densities of frames {frames.start}..{i}"), frames)

    def D_asii(self, index: int) -> list[np.ndarray]:
        """PAW density matrices of one frame: a list of (S, ni, ni) float64 arrays."""
        if "D" not in self._f:
            raise DatasetError(f"{self.path}: no PAW density matrices 'D' stored")
        i = self._index(index)
        try:
            return _read_D_asii(self._f, i)
        except H5_ERRORS as err:
            raise _damaged(self.path, f"the PAW density matrices of frame {i}", err) from None

    def array(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """A per-frame array (``positions``, ``energy``, ``forces``, ...) for frames ``start:stop``."""
        if name not in self._f:
            raise DatasetError(f"{self.path}: no per-frame array {name!r}")
        return self._read(name, self._slice(start, stop), f"the array {name!r}")

    def frame(self, index: int) -> Frame:
        """Everything stored for one frame."""
        return self._frame_from_file(self._f, self._index(index), self.path)

    def __getitem__(self, index: int) -> Frame:
        return self.frame(index)

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self._n):
            yield self.frame(i)

    @staticmethod
    def _frame_from_file(f: h5py.File, i: int, path: Path) -> Frame:
        try:
            frame = DensityDataset._read_frame(f, i)
        except H5_ERRORS as err:
            raise _damaged(path, f"frame {i}", err) from None
        _check_density(path, frame.nt_sR[None], [i])
        return frame

    @staticmethod
    def _read_frame(f: h5py.File, i: int) -> Frame:
        def opt(name: str) -> Any:
            return f[name][i] if name in f else None

        D_asii = _read_D_asii(f, i) if "D" in f else None
        energy = opt("energy")
        scf = opt("scf_iterations")
        spread = opt("nt_spread")
        return Frame(
            nt_sR=f["nt"][i],
            positions=f["positions"][i],
            cell=f["cell"][i],
            numbers=f["numbers"][()],
            time_fs=float(f["time_fs"][i]),
            D_asii=D_asii,
            velocities=opt("velocities"),
            energy=None if energy is None else float(energy),
            forces=opt("forces"),
            scf_iterations=None if scf is None else int(scf),
            nt_spread=None if spread is None else float(spread),
            pbc=f["pbc"][()],
        )

    def atoms(self, index: int):
        """The frame's atoms as :class:`ase.Atoms` (with velocities when stored)."""
        from ase import Atoms

        fr = self.frame(index)
        atoms = Atoms(numbers=fr.numbers, positions=fr.positions, cell=fr.cell, pbc=fr.pbc)
        if fr.velocities is not None:
            atoms.set_velocities(fr.velocities)
        return atoms

    def electron_counts(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Integral of ``nt`` per frame (summed over spins), electrons; streamed frame by frame."""
        sl = self._slice(start, stop)
        cells = self._read("cell", sl, "the cells")
        dv = np.abs(np.linalg.det(cells)) / float(np.prod(self.grid))
        return np.array([self.nt(i).sum(dtype=np.float64) for i in range(sl.start, sl.stop)]) * dv

    # -- splits and torch ----------------------------------------------------------------
    def split(self, test_fraction: float = 0.2) -> tuple[range, range]:
        """Split frame indices by time: the first part trains, the last part tests.

        Parameters
        ----------
        test_fraction : float
            Fraction of frames (0 < f < 1) held out at the end of the trajectory.
        """
        if not 0.0 < test_fraction < 1.0:
            raise InvalidInput(f"test_fraction must be in (0, 1), got {test_fraction}")
        n_test = max(1, int(round(self._n * test_fraction)))
        if n_test >= self._n:
            raise DatasetError(f"{self.path}: {self._n} frames are too few to split off a test part")
        return range(0, self._n - n_test), range(self._n - n_test, self._n)

    def nt_torch(self, index: int | slice, device: Any = None, dtype: Any = None):
        """Densities as a torch tensor: one frame (S, N1, N2, N3) or a slice (T, S, N1, N2, N3)."""
        import torch

        if isinstance(index, slice):
            start, stop, step = index.indices(self._n)
            if step > 0:
                array = self._read("nt", slice(start, stop, step), f"the densities of frames {index}")
            else:  # h5py reads forward only: read the covered range once and reverse it
                lo = stop + 1
                array = self._read("nt", slice(lo, start + 1) if lo <= start else slice(0, 0),
                                   f"the densities of frames {index}")[::-1][::-step]
                array = np.ascontiguousarray(array)
            _check_density(self.path, array, range(start, stop, step))
        else:
            array = self.nt(index)
        return torch.as_tensor(array, device=device, dtype=dtype or torch.float32)

    def summary(self) -> dict[str, Any]:
        """What ``ase-ldm info`` prints: frames, grid, species, time span, units, counts, provenance."""
        counts = self.electron_counts() if self._n else np.zeros(0)
        t = self.time_fs
        cell = self.cell(0) if self._n else np.zeros((3, 3))
        return {
            "path": str(self.path),
            "frames": self._n,
            "grid": list(self.grid),
            "spins": self.nspins,
            "atoms": self.natoms,
            "formula": _formula(self.numbers),
            "cell_A": np.round(cell, 6).tolist(),
            "time_fs": [float(t[0]), float(t[-1])] if self._n else [],
            "frame_interval_fs": self.frame_interval_fs if self._n > 1 or "timestep_fs" in self._f.attrs else None,
            "electron_count": [float(counts.min()), float(counts.max())] if self._n else [],
            "arrays": sorted(k for k in self._f.keys()),
            "units": {k: v for k, v in UNITS.items() if k in self._f},
            "provenance": {k: v for k, v in self.attrs.items() if k not in ("format", "units")},
        }

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> DensityDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DensityDataset({str(self.path)!r}, frames={self._n}, grid={self.grid}, atoms={self.natoms})"


def open_dataset(path: str | os.PathLike) -> DensityDataset:
    """Open a density-trajectory file for reading.

    Raises
    ------
    DatasetError
        The file is missing, truncated, not an ase_ldm dataset, or of another format version.
    """
    return DensityDataset(path)
