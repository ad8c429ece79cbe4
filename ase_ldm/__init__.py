"""ase_ldm: learn and serve the dynamics of electron densities from GPAW AIMD."""

from .data import DatasetError, DensityDataset, DensityRecorder, DensityWriter, Frame, open_dataset


def __getattr__(name: str):
    # torch-backed names load lazily: datasets open without importing torch
    if name in ("load_model", "load_pretrained", "DensitySurrogate", "pretrained_names"):
        from . import surrogate

        return getattr(surrogate, name)
    if name == "SyncPredictor":
        from .sync_predictor import SyncPredictor

        return SyncPredictor
    raise AttributeError(f"module 'ase_ldm' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "DatasetError",
    "DensityDataset",
    "DensityRecorder",
    "DensityWriter",
    "Frame",
    "open_dataset",
    "load_model",
    "load_pretrained",
    "DensitySurrogate",
    "pretrained_names",
    "SyncPredictor",
]
