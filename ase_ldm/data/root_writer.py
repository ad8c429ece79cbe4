"""One dataset written from one MPI rank, with every rank seeing the same state.

A recording under ``mpiexec -n N`` runs the same MD on every rank, and every rank gathers the
same converged frame. :class:`RootWriter` lets them share one :class:`DensityWriter`: rank 0
holds the file (and its lock), and the other ranks keep a mirror of what the recorder and the
recording loop ask of it (frame count, last time, last frame, stored attributes). Opening and
appending run on rank 0; their errors (file exists, disk full, frame does not fit) are raised on
every rank (:func:`ase_ldm.core.mpi.from_root`).

:func:`open_writer` picks it: a plain :class:`DensityWriter` on one rank, a :class:`RootWriter`
on several.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.mpi import from_root, world
from .schema import Frame
from .writer import DensityWriter

__all__ = ["RootWriter", "open_writer"]


def open_writer(path: str | os.PathLike, **kwargs: Any) -> DensityWriter | RootWriter:
    """A :class:`DensityWriter` (``kwargs`` as there), written from rank 0 when MPI runs several ranks."""
    if world().size > 1:
        return RootWriter(path, **kwargs)
    return DensityWriter(path, **kwargs)


class RootWriter:
    """A :class:`DensityWriter` on rank 0 and a mirror of its state on the other ranks.

    Offers what a recording needs of a writer: ``len``, ``last_time_fs``, ``stored_attrs``,
    ``last_frame()``, ``attrs``, ``append(frame)``, ``close()``, ``path``. Every rank must call
    ``append`` with the same frame at the same time, as the ranks of one MD run do.
    """

    def __init__(self, path: str | os.PathLike, **kwargs: Any) -> None:
        self.path = Path(path)
        self.name = Path(kwargs.get("name") or path)
        self._writer: DensityWriter | None = None
        self._attrs = dict(kwargs.get("attrs") or {})
        self._n, self._last_time, self._stored, self._last = from_root(self._open, path, kwargs)

    def _open(self, path: str | os.PathLike, kwargs: dict[str, Any]) -> tuple:
        self._writer = DensityWriter(path, **kwargs)
        w = self._writer
        return len(w), w.last_time_fs, w.stored_attrs, w.last_frame()

    def __len__(self) -> int:
        return self._n

    @property
    def last_time_fs(self) -> float | None:
        return self._last_time

    @property
    def stored_attrs(self) -> dict[str, Any]:
        return dict(self._stored)

    def last_frame(self) -> Frame | None:
        return self._last

    @property
    def attrs(self) -> dict[str, Any]:
        """Provenance written with the first frame (rank 0's writer's, mirrored elsewhere)."""
        return self._writer.attrs if self._writer is not None else self._attrs

    @attrs.setter
    def attrs(self, value: dict[str, Any]) -> None:
        self._attrs = dict(value)
        if self._writer is not None:
            self._writer.attrs = self._attrs

    def append(self, frame: Frame) -> None:
        """Write ``frame`` from rank 0 (:meth:`DensityWriter.append`); raises on every rank if that fails."""
        from_root(self._append, frame)
        self._n += 1
        self._last_time = float(frame.time_fs)
        self._last = frame

    def _append(self, frame: Frame) -> None:
        self._writer.append(frame)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> RootWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
