"""Low-level HDF5 helpers of the dataset store (:mod:`ase_ldm.data.writer`, :mod:`ase_ldm.data.reader`):
opening with clear errors, format checks, attribute encoding, quiet closing after failed writes,
and the check that a frame reached the disk."""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DatasetError
from .atomic import unwritable
from .schema import FORMAT_NAME, FORMAT_VERSION

DETACH_MAX_BYTES = 64 << 20  # largest file copied to memory after writes to it failed (see _detach)

#: h5py errors of a failed read or write (h5py raises RuntimeError for some failed flushes).
H5_ERRORS = (OSError, RuntimeError)


def decode_attrs(attrs: Any) -> dict[str, Any]:
    """HDF5 file attributes as Python values: bytes decoded, JSON text parsed, numpy scalars unboxed."""
    out = {}
    for key, value in attrs.items():
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
