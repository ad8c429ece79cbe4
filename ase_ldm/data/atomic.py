"""Write outputs atomically and one writer at a time.

An output ``NAME`` is built under a unique temporary name in its own directory
(``NAME.<random>.part``) and renamed over ``NAME`` only when complete, so a failure or a kill
leaves no partial output and never touches an existing file, and two writers never share a
temporary file. An advisory lock (:func:`fcntl.flock`) on the sibling ``NAME.lock`` refuses a
second process that wants to write the same output while the first one is still at it.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DatasetError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no advisory locks
    fcntl = None  # type: ignore[assignment]

__all__ = ["write_text_atomic", "OutputLock", "atomic_output", "temporary_path", "unwritable"]

LOCK_SUFFIX = ".lock"
PART_SUFFIX = ".part"


def unwritable(path: Path, err: OSError) -> DatasetError:
    """The error for an output that cannot be created: says why and what to do."""
    folder = path.parent if str(path.parent) else Path(".")
    if err.errno == errno.ENOENT:
        what = f"folder {folder} does not exist; create it or choose another output"
    elif err.errno == errno.EROFS:
        what = f"folder {folder} is on a read-only file system; choose a writable location for the output"
    elif err.errno in (errno.EACCES, errno.EPERM):
        what = (f"permission denied (folder {folder} or the file is not writable); choose a writable location "
                "for the output")
    elif err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        what = f"{err.strerror}; free disk space (or raise the quota) and run again"
    else:
        what = f"{err.strerror or err}; check the output path"
    return DatasetError(f"cannot write {path}: {what}")


class OutputLock:
    """Advisory lock on ``PATH.lock``, held by one process (or one writer) at a time.

    Acquiring never waits: a held lock is an error saying another process is writing
    ``path``. The lock file is removed on release; a lock file left by a killed process does
    not block anyone (the kernel drops its lock with the process).

    Parameters
    ----------
    path : Path
        The output the lock protects (not the lock file itself).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + LOCK_SUFFIX)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; raise :class:`DatasetError` if another writer holds it."""
        if fcntl is None or self._fd is not None:
            return
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            except OSError as err:
                raise unwritable(self.path, err) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise DatasetError(
                        f"{self.path}: another process is writing it (lock {self.lock_path.name} is held); wait "
                        "until it has finished, or write to another output") from None
                raise unwritable(self.path, err) from None
            if self._same_file(fd):
                self._fd = fd
                return
            os.close(fd)  # the holder removed the lock file as we opened it: take a fresh one

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file and drop the lock (removing first, so no one locks a stale file)."""
        if self._fd is None:
            return
        try:
            self.lock_path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)  # not unlinked: another writer may hold a lock on a new file of that name


def temporary_path(path: str | os.PathLike) -> Path:
    """Create an empty, uniquely named ``NAME.<random>.part`` next to ``path`` and return its name."""
    path = Path(path)
    for _ in range(100):
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as err:
            raise unwritable(path, err) from None
        os.close(fd)
        return tmp
    raise DatasetError(f"cannot find a free temporary name next to {path}; remove stale {path.name}.*.part files")


@contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Lock ``path``, yield a fresh temporary file next to it, and rename that over ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : path
        The output.
    overwrite : bool
        Replace an existing ``path``. Without it an existing output is refused (checked
        while holding the lock, so a concurrent writer cannot slip in between).

    Raises
    ------
    DatasetError
        Another process writes ``path``, ``path`` exists (without ``overwrite``) or is a
        folder, or its folder is missing or not writable.
    """
    path = Path(path)
    with OutputLock(path):
        if path.is_dir():
            raise DatasetError(f"{path} is a folder; give a file name for the output")
        if path.exists() and not overwrite:
            raise DatasetError(f"{path} exists; pass --force to replace it")
        tmp = temporary_path(path)
        try:
            yield tmp
            try:
                os.replace(tmp, path)
            except OSError as err:
                raise unwritable(path, err) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a unique temporary file next to ``path``, sync it, and rename it over
    ``path``: readers see the old or the new file, never a part (no lock: for files one process owns)."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "w") as fd:
            fd.write(text)
            fd.flush()
            os.fsync(fd.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise unwritable(path, err) from None
