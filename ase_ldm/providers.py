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
a model name or run dir  a trained model: the atom-synchronised model
                         (:class:`SyncProvider`, e.g. ``li16-800K-sync``) or the paper's latent
                         diffusion model (:class:`ModelProvider`)
=======================  =================================================================

A provider with ``cold_start = True`` also guesses the first SCF of a calculation (no history),
which the GPAW hook then starts from (:func:`ase_ldm.gpaw_hook.start_from_density`).

Densities are numpy arrays in electrons/Angstrom^3, shape (S, N1, N2, N3); ``D_asii`` are lists
of (S, ni, ni) arrays. Until enough history exists, extrapolations fall back to lower orders.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import numpy as np
from ase import Atoms

__all__ = ["UnsupportedSetup", "DensityProvider", "GPAWDefault", "Previous", "Extrapolate", "SADExtrapolate",
           "ModelProvider", "SyncProvider", "make_provider", "PROVIDER_NAMES", "Guess"]

Guess = tuple[np.ndarray, list[np.ndarray]]


class UnsupportedSetup(RuntimeError):
    """The GPAW set-up is one a provider or the hook cannot guide correctly."""

#: Coefficients on (x_{t-1}, x_{t-2}, ...) by extrapolation order.
COEFFICIENTS = {0: (1.0,), 1: (2.0, -1.0), 2: (3.0, -3.0, 1.0)}
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


def _combine(coefs: tuple[float, ...], items: list) -> Any:
    if isinstance(items[0], list):
        return [_combine(coefs, [it[a] for it in items]) for a in range(len(items[0]))]
    return sum(c * np.asarray(x, np.float64) for c, x in zip(coefs, items))


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
    """Combine the newest entries of ``history`` (newest first) with the coefficients of ``order``
    (lowered while the history is short)."""
    coefs = COEFFICIENTS[min(order, len(history) - 1)]
    items = list(history)[: len(coefs)]
    return _combine(coefs, [x for x, _ in items]), _combine(coefs, [D for _, D in items])


class Extrapolate:
    """Polynomial extrapolation in time of nt and D from the last ``order + 1`` steps.

    Parameters
    ----------
    order : int
        0: previous step; 1: linear; 2: quadratic.
    """

    def __init__(self, order: int = 2) -> None:
        if order not in COEFFICIENTS:
            raise ValueError(f"order must be 0, 1 or 2, got {order}")
        self.order = order
        self.name = {0: "previous", 1: "extrapolate-linear", 2: "extrapolate-quadratic"}[order]
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
    """The trained latent diffusion model as a provider (deterministic DDIM, fixed seed).

    The paper's model does not see atoms: it predicts the next density from the last two
    (via the latent dynamics); D is extrapolated quadratically. Densities are re-encoded from
    the converged GPAW density every step, so the model is always synchronised.
    """

    def __init__(self, surrogate: Any, n_steps: int = 20, seed: int = 0) -> None:
        import torch

        self.surrogate = surrogate
        self.name = f"model:{surrogate.meta.get('name', 'run')}"
        self.n_steps = n_steps
        self.seed = seed
        self.D = Extrapolate(2)
        self.nt: deque[np.ndarray] = deque(maxlen=2)
        self._torch = torch

    def observe(self, atoms: Atoms, nt_sR: np.ndarray, D_asii: list[np.ndarray]) -> None:
        self.nt.appendleft(np.asarray(nt_sR, np.float64))
        self.D.observe(atoms, nt_sR, D_asii)

    def predict(self, atoms: Atoms) -> Guess | None:
        if len(self.nt) < 2:
            return None
        if self.nt[0].shape[0] != 1:
            raise UnsupportedSetup("the density model is spin-paired and cannot guess a spin-polarised run; "
                                   "use an extrapolation provider or a spin-paired calculation")
        gen = self._torch.Generator(device=self.surrogate.device).manual_seed(self.seed)
        z = self.surrogate.encode(self.nt[1], self.nt[0])
        count = float(self.nt[0].sum() * self.surrogate.dV)
        nt = self.surrogate.decode(self.surrogate.predict_next(z, "ddim", self.n_steps, gen), count)
        D = self.D.predict(atoms)[1]
        return nt[:1], D  # (1, N1, N2, N3): the one spin channel

    def reset(self) -> None:
        self.nt.clear()
        self.D.reset()


class SyncProvider:
    """The atom-synchronised model (:class:`~ase_ldm.sync_predictor.SyncPredictor`) as a provider.

    It predicts nt and the PAW matrices at the new positions from the last three converged
    steps (fewer at the start of a run) and, with ``cold_start``, from the atoms alone for the
    first SCF. Spin-paired calculations only.
    """

    def __init__(self, predictor: Any, cold_start: bool = True) -> None:
        self.predictor = predictor
        self.name = f"sync:{predictor.meta.get('name', 'run')}"
        self.cold_start = cold_start

    def observe(self, atoms: Atoms, nt_sR: np.ndarray, D_asii: list[np.ndarray]) -> None:
        if np.shape(nt_sR)[0] != 1:
            raise UnsupportedSetup("the synchronised model is spin-paired; use an extrapolation provider for a "
                                   "spin-polarised run")
        self._grid = tuple(np.shape(nt_sR)[1:])
        D = np.stack([np.asarray(D)[0] for D in D_asii])
        self.predictor.observe(atoms.positions, np.asarray(nt_sR)[0], D, atoms.numbers, atoms.cell[:])

    def predict(self, atoms: Atoms, grid: tuple[int, int, int] | None = None) -> Guess | None:
        grid = grid or getattr(self, "_grid", None)
        if grid is None:
            return None
        nt, D = self.predictor.predict(atoms.positions, atoms.numbers, atoms.cell[:], grid)
        return nt[None], [D_a[None] for D_a in D]

    def reset(self) -> None:
        self.predictor.reset()


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
            raise ValueError("the sad-extrapolate provider needs the GPAW calculator (for its setups and grid)")
        from .data.gpaw_io import superposition_density

        return SADExtrapolate(lambda atoms: superposition_density(calc, atoms))
    from .surrogate import load_model
    from .sync_predictor import SyncPredictor, is_sync_model

    if is_sync_model(name):
        return SyncProvider(SyncPredictor.load(name, device=device))
    try:
        return ModelProvider(load_model(name, device=device))
    except ValueError as err:
        raise ValueError(f"unknown provider {name!r}: not one of {', '.join(PROVIDER_NAMES)}, and not a model "
                         f"({err})") from None
