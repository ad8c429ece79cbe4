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

from .reader import DensityDataset, open_dataset
from .writer import DensityWriter

__all__ = ["DensityWriter", "DensityDataset", "open_dataset"]
