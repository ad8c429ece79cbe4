"""Write and read density-trajectory HDF5 files (schema in :mod:`ase_ldm.data.schema`).

Crash safety: each frame's arrays are written first and ``time_fs`` last, then the file is
flushed. ``len(time_fs)`` is the number of complete frames; a frame interrupted half way
(a longer ``nt`` than ``time_fs``) is ignored by readers and trimmed when the file is
re-opened for appending.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DatasetError, FrameOutOfRange, InvalidInput
from .schema import FORMAT_NAME, FORMAT_VERSION, OPTIONAL_PER_FRAME, UNITS, Frame

__all__ = ["DensityWriter", "DensityDataset", "open_dataset"]

log = logging.getLogger(__name__)

CELL_TOLERANCE = 1e-6  # Angstrom
TIME_TOLERANCE = 1e-6  # fs


def _h5open(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except OSError as err:
        raise DatasetError(
            f"{path}: cannot open as HDF5 ({err}). The file is truncated, corrupt, or not a "
            "dataset written by ase_ldm; re-create it with 'ase-ldm record' or 'ase-ldm import'"
        ) from None


def _check_format(f: h5py.File, path: Path) -> None:
    name = f.attrs.get("format")
    if name != FORMAT_NAME:
        raise DatasetError(
            f"{path}: not an ase_ldm density trajectory (format attribute {name!r}); "
            "convert it with 'ase-ldm import'")
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise DatasetError(
            f"{path}: dataset format version {version}, this ase_ldm reads version "
            f"{FORMAT_VERSION}; use the matching ase_ldm release or re-import the data")


def _json_attr(value: Any) -> Any:
    """HDF5 attributes take scalars and strings; anything else is stored as JSON text."""
    if isinstance(value, (str, int, float, bool, np.integer, np.floating, np.bool_)):
        return value
    return json.dumps(value)


class DensityWriter:
    """Append frames to a density-trajectory file, one flushed frame at a time.

    Parameters
    ----------
    path : str or Path
        The HDF5 file.
    append : bool
        Continue an existing file. Frames must then match its grid, spins, species,
        cell (unless ``variable_cell``) and time step.
    overwrite : bool
        Replace an existing file. Without ``append`` or ``overwrite`` an existing file is
        refused, so nothing already written is lost by accident.
    attrs : mapping, optional
        Provenance stored as file attributes (GPAW version, mode, xc, timestep_fs,
        ensemble, temperature_K, ...). Non-scalar values are stored as JSON text.
        When appending, the given ``timestep_fs`` must equal the stored one.
    variable_cell : bool
        Allow the cell to change from frame to frame (NPT). Default: refuse a change.
    compression : str
        h5py compression filter for per-frame arrays.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        append: bool = False,
        overwrite: bool = False,
        attrs: Mapping[str, Any] | None = None,
        variable_cell: bool = False,
        compression: str = "gzip",
    ) -> None:
        self.path = Path(path)
        self.attrs = dict(attrs or {})
        self.variable_cell = variable_cell
        self.compression = compression
        self._f: h5py.File | None = None
        if self.path.exists():
            if append:
                self._open_existing()
            elif not overwrite:
                raise DatasetError(
                    f"{self.path} exists; continue it with append (--append) or replace it "
                    "with overwrite (--force)")
        elif append:
            log.info("%s does not exist yet; starting a new trajectory", self.path)
        self._overwrite = overwrite and not append

    # -- opening -------------------------------------------------------------------------
    def _open_existing(self) -> None:
        f = _h5open(self.path, "r+")
        try:
            _check_format(f, self.path)
            old = f.attrs.get("timestep_fs")
            new = self.attrs.get("timestep_fs")
            if old is not None and new is not None and abs(float(old) - float(new)) > TIME_TOLERANCE:
                raise DatasetError(
                    f"{self.path}: recorded with timestep {float(old)} fs, cannot append frames "
                    f"with timestep {float(new)} fs; use --timestep {float(old)} or a new file")
            self.variable_cell = bool(f.attrs.get("variable_cell", False))
            n = len(f["time_fs"])
            for name in list(f.keys()):
                ds = f[name]
                if ds.maxshape and ds.maxshape[0] is None and len(ds) > n:
                    log.warning("%s: dropping an incomplete frame from %s", self.path, name)
                    ds.resize(n, axis=0)
            f.flush()
        except BaseException:
            f.close()
            raise
        self._f = f

    def _create(self, frame: Frame) -> h5py.File:
        f = _h5open(self.path, "w")
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["units"] = json.dumps(UNITS)
        f.attrs["variable_cell"] = self.variable_cell
        for key, value in self.attrs.items():
            if value is not None:
                f.attrs[key] = _json_attr(value)
        f.create_dataset("numbers", data=np.asarray(frame.numbers, np.int32))
        f.create_dataset("pbc", data=np.asarray(frame.pbc, bool))
        per_frame = {
            "nt": (frame.nt_sR.shape, np.float32),
            "positions": ((frame.natoms, 3), np.float64),
            "cell": ((3, 3), np.float64),
            "time_fs": ((), np.float64),
        }
        if frame.D_asii is not None:
            ni_a = np.array([D.shape[-1] for D in frame.D_asii], np.int32)
            f.create_dataset("D_ni", data=ni_a)
            f.create_dataset("D_offsets", data=np.concatenate([[0], np.cumsum(ni_a**2)]).astype(np.int64))
            per_frame["D"] = ((frame.nspins, int((ni_a**2).sum())), np.float32)
        for name, shape, dtype in (
            ("velocities", (frame.natoms, 3), np.float64),
            ("energy", (), np.float64),
            ("forces", (frame.natoms, 3), np.float64),
            ("scf_iterations", (), np.int32),
        ):
            if getattr(frame, name) is not None:
                per_frame[name] = (shape, dtype)
        for name, (shape, dtype) in per_frame.items():
            big = name == "nt"
            f.create_dataset(
                name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                chunks=(1, *shape) if big else (max(1, 4096 // max(1, int(np.prod(shape)))), *shape),
                compression=self.compression if big else None, shuffle=big)
            f[name].attrs["units"] = UNITS[name]
        return f

    # -- appending -----------------------------------------------------------------------
    def __len__(self) -> int:
        return 0 if self._f is None else len(self._f["time_fs"])

    @property
    def last_time_fs(self) -> float | None:
        """Time of the last complete frame, or None for an empty trajectory."""
        n = len(self)
        return None if n == 0 else float(self._f["time_fs"][n - 1])

    def last_frame(self) -> Frame | None:
        """The last complete frame (e.g. to continue MD from it), or None."""
        if len(self) == 0:
            return None
        return DensityDataset._frame_from_file(self._f, len(self) - 1)

    def append(self, frame: Frame) -> None:
        """Validate ``frame`` against the file and write it; the file is flushed after."""
        index = len(self)
        frame.validate(where=f"{self.path} frame {index}")
        if self._f is None:
            if self.path.exists() and not self._overwrite:
                raise DatasetError(f"{self.path} appeared while writing; refusing to overwrite it")
            self._f = self._create(frame)
        else:
            self._check_compatible(frame, index)
        f = self._f
        values: dict[str, Any] = {
            "nt": frame.nt_sR,
            "positions": frame.positions,
            "cell": frame.cell,
        }
        if "D" in f:
            values["D"] = np.concatenate([np.asarray(D).reshape(frame.nspins, -1) for D in frame.D_asii], axis=1)
        for name in ("velocities", "energy", "forces", "scf_iterations"):
            if name in f:
                values[name] = getattr(frame, name)
        for name, value in values.items():
            ds = f[name]
            ds.resize(index + 1, axis=0)
            ds[index] = value
        ds = f["time_fs"]
        ds.resize(index + 1, axis=0)
        ds[index] = frame.time_fs
        if index == 1 and "frame_interval_fs" not in f.attrs:
            f.attrs["frame_interval_fs"] = float(frame.time_fs - f["time_fs"][0])
        f.flush()
        log.info("wrote frame %d (t = %.3f fs) to %s", index, frame.time_fs, self.path)

    def _check_compatible(self, frame: Frame, index: int) -> None:
        f = self._f
        where = f"{self.path} frame {index}"
        if tuple(f["nt"].shape[1:]) != frame.nt_sR.shape:
            raise DatasetError(
                f"{where}: density grid (S, N1, N2, N3) = {frame.nt_sR.shape} differs from the "
                f"trajectory's {tuple(f['nt'].shape[1:])}; use the same cutoff/grid or a new file")
        numbers = f["numbers"][()]
        if len(numbers) != frame.natoms or np.any(numbers != np.asarray(frame.numbers)):
            raise DatasetError(
                f"{where}: species {_formula(frame.numbers)} differ from the trajectory's "
                f"{_formula(numbers)}; atoms must keep their order and species")
        if not self.variable_cell:
            old = f["cell"][len(f["time_fs"]) - 1]
            if np.abs(old - frame.cell).max() > CELL_TOLERANCE:
                raise DatasetError(
                    f"{where}: cell changed (max difference {np.abs(old - frame.cell).max():.3g} A) "
                    "in a fixed-cell trajectory; NPT data needs variable_cell=True from the start")
        last = float(f["time_fs"][len(f["time_fs"]) - 1])
        dt = frame.time_fs - last
        expected = f.attrs.get("frame_interval_fs")
        if dt <= 0:
            raise DatasetError(f"{where}: time {frame.time_fs} fs does not come after the last frame ({last} fs)")
        if expected is not None and abs(dt - float(expected)) > TIME_TOLERANCE * max(1.0, float(expected)):
            raise DatasetError(
                f"{where}: time step between frames is {dt:.6g} fs, the trajectory has "
                f"{float(expected):.6g} fs; record with the same --timestep and interval")
        for name in OPTIONAL_PER_FRAME:
            key = "D_asii" if name == "D" else name
            has_file, has_frame = name in f, getattr(frame, key) is not None
            if has_file != has_frame:
                raise DatasetError(
                    f"{where}: {'missing' if has_file else 'unexpected'} {name!r}; every frame of a "
                    "trajectory must carry the same optional arrays")
        if "D" in f:
            ni_a = f["D_ni"][()]
            got = np.array([D.shape[-1] for D in frame.D_asii])
            if np.any(ni_a != got):
                raise DatasetError(f"{where}: PAW projector counts per atom differ from the trajectory's")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> DensityWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        except BaseException:
            self._f.close()
            raise
        self._n = len(self._f["time_fs"])

    # -- metadata ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def attrs(self) -> dict[str, Any]:
        """File attributes (provenance); JSON-text attributes are decoded."""
        out = {}
        for key, value in self._f.attrs.items():
            if isinstance(value, bytes):
                value = value.decode()
            if isinstance(value, str) and value[:1] in "[{":
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    pass
            elif isinstance(value, np.generic):
                value = value.item()
            out[key] = value
        return out

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self._f["nt"].shape[2:])  # type: ignore[return-value]

    @property
    def nspins(self) -> int:
        return int(self._f["nt"].shape[1])

    @property
    def numbers(self) -> np.ndarray:
        return self._f["numbers"][()]

    @property
    def pbc(self) -> np.ndarray:
        return self._f["pbc"][()]

    @property
    def natoms(self) -> int:
        return len(self.numbers)

    @property
    def time_fs(self) -> np.ndarray:
        return self._f["time_fs"][: self._n]

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
        return self._f["cell"][self._index(index)]

    def volume_element(self, index: int = 0) -> float:
        """Volume of one grid cell, Angstrom^3."""
        return abs(float(np.linalg.det(self.cell(index)))) / float(np.prod(self.grid))

    # -- frames --------------------------------------------------------------------------
    def _index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise FrameOutOfRange(f"frame {index} out of range: {self.path} has {self._n} frames")
        return i

    def _slice(self, start: int, stop: int | None) -> slice:
        stop = self._n if stop is None else stop
        if start < 0 or stop > self._n or start > stop:
            raise FrameOutOfRange(f"frames {start}:{stop} out of range: {self.path} has {self._n} frames")
        return slice(start, stop)

    def nt(self, index: int) -> np.ndarray:
        """Density of one frame, (S, N1, N2, N3) float32, electrons/Angstrom^3."""
        return self._f["nt"][self._index(index)]

    def nt_range(self, start: int, stop: int | None = None) -> np.ndarray:
        """Densities of frames ``start:stop``, (T, S, N1, N2, N3) float32."""
        return self._f["nt"][self._slice(start, stop)]

    def window(self, index: int, length: int) -> np.ndarray:
        """``length`` consecutive densities ending at frame ``index`` (e.g. for time derivatives).

        Returns
        -------
        (length, S, N1, N2, N3) float32 array, oldest first.
        """
        i = self._index(index)
        if i + 1 < length:
            raise FrameOutOfRange(f"a window of {length} frames ending at frame {index} starts before frame 0")
        return self._f["nt"][i + 1 - length : i + 1]

    def D_asii(self, index: int) -> list[np.ndarray]:
        """PAW density matrices of one frame: a list of (S, ni, ni) float64 arrays."""
        if "D" not in self._f:
            raise DatasetError(f"{self.path}: no PAW density matrices 'D' stored")
        return _read_D_asii(self._f, self._index(index))

    def array(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """A per-frame array (``positions``, ``energy``, ``forces``, ...) for frames ``start:stop``."""
        if name not in self._f:
            raise DatasetError(f"{self.path}: no per-frame array {name!r}")
        return self._f[name][self._slice(start, stop)]

    def frame(self, index: int) -> Frame:
        """Everything stored for one frame."""
        return self._frame_from_file(self._f, self._index(index))

    def __getitem__(self, index: int) -> Frame:
        return self.frame(index)

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self._n):
            yield self.frame(i)

    @staticmethod
    def _frame_from_file(f: h5py.File, i: int) -> Frame:
        def opt(name: str) -> Any:
            return f[name][i] if name in f else None

        D_asii = _read_D_asii(f, i) if "D" in f else None
        energy = opt("energy")
        scf = opt("scf_iterations")
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
        cells = self._f["cell"][sl]
        dv = np.abs(np.linalg.det(cells)) / float(np.prod(self.grid))
        return np.array([self._f["nt"][i].sum(dtype=np.float64) for i in range(sl.start, sl.stop)]) * dv

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
                array = self._f["nt"][start:stop:step]
            else:  # h5py reads forward only: read the covered range once and reverse it
                lo = stop + 1
                array = self._f["nt"][lo : start + 1][::-1][::-step] if lo <= start else self._f["nt"][0:0]
                array = np.ascontiguousarray(array)
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
