"""ase_ldm: learn and serve the dynamics of electron densities from GPAW AIMD.

Datasets open without importing torch; the model names below load lazily. Example::

    import ase_ldm
    with ase_ldm.open_dataset("li16.h5") as ds:
        nt = ds.nt(10)                          # (S, N1, N2, N3), electrons/Angstrom^3
    model = ase_ldm.load("li16-800K-sync")     # any family, by name or run directory

(Examples written with ``>>>`` run as doctests in the test suite; ``::`` blocks like this one
need data of your own.)
"""

from .data import DensityDataset, DensityRecorder, DensityWriter, Frame, open_dataset
from .errors import AseLdmError, CheckpointError, DatasetError, InvalidInput, ModelMismatch, UnsupportedSetup

__version__ = "0.1.0"

_LAZY = {
    "load": "ase_ldm.core.registry",
    "pretrained_names": "ase_ldm.core.registry",
    "DensityModel": "ase_ldm.core.registry",
    "DensitySurrogate": "ase_ldm.ldm.surrogate",
    "SyncPredictor": "ase_ldm.sync.predictor",
    "GridLDMPredictor": "ase_ldm.gldm.predictor",
}


def __getattr__(name: str):
    # torch-backed names load lazily: datasets open without importing torch
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "load_model":  # the name of the first releases
        return importlib.import_module("ase_ldm.core.registry").load
    if name == "load_pretrained":
        return load_pretrained
    raise AttributeError(f"module 'ase_ldm' has no attribute {name!r}")


def load_pretrained(name: str, device: str = "auto"):
    """Load a model shipped with the package by name, e.g. ``load_pretrained("li16-800K-sync")``."""
    from .core.registry import load, pretrained_names

    if name not in pretrained_names():
        raise CheckpointError(f"no pretrained model {name!r}; available: {', '.join(pretrained_names()) or 'none'}")
    return load(name, device)


__all__ = [
    "AseLdmError",
    "CheckpointError",
    "DatasetError",
    "InvalidInput",
    "ModelMismatch",
    "UnsupportedSetup",
    "DensityDataset",
    "DensityRecorder",
    "DensityWriter",
    "Frame",
    "open_dataset",
    "load",
    "load_model",
    "load_pretrained",
    "pretrained_names",
    "DensityModel",
    "DensitySurrogate",
    "SyncPredictor",
    "GridLDMPredictor",
]
