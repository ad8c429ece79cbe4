"""Density-trajectory datasets: schema, HDF5 store, GPAW recorder, importers.

GPAW is imported only by :mod:`ase_ldm.data.gpaw_io` and only when a GPAW object is read,
so datasets can be opened (and models trained) where GPAW is not installed.
"""

from ..errors import DatasetError
from .importers import export_cube, frames_from_cubes, frames_from_gpw, frames_from_npz, write_frames
from .recorder import DensityRecorder
from .schema import FORMAT_VERSION, UNITS, Frame
from .store import DensityDataset, DensityWriter, open_dataset

__all__ = [
    "FORMAT_VERSION",
    "UNITS",
    "DatasetError",
    "Frame",
    "DensityDataset",
    "DensityWriter",
    "DensityRecorder",
    "open_dataset",
    "frames_from_cubes",
    "frames_from_gpw",
    "frames_from_npz",
    "write_frames",
    "export_cube",
]
