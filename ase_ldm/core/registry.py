"""One registry from a name or a folder to a ready model behind one small protocol.

>>> import numpy as np
>>> model = load("li16-800K-sync", device="cpu")    # a shipped model by name, or a run directory
>>> model.species, model.min_history, model.max_history
((3,), 0, 3)
>>> cell = np.eye(3) * 7.27                           # Angstrom: the Li16 cell
>>> grid = model.grid_for(cell)
>>> grid
(30, 30, 30)
>>> positions = np.random.default_rng(0).random((16, 3)) * 7.27
>>> nt_R, D_aii = model.predict(positions, np.full(16, 3), cell, grid)   # no history: from the atoms
>>> nt_R.shape, len(D_aii), D_aii[0].shape                 # one (ni, ni) PAW matrix per atom
((30, 30, 30), 16, (5, 5))
>>> round(float(nt_R.sum()) * 7.27**3 / nt_R.size, 1)  # electrons of nt in the cell
18.4

With converged steps observed first (``model.observe(positions, nt_R, D_aii, numbers, cell)``),
a prediction also reads up to ``max_history`` of them.

Every consumer (the ASE calculator, the SCF providers, ``ase-ldm predict``, the packaging tool)
asks this module for a model and talks to it through :class:`DensityModel`; none of them asks
which family a model belongs to. The family is the ``kind`` entry of ``model.json``, and
:data:`FAMILIES` names the class that loads it.

Names and folders: a string without a path separator that names a shipped model
(:func:`pretrained_names`) loads the shipped model, even where a folder of the same name
exists in the working directory (write ``./NAME`` for the folder); anything else is a folder.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import CheckpointError
from .checkpoint import read_meta

__all__ = ["DensityModel", "FAMILIES", "PRETRAINED_DIR", "load", "model_dir", "pretrained_names", "family_of"]

log = logging.getLogger(__name__)

#: Where the shipped models live: one folder per name, each with model.json and its weights.
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"

#: ``kind`` in model.json -> the class (``module:Class``) whose ``from_checkpoint`` loads it.
FAMILIES = {
    "ldm": "ase_ldm.ldm.surrogate:DensitySurrogate",
    "sync": "ase_ldm.sync.predictor:SyncPredictor",
    "gldm": "ase_ldm.gldm.predictor:GridLDMPredictor",
}


@runtime_checkable
class DensityModel(Protocol):
    """What every loaded model offers. Arrays are numpy, in Angstrom and electrons/Angstrom^3.

    Attributes
    ----------
    name : str
        The pretrained name or the run directory.
    meta : dict
        The checkpoint's ``model.json``.
    species : tuple of int
        Atomic numbers the model knows.
    timestep_fs : float or None
        Time between the steps of its history (None: the model never reads history).
    max_history : int
        Converged steps a prediction reads (settable, between ``min_history`` and the trained
        history); 0 predicts from the atoms alone.
    min_history : int
        Fewest observed steps a prediction needs (0: the atoms alone suffice).
    predicts_D : bool
        Whether :meth:`predict` returns PAW matrices (else it returns None for them).
    """

    name: str
    meta: dict[str, Any]
    species: tuple[int, ...]
    timestep_fs: float | None
    max_history: int
    min_history: int
    predicts_D: bool

    def grid_for(self, cell: np.ndarray) -> tuple[int, int, int]:
        """The grid the model predicts on for ``cell`` (3, 3) Angstrom."""

    def check_setup(self, numbers: np.ndarray, cell: np.ndarray, grid: tuple[int, int, int]) -> None:
        """Raise :class:`~ase_ldm.errors.ModelMismatch` saying what to change if the model cannot serve
        these species (Na,), cell (3, 3) Angstrom and grid."""

    def reset(self) -> None:
        """Forget the observed history."""

    def seed(self, seed: int) -> None:
        """Restart the model's noise stream (deterministic models ignore it)."""

    def observe(self, positions: np.ndarray, nt_R: np.ndarray, D_aii: Sequence[np.ndarray] | None,
                numbers: np.ndarray, cell: np.ndarray, *, predicted: bool = False) -> None:
        """Add a step to the history: positions (Na, 3), spin-summed nt_R (N1, N2, N3), spin-paired
        PAW matrices D_aii (one (ni_a, ni_a) matrix per atom; an (Na, ni, ni) array when all atoms
        have the same count) or None. ``predicted`` marks the model's own last prediction (a
        closed-loop rollout) rather than a converged density."""

    def predict(self, positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray, grid: tuple[int, int, int],
                *, seed: int | None = None) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """The density nt_R (N1, N2, N3) and PAW matrices (a list of one (ni_a, ni_a) matrix per atom;
        None if the model predicts no PAW matrices) at ``positions``. ``seed`` restarts the noise
        stream first."""


def pretrained_names() -> list[str]:
    """Names of the models shipped inside the package."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "model.json").is_file())


def model_dir(name_or_path: str | os.PathLike) -> Path:
    """The folder of a shipped model name or of a run directory (see the module docstring)."""
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, str) and os.sep not in text and "/" not in text and text in pretrained_names():
        if (Path(text) / "model.json").exists():
            log.warning("%s: loading the shipped model; write ./%s for the folder of that name", text, text)
        return PRETRAINED_DIR / text
    path = Path(text)
    if (path / "model.json").is_file():
        return path
    raise CheckpointError(f"{name_or_path}: neither a run directory with model.json nor a pretrained model "
                          f"(available: {', '.join(pretrained_names()) or 'none'})")


def family_of(meta: dict[str, Any]) -> str:
    """The family of a checkpoint (``kind`` in model.json; ``ldm`` when absent, as first written)."""
    kind = meta.get("kind", "ldm")
    if not isinstance(kind, str) or kind not in FAMILIES:
        raise CheckpointError(f"model.json: unknown model kind {kind!r}; this ase_ldm knows {sorted(FAMILIES)}")
    return kind


def load(name_or_path: str | os.PathLike, device: str = "auto", *, max_history: int | None = None,
         expect: type | None = None, **options: Any) -> DensityModel:
    """Load a shipped model by name or a run directory; no pickled code is executed.

    Parameters
    ----------
    name_or_path : str or path
    device : 'auto', 'cpu' or 'cuda'
    max_history : int, optional
        Past steps a prediction reads (default: all the model was trained to read).
    expect : type, optional
        Refuse (CheckpointError) a model that does not load as this class.
    **options
        Passed to the family's loader (e.g. ``symmetry_average`` of the synchronised model).
    """
    run = model_dir(name_or_path)
    meta = read_meta(run)
    module, cls_name = FAMILIES[family_of(meta)].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    if expect is not None and not issubclass(cls, expect):
        raise CheckpointError(f"{name_or_path} is a {cls.__name__} ({meta.get('kind', 'ldm')} family), not a "
                              f"{expect.__name__}; load it with ase_ldm.load")
    model = cls.from_checkpoint(run, meta, device=device, **options)
    model.name = str(meta.get("name") or name_or_path)
    if max_history is not None:
        model.max_history = max_history
    log.info("loaded %s from %s", model.name, run)
    return model
