"""ase_ldm: learn and serve the dynamics of electron densities from GPAW AIMD."""

from .data import DatasetError, DensityDataset, DensityRecorder, DensityWriter, Frame, open_dataset

__version__ = "0.1.0"

__all__ = [
    "DatasetError",
    "DensityDataset",
    "DensityRecorder",
    "DensityWriter",
    "Frame",
    "open_dataset",
]
