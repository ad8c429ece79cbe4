"""Append frames to a density-trajectory HDF5 file, one flushed and verified frame at a time
(schema: :mod:`ase_ldm.data.schema`; crash safety and locking: :mod:`ase_ldm.data.store`)."""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

try:
    import resource
except ImportError:  # pragma: no cover - not POSIX
    resource = None  # type: ignore[assignment]

from ..errors import DatasetError
from .atomic import OutputLock
from .hdf5 import (
    H5_ERRORS,
    _check_format,
    _close_quietly,
    _detach,
    _h5_reason,
    _h5open,
    _json_attr,
    _quiet_destructors,
    _verify_on_disk,
    _vfd_handle,
    decode_attrs,
)
from .reader import DensityDataset, _formula
from .schema import FORMAT_NAME, FORMAT_VERSION, OPTIONAL_PER_FRAME, UNITS, Frame

__all__ = ["DensityWriter"]

log = logging.getLogger(__name__)

CELL_TOLERANCE = 1e-6  # Angstrom
TIME_TOLERANCE = 1e-6  # fs
ROOM_MARGIN = 1 << 20  # bytes of HDF5 metadata a frame may add besides its chunks


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
    lock : bool
        Hold the advisory lock ``PATH.lock`` while open, so a second writer of the same file
        is refused. Off for a private temporary file (whose final name the caller locks).
    name : str or Path, optional
        The name messages give the file (default ``path``), e.g. the final name of a
        temporary file.

    Raises
    ------
    DatasetError
        Another process writes ``path``; ``path`` exists (without ``append``/``overwrite``),
        is damaged or does not fit; or a frame cannot be written (disk full, read-only, ...).
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
        lock: bool = True,
        name: str | os.PathLike | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = Path(name) if name is not None else self.path
        self.attrs = dict(attrs or {})
        self.variable_cell = variable_cell
        self.compression = compression
        self._f: h5py.File | None = None
        self._ds: dict[str, h5py.Dataset] = {}
        self._failed: str | None = None
        self._scratch: Any = None  # unnamed file used to check for room before each frame
        self._lock = OutputLock(self.path) if lock else None
        if self._lock is not None:
            self._lock.acquire()
        try:
            self._open(append, overwrite)
        except BaseException:
            self.close()
            raise
        self._overwrite = overwrite and not append

    def _open(self, append: bool, overwrite: bool) -> None:
        if self.path.exists():
            if append:
                self._open_existing()
            elif not overwrite:
                raise DatasetError(
                    f"{self.path} exists; continue it with append (--append) or replace it "
                    "with overwrite (--force)")
        elif append:
            log.info("%s does not exist yet; starting a new trajectory", self.path)

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
                if ds.maxshape and ds.maxshape[0] is None:
                    if len(ds) > n:
                        log.warning("%s: dropping an incomplete frame from %s", self.path, name)
                        ds.resize(n, axis=0)
                    self._ds[name] = ds
            f.flush()
        except H5_ERRORS as err:
            _close_quietly(f, self._ds)
            raise DatasetError(f"{self.path}: cannot prepare the file for appending ({_h5_reason(err)}); the file is "
                               "damaged or the disk is full; free space, or continue into a new file") from None
        except BaseException:
            self._ds.clear()
            f.close()
            raise
        self._f = f

    def _create(self, f: h5py.File, frame: Frame) -> None:
        """Write the file header and create the (empty) per-frame arrays for frames like ``frame``."""
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
            ("nt_spread", (), np.float64),
        ):
            if getattr(frame, name) is not None:
                per_frame[name] = (shape, dtype)
        for name, (shape, dtype) in per_frame.items():
            big = name == "nt"
            self._ds[name] = f.create_dataset(
                name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                chunks=(1, *shape) if big else (max(1, 4096 // max(1, int(np.prod(shape)))), *shape),
                compression=self.compression if big else None, shuffle=big)
            f[name].attrs["units"] = UNITS[name]

    # -- appending -----------------------------------------------------------------------
    def __len__(self) -> int:
        return 0 if self._f is None else len(self._f["time_fs"])

    @property
    def last_time_fs(self) -> float | None:
        """Time of the last complete frame, or None for an empty trajectory."""
        n = len(self)
        return None if n == 0 else float(self._f["time_fs"][n - 1])

    @property
    def stored_attrs(self) -> dict[str, Any]:
        """The attributes of the file being appended to, decoded (empty for a new file)."""
        return {} if self._f is None else decode_attrs(self._f.attrs)

    def last_frame(self) -> Frame | None:
        """The last complete frame (e.g. to continue MD from it), or None."""
        if len(self) == 0:
            return None
        return DensityDataset._frame_from_file(self._f, len(self) - 1, self.path)

    def append(self, frame: Frame) -> None:
        """Validate ``frame`` against the file and write it; it counts once it is on disk.

        The file is flushed and synced after the frame, and the frame's data are checked to
        have reached the file.

        Raises
        ------
        DatasetError
            The frame does not fit the file, or writing it failed (disk full, file-size limit,
            I/O error). After a failed write the writer is closed; the frames before stay
            readable (continue with ``append=True`` once the cause is fixed).
        """
        if self._failed is not None:
            raise DatasetError(f"{self.name}: writing failed earlier ({self._failed}); no more frames are written")
        index = len(self)
        frame.validate(where=f"{self.name} frame {index}")
        if self._f is not None:
            self._check_compatible(frame, index)
        self._check_room(frame, index)
        if self._f is None:
            if self.path.exists() and not self._overwrite:
                raise DatasetError(f"{self.name} appeared while writing; refusing to overwrite it")
            self._f = _h5open(self.path, "w")
            self._guarded(index, self._create, self._f, frame)
        self._guarded(index, self._write, frame, index)
        log.info("wrote frame %d (t = %.3f fs) to %s", index, frame.time_fs, self.name)

    def _guarded(self, index: int, func: Any, *args: Any) -> None:
        """Run ``func(*args)``; turn an HDF5 or disk error into a :class:`DatasetError` and close the file.

        The error is raised outside the ``except`` block, so it holds no reference to the failed
        HDF5 objects (released later, they would report the failure again, or crash at exit).
        """
        failure: BaseException | None = None
        try:
            func(*args)
        except H5_ERRORS as err:
            failure = err  # kept past the except block, to be released quietly below
        if failure is None:
            return
        with _quiet_destructors():
            self._failed = _h5_reason(failure)
            failure = None  # its traceback's frames may hold HDF5 objects
            self._abandon(index)
        kept = f"frames 0..{index - 1} were written before it" if index else "no frame was written"
        raise DatasetError(
            f"{self.name}: writing frame {index} failed ({self._failed}); {kept}. The disk may be full, over quota "
            "or read-only: free space and run again (a recording can continue with --append)")

    def _check_room(self, frame: Frame, index: int) -> None:
        """Refuse frame ``index`` before writing any of it when the disk, quota or ``ulimit -f`` cannot take it.

        HDF5 files are not journaled: a write that fails half way can leave the file unreadable,
        so a frame is only started once the file system has granted room for its largest
        possible size (each array may start a new chunk of up to 4096 values, uncompressed in
        the worst case): that many bytes are allocated in an unnamed scratch file next to the
        output and released again.
        """
        need = ROOM_MARGIN + _frame_bytes_bound(frame)
        advice = "the frames written so far are intact; free space and run again (a recording can continue " \
                 "with --append)"
        size = os.path.getsize(self.path) if self.path.exists() else 0
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0] if resource is not None else -1
        if limit not in (-1, getattr(resource, "RLIM_INFINITY", -1)) and size + need > limit:
            raise DatasetError(f"{self.name}: file-size limit (ulimit -f) of {limit / 1e6:.1f} MB reached, frame "
                               f"{index} needs up to {need / 1e6:.1f} MB more; {advice}")
        err = self._reserve(need)
        if err is not None:
            raise DatasetError(f"{self.name}: no room for frame {index} ({err}; it needs up to {need / 1e6:.1f} MB "
                               f"in {self.path.parent}); {advice}")

    def _reserve(self, need: int) -> str | None:
        """Ask the file system for ``need`` bytes next to the file; the reason it refuses, or None."""
        folder = self.path.parent
        try:
            if self._scratch is None:
                self._scratch = tempfile.TemporaryFile(dir=folder)
            fd = self._scratch.fileno()
            try:
                os.posix_fallocate(fd, 0, need)
            finally:
                os.ftruncate(fd, 0)
        except AttributeError:  # no posix_fallocate on this system
            pass
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                return "disk full" if err.errno == errno.ENOSPC else "disk quota exceeded"
            # no scratch file or no fallocate here: compare with the free space instead
        try:
            st = os.statvfs(folder)
        except OSError:
            return None
        free = st.f_bavail * st.f_frsize
        return f"disk full: {free / 1e6:.1f} MB free" if free < need else None

    def _write(self, frame: Frame, index: int) -> None:
        """Write and check the frame's arrays; then ``time_fs``, which makes the frame count, and sync the file."""
        values: dict[str, Any] = {
            "nt": frame.nt_sR,
            "positions": frame.positions,
            "cell": frame.cell,
        }
        if "D" in self._ds:
            values["D"] = np.concatenate([np.asarray(D).reshape(frame.nspins, -1) for D in frame.D_asii], axis=1)
        for name in ("velocities", "energy", "forces", "scf_iterations", "nt_spread"):
            if name in self._ds:
                values[name] = getattr(frame, name)
        for name, value in values.items():
            self._ds[name].resize(index + 1, axis=0)
            self._ds[name][index] = value
        self._f.flush()
        _verify_on_disk(self._f, {name: self._ds[name] for name in values}, index, sync=False)
        times = self._ds["time_fs"]
        times.resize(index + 1, axis=0)
        times[index] = frame.time_fs
        if index == 1 and "frame_interval_fs" not in self._f.attrs:
            self._f.attrs["frame_interval_fs"] = float(frame.time_fs - times[0])
        self._f.flush()
        _verify_on_disk(self._f, {"time_fs": times}, index)

    def _abandon(self, index: int) -> None:
        """Close the file after frame ``index`` failed, so that it counts ``index`` frames; ignore further errors.

        Shrinking the arrays back to ``index`` frames also drops the failed frame's unwritten data
        from HDF5's cache, so closing does not retry (and fail) to write it.
        """
        if self._f is not None:
            try:
                for ds in self._ds.values():
                    if len(ds) > index:
                        ds.resize(index, axis=0)
                self._f.flush()
            except H5_ERRORS:  # still failing: write nothing more to the file
                fd = _vfd_handle(self._f)
                if fd is not None:
                    _detach(fd)
            _close_quietly(self._f, self._ds)
            self._f = None
        self._ds.clear()

    def _check_compatible(self, frame: Frame, index: int) -> None:
        f = self._f
        where = f"{self.name} frame {index}"
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
        """Close the file (frames are on disk already) and release the lock."""
        try:
            if self._f is not None:
                f, self._f = self._f, None
                self._ds.clear()
                try:
                    f.close()
                except H5_ERRORS as err:
                    raise DatasetError(f"{self.name}: closing the file failed ({_h5_reason(err)}); the disk may be "
                                       "full. Check the file with 'ase-ldm info'") from None
        finally:
            if self._scratch is not None:
                self._scratch.close()
                self._scratch = None
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> DensityWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _frame_bytes_bound(frame: Frame) -> int:
    """Most bytes one frame can add to a file: its density uncompressed, and a new chunk for every other array."""
    sizes = [np.asarray(a).size for a in (frame.positions, frame.cell, frame.velocities, frame.forces, frame.energy,
                                          frame.scf_iterations, frame.nt_spread, frame.time_fs) if a is not None]
    if frame.D_asii is not None:
        sizes.append(sum(np.asarray(D).size for D in frame.D_asii))
    chunk = 4096 * 8  # the largest chunk of the small per-frame arrays, bytes
    return int(np.asarray(frame.nt_sR).size * 4 * 1.01) + sum(max(chunk, size * 8) for size in sizes)
