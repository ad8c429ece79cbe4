r"""Density providers: guesses of the next step's (``nt``, ``D``) behind one small interface.

A provider *observes* the converged density of each MD step and *predicts* the density at
new atomic positions before the next SCF. Returning ``None`` keeps GPAW's own guess.

=======================  =================================================================
``gpaw``                 GPAW's own reuse (no change)
``previous``             the previous step's converged density
``extrapolate-linear``   :math:`2 n_{t-1} - n_{t-2}` (and the same for D)
``extrapolate-quadratic``:math:`3 n_{t-1} - 3 n_{t-2} + n_{t-3}`, like the predictor step of
                         plane-wave MD codes
``sad-extrapolate``      superposition of atomic densities at the new positions plus the
                         quadratically extrapolated residual :math:`n - n_\text{sad}`
                         (follows the atoms); D extrapolated quadratically
a model name or run dir  a trained model of any family (:class:`ModelProvider`, e.g.
                         ``li16-800K-sync``), loaded by :func:`ase_ldm.core.registry.load`
=======================  =================================================================

A provider with ``cold_start = True`` also guesses the first SCF of a calculation (no history),
which the GPAW hook then starts from (:func:`ase_ldm.scf.hook.start_from_density`).

Densities are numpy arrays in electrons/Angstrom^3, shape (S, N1, N2, N3); ``D_asii`` are lists
of (S, ni, ni) arrays. Until enough history exists, extrapolations fall back to lower orders.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import numpy as np
from ase import Atoms

from ..core.extrapolation import COEFFICIENTS, ORDER_NAMES, extrapolate
from ..errors import CheckpointError, InvalidInput, UnsupportedSetup

__all__ = ["UnsupportedSetup", "DensityProvider", "GPAWDefault", "Previous", "Extrapolate", "SADExtrapolate",
           "ModelProvider", "make_provider", "PROVIDER_NAMES", "Guess"]

Guess = tuple[np.ndarray, list[np.ndarray]]


PROVIDER_NAMES = ("gpaw", "previous", "extrapolate-linear", "extrapolate-quadratic", "sad-extrapolate")


class DensityProvider(Protocol):
    """What the GPAW hook and the calculator need from a provider."""

    name: str

    def observe(self, atoms: Atoms, nt_sR: np.ndarray, D_asii: list[np.ndarray]) -> None:
        """Record the converged density of the step at ``atoms``."""

    def predict(self, atoms: Atoms) -> Guess | None:
        """A guess of (nt_sR, D_asii) at the new ``atoms``, or None for GPAW's own."""

    def reset(self) -> None:
        """Forget the history (e.g. after a jump in the trajectory)."""


class GPAWDefault:
    """Keep GPAW's own guess (the reference for every comparison)."""

    name = "gpaw"

    def observe(self, atoms: Atoms, nt_sR: np.ndarray, D_asii: list[np.ndarray]) -> None:
        pass

    def predict(self, atoms: Atoms) -> Guess | None:
        return None

    def reset(self) -> None:
        pass


def _extrapolate(history: deque[Guess], order: int) -> Guess:
    """Extrapolate nt and D from ``history`` (newest first), lowering the order while it is short."""
    return extrapolate([x for x, _ in history], order), extrapolate([D for _, D in history], order)


class Extrapolate:
    """Polynomial extrapolation in time of nt and D from the last ``order + 1`` steps.

    Parameters
    ----------
    order : int
        0: previous step; 1: linear; 2: quadratic.
    """

    def __init__(self, order: int = 2) -> None:
        if order not in COEFFICIENTS:
            raise InvalidInput(f"order must be one of {sorted(COEFFICIENTS)}, got {order}")
        self.order = order
        self.name = "previous" if order == 0 else f"extrapolate-{ORDER_NAMES[order]}"
        self.history: deque[Guess] = deque(maxlen=order + 1)

    def observe(self, atoms: Atoms, nt_sR: np.ndarray, D_asii: list[np.ndarray]) -> None:
        self.history.appendleft((np.array(nt_sR, np.float64), [np.array(D, np.float64) for D in D_asii]))

    def predict(self, atoms: Atoms) -> Guess | None:
        if not self.history:
            return None
        nt, D = _extrapolate(self.history, self.order)
        return np.maximum(nt, 1e-10), D

    def reset(self) -> None:
        self.history.clear()


def Previous() -> Extrapolate:
    """The previous step's converged density."""
    return Extrapolate(order=0)


class SADExtrapolate:
    """Superposition of atomic densities at the new positions + extrapolated residual.

    Parameters
    ----------
    superposition : callable (atoms) -> (nt_sR, D_asii)
        GPAW's free-atom superposition on the calculation's grid (see
        :func:`ase_ldm.data.gpaw_io.superposition_density`).
    order : int
        Extrapolation order of the residual and of D.
    """

    name = "sad-extrapolate"

    def __init__(self, superposition: Any, order: int = 2) -> None:
        self._superposition = superposition
        self._last: tuple[bytes, np.ndarray] | None = None
        self.order = order
        self.history: deque[Guess] = deque(maxlen=order + 1)  # (nt - sad, D), newest first

    def superposition(self, atoms: Atoms) -> tuple[np.ndarray, Any]:
        """The superposition at ``atoms``; the last one is cached, since the positions a guess is
        made for are those whose converged density is observed next."""
        key = atoms.positions.tobytes() + atoms.cell[:].tobytes()
        if self._last is None or self._last[0] != key:
            self._last = (key, self._superposition(atoms)[0])
        return self._last[1], None

    def observe(self, atoms: Atoms, nt_sR: np.ndarray, D_asii: list[np.ndarray]) -> None:
        sad, _ = self.superposition(atoms)
        self.history.appendleft((np.asarray(nt_sR, np.float64) - sad, [np.array(D, np.float64) for D in D_asii]))

    def predict(self, atoms: Atoms) -> Guess | None:
        if not self.history:
            return None
        residual, D = _extrapolate(self.history, self.order)
        sad, _ = self.superposition(atoms)
        return np.maximum(sad + residual, 1e-10), D

    def reset(self) -> None:
        self.history.clear()


class ModelProvider:
    """A trained model (any family, :func:`ase_ldm.core.registry.load`) as a provider.

    It observes every converged step and predicts the density at the new positions from the
    model's history (fewer steps at the start of a run). A model that predicts no PAW matrices
    (the paper's latent model) gets them extrapolated quadratically. A model that needs no
    history (``min_history == 0``) also guesses the first SCF of a calculation (``cold_start``).
    Spin-paired calculations only; predictions are deterministic (``seed`` before each one).
    """

    def __init__(self, model: Any, cold_start: bool = True, seed: int = 0) -> None:
        self.model = model
        self.name = f"model:{model.name}"
        self.cold_start = cold_start and model.min_history == 0
        self.seed = seed
        self.D = Extrapolate(2)
        self._observed = 0
        self._grid: tuple[int, int, int] | None = None

    def observe(self, atoms: Atoms, nt_sR: np.ndarray, D_asii: list[np.ndarray]) -> None:
        if np.shape(nt_sR)[0] != 1:
            raise UnsupportedSetup("the density models are spin-paired; use an extrapolation provider for a "
                                   "spin-polarised run")
        self._grid = tuple(np.shape(nt_sR)[1:])
        D = np.stack([np.asarray(D)[0] for D in D_asii])
        self.model.observe(atoms.positions, np.asarray(nt_sR)[0], D, atoms.numbers, atoms.cell[:])
        if not self.model.predicts_D:
            self.D.observe(atoms, nt_sR, D_asii)
        self._observed += 1

    def predict(self, atoms: Atoms, grid: tuple[int, int, int] | None = None) -> Guess | None:
        grid = grid or self._grid
        if grid is None or self._observed < self.model.min_history:
            return None
        nt, D = self.model.predict(atoms.positions, atoms.numbers, atoms.cell[:], grid, seed=self.seed)
        D_asii = self.D.predict(atoms)[1] if D is None else [D_a[None] for D_a in D]
        return nt[None], D_asii

    def reset(self) -> None:
        self.model.reset()
        self.D.reset()
        self._observed = 0


def make_provider(name: str, calc: Any = None, device: str = "cpu") -> DensityProvider:
    """A provider by its command-line name; ``sad-extrapolate`` needs the GPAW calculator."""
    if name == "gpaw":
        return GPAWDefault()
    if name == "previous":
        return Previous()
    if name == "extrapolate-linear":
        return Extrapolate(1)
    if name == "extrapolate-quadratic":
        return Extrapolate(2)
    if name == "sad-extrapolate":
        if calc is None:
            raise InvalidInput("the sad-extrapolate provider needs the GPAW calculator (for its setups and grid)")
        from ..data.gpaw_io import superposition_density

        return SADExtrapolate(lambda atoms: superposition_density(calc, atoms))
    from ..core.registry import load

    try:
        return ModelProvider(load(name, device=device))
    except CheckpointError as err:
        raise InvalidInput(f"unknown provider {name!r}: not one of {', '.join(PROVIDER_NAMES)}, and not a model "
                           f"({err})") from None
