"""The errors ase_ldm raises for bad input: one base, a few children.

Every error a user can cause (a damaged file, a model that does not fit, a GPAW set-up the
hook cannot guide, an invalid setting) is an :class:`AseLdmError`; the command line prints its
class name and message and exits with status 2. Any other exception is a bug and shows its
traceback. The children also derive from the built-in exception that fits, so ``except
ValueError`` keeps working for callers that used it.
"""

from __future__ import annotations

__all__ = ["AseLdmError", "InvalidInput", "DatasetError", "FrameOutOfRange", "CheckpointError", "ModelMismatch",
           "UnsupportedSetup"]


class AseLdmError(Exception):
    """Base of every error caused by input to ase_ldm (files, settings, atoms, GPAW set-ups)."""


class InvalidInput(AseLdmError, ValueError):
    """An argument or configuration value is out of range, of the wrong type, or inconsistent."""


class DatasetError(AseLdmError, ValueError):
    """A dataset file is missing, truncated, of another format version, or inconsistent."""


class CheckpointError(AseLdmError, ValueError):
    """A model directory is missing, damaged, of another format version, or does not fit."""


class ModelMismatch(AseLdmError, ValueError):
    """A model does not fit the atoms, grid, cell, species or timestep it is asked to serve."""


class UnsupportedSetup(AseLdmError, RuntimeError):
    """A GPAW set-up that a provider or the SCF hook cannot guide correctly."""


class FrameOutOfRange(DatasetError, IndexError):
    """A frame index outside a dataset."""
