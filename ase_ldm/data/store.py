"""Write and read density-trajectory HDF5 files (schema in :mod:`ase_ldm.data.schema`).

Crash safety: each frame's arrays are written first and ``time_fs`` last, then the file is
flushed, synced to disk and checked (the frame's data must have reached the file). A write
that fails (disk full, quota, file-size limit, I/O error) is a :class:`DatasetError`, and the
frames written before it stay readable. ``len(time_fs)`` is the number of complete frames; a
frame interrupted half way (a longer ``nt`` than ``time_fs``) is ignored by readers and
trimmed when the file is re-opened for appending.

One writer at a time: a :class:`DensityWriter` holds an advisory lock on ``PATH.lock`` (see
:mod:`ase_ldm.data.atomic`), and HDF5 itself locks a file open for writing, so a reader
started meanwhile is told that another process is writing it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

try:
    import resource
except ImportError:  # pragma: no cover - not POSIX
    resource = None  # type: ignore[assignment]

from ..errors import DatasetError, FrameOutOfRange, InvalidInput
from .atomic import OutputLock, unwritable
from .schema import FORMAT_NAME, FORMAT_VERSION, OPTIONAL_PER_FRAME, UNITS, Frame

__all__ = ["DensityWriter", "DensityDataset", "open_dataset"]

log = logging.getLogger(__name__)

CELL_TOLERANCE = 1e-6  # Angstrom
TIME_TOLERANCE = 1e-6  # fs
ROOM_MARGIN = 1 << 20  # bytes of HDF5 metadata a frame may add besides its chunks
DETACH_MAX_BYTES = 64 << 20  # largest file copied to memory after writes to it failed (see _detach)


#: h5py errors of a failed read or write (h5py raises RuntimeError for some failed flushes).
H5_ERRORS = (OSError, RuntimeError)


def _is_lock_error(err: OSError) -> bool:
    return err.errno in (errno.EAGAIN, errno.EWOULDBLOCK) or "unable to lock file" in str(err)


def _h5open(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except OSError as err:
        raise _open_error(path, mode, err) from None


def _open_error(path: Path, mode: str, err: OSError) -> DatasetError:
    """A :class:`DatasetError` saying why ``h5py.File(path, mode)`` failed and what to do."""
    if _is_lock_error(err):
        if mode == "r":
            return DatasetError(
                f"{path}: another process is writing it (the file is locked, e.g. by a running 'ase-ldm "
                "record'); wait until it has finished, or read it anyway with HDF5_USE_FILE_LOCKING=FALSE in the "
                "environment (frames are flushed one by one; if a read catches a frame being written, try again)")
        return DatasetError(
            f"{path}: another process has it open (the file is locked); wait until it has finished, or write to "
            "another file")
    if mode != "r" and (isinstance(err, PermissionError) or err.errno in (errno.EROFS, errno.ENOSPC)):
        return unwritable(path, err)
    if isinstance(err, FileNotFoundError):
        if mode == "r" or mode == "r+":
            return DatasetError(f"{path}: no such file")
        return unwritable(path, err)
    if isinstance(err, PermissionError):
        return DatasetError(f"{path}: permission denied; ask its owner for read access or copy it")
    return DatasetError(
        f"{path}: cannot open as HDF5 ({err}). The file is truncated, corrupt, or not a "
        "dataset written by ase_ldm; re-create it with 'ase-ldm record' or 'ase-ldm import'")


def _check_density(path: Path, nt: np.ndarray, frames: range | list[int]) -> np.ndarray:
    """Return ``nt`` (frames along axis 0, indices ``frames``); refuse a frame that is all zeros.

    A stored density is positive everywhere (checked when written), so an all-zero frame is
    data HDF5 never found on disk (its fill value): a file damaged while it was written.
    """
    if len(nt) and not nt.reshape(len(nt), -1).any(axis=1).all():
        bad = frames[int(np.argmin(nt.reshape(len(nt), -1).any(axis=1)))]
        raise DatasetError(
            f"{path}: frame {bad} holds no density data (all zeros); the file is damaged (e.g. a disk that filled up "
            "while it was written). Re-create it, or restore a good copy")
    return nt


def _damaged(path: Path, what: str, err: BaseException) -> DatasetError:
    return DatasetError(
        f"{path}: cannot read {what} ({err}); the file is damaged (e.g. corrupt compressed data or a "
        "copy cut short). Re-create it with 'ase-ldm record' or 'ase-ldm import', or restore a good copy")


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
        for name in ("velocities", "energy", "forces", "scf_iterations"):
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


@contextmanager
def _quiet_destructors() -> Iterator[None]:
    """Silence errors that h5py destructors print (via ``sys.excepthook`` and ``sys.unraisablehook``).

    After a failed write HDF5 retries it when the objects are released; h5py prints that failure
    as an "exception ignored" in a destructor, which would only repeat the error already raised.
    """
    hooks = sys.excepthook, sys.unraisablehook
    sys.excepthook = sys.unraisablehook = lambda *args: None
    try:
        yield
    finally:
        sys.excepthook, sys.unraisablehook = hooks


def _frame_bytes_bound(frame: Frame) -> int:
    """Most bytes one frame can add to a file: its density uncompressed, and a new chunk for every other array."""
    sizes = [np.asarray(a).size for a in (frame.positions, frame.cell, frame.velocities, frame.forces, frame.energy,
                                          frame.scf_iterations, frame.time_fs) if a is not None]
    if frame.D_asii is not None:
        sizes.append(sum(np.asarray(D).size for D in frame.D_asii))
    chunk = 4096 * 8  # the largest chunk of the small per-frame arrays, bytes
    return int(np.asarray(frame.nt_sR).size * 4 * 1.01) + sum(max(chunk, size * 8) for size in sizes)


def _close_quietly(f: h5py.File, datasets: dict[str, h5py.Dataset] | None = None) -> None:
    """Drop ``datasets`` and close ``f`` after a failed write, without raising or printing the same error again.

    If HDF5 cannot close the file (its last writes still fail), the file is detached (see
    :func:`_detach`) and the close is repeated.
    """
    with _quiet_destructors():
        fd = _vfd_handle(f)  # before closing: asking a half-closed file crashes HDF5
        try:
            if datasets is not None:
                datasets.clear()
            f.close()
            return
        except H5_ERRORS:
            pass
        if fd is not None and _detach(fd):
            try:
                f.close()
            except H5_ERRORS:
                pass


def _detach(fd: int) -> bool:
    """Point HDF5's file descriptor ``fd`` at an in-memory copy of the file, so further writes leave the file alone.

    Used when writes keep failing after a failed frame: HDF5 would otherwise retry them when
    the file is closed, fail again, keep objects open, and crash at interpreter exit. Only
    files up to DETACH_MAX_BYTES are copied (this happens when not even the header fits).
    """
    if not hasattr(os, "memfd_create"):
        return False
    try:
        size = os.fstat(fd).st_size
        if size > DETACH_MAX_BYTES:
            return False
        spare = os.memfd_create("ase_ldm-abandoned")
    except OSError:
        return False
    try:
        offset = 0
        while offset < size:
            block = os.pread(fd, min(1 << 20, size - offset), offset)
            if not block:
                break
            os.pwrite(spare, block, offset)
            offset += len(block)
        os.dup2(spare, fd)
    except OSError:
        return False
    finally:
        os.close(spare)
    return True


def _vfd_handle(f: h5py.File) -> int | None:
    """The POSIX file descriptor under ``f``, or None for drivers without one."""
    try:
        fd = f.id.get_vfd_handle()
    except (ValueError, TypeError, *H5_ERRORS):
        return None
    return fd if isinstance(fd, int) else None


def _h5_reason(err: BaseException) -> str:
    """A short reason for an h5py error: the system error when HDF5 names one, else the first line."""
    match = re.search(r"errno = (\d+)", str(err))
    if match:
        code = int(match.group(1))
        return f"{os.strerror(code)} (errno {code})"
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _verify_on_disk(f: h5py.File, datasets: Mapping[str, h5py.Dataset], index: int, sync: bool = True) -> None:
    """Check that frame ``index`` of every per-frame array reached the (flushed) file; ``sync`` first.

    A write the file system silently dropped leaves the chunk unallocated, the file shorter
    than the chunk's end, or a hole (zeros) where the chunk should start; each is an OSError.
    """
    fd = _vfd_handle(f)
    if fd is None:  # a driver without a file descriptor: nothing to check
        return
    if sync:
        os.fsync(fd)
    size = os.fstat(fd).st_size
    for name, ds in datasets.items():
        start = index // ds.chunks[0] * ds.chunks[0]
        try:
            info = ds.id.get_chunk_info_by_coord((start,) + (0,) * (ds.ndim - 1))
        except (AttributeError, NotImplementedError):  # HDF5 < 1.10.5: the sync is all we can check
            return
        if info.byte_offset is None or not info.size or info.byte_offset + info.size > size:
            raise OSError(errno.EIO, f"frame data of {name!r} did not reach the file")
        if name == "nt" and not any(os.pread(fd, min(16, info.size), info.byte_offset)):
            raise OSError(errno.EIO, "frame data of 'nt' read back from disk as zeros")


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
