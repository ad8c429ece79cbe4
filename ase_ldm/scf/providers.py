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
``auto``, ``auto:MODEL`` :class:`AutoProvider`: every step, the candidate (``sad-extrapolate``,
                         ``extrapolate-quadratic``, and MODEL when named) whose guesses have
                         been closest to the converged densities so far
=======================  =================================================================

A provider with ``cold_start = True`` also guesses the first SCF of a calculation (no history),
which the GPAW hook then starts from (:func:`ase_ldm.scf.hook.start_from_density`).

Densities are numpy arrays in electrons/Angstrom^3, shape (S, N1, N2, N3); ``D_asii`` are lists
of (S, ni, ni) arrays. Until enough history exists, extrapolations fall back to lower orders.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Protocol

import numpy as np
from ase import Atoms

from ..core.extrapolation import COEFFICIENTS, ORDER_NAMES, extrapolate
from ..errors import AseLdmError, CheckpointError, InvalidInput, UnsupportedSetup

__all__ = ["UnsupportedSetup", "DensityProvider", "GPAWDefault", "Previous", "Extrapolate", "SADExtrapolate",
           "ModelProvider", "AutoProvider", "check_provider_name", "make_provider", "PROVIDER_NAMES", "Guess"]

Guess = tuple[np.ndarray, list[np.ndarray]]

log = logging.getLogger(__name__)


PROVIDER_NAMES = ("gpaw", "previous", "extrapolate-linear", "extrapolate-quadratic", "sad-extrapolate", "auto")


class DensityProvider(Protocol):
    """What the GPAW hook and the calculator need from a provider."""

    name: str

    def observe(self, atoms: Atoms, nt_sR: np.ndarray, D_asii: list[np.ndarray]) -> None:
        """Record the converged density of the step at ``atoms``."""

    def predict(self, atoms: Atoms, grid: tuple[int, int, int] | None = None) -> Guess | None:
        """A guess of (nt_sR, D_asii) at the new ``atoms``, or None for GPAW's own. ``grid`` is the
        calculation's grid where a provider cannot know it from history (a cold start)."""

    def reset(self) -> None:
        """Forget the history (e.g. after a jump in the trajectory)."""


class GPAWDefault:
    """Keep GPAW's own guess (the reference for every comparison)."""

    name = "gpaw"

    def observe(self, atoms: Atoms, nt_sR: np.ndarray, D_asii: list[np.ndarray]) -> None:
        pass

    def predict(self, atoms: Atoms, grid: tuple[int, int, int] | None = None) -> Guess | None:
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

    def predict(self, atoms: Atoms, grid: tuple[int, int, int] | None = None) -> Guess | None:
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

    def predict(self, atoms: Atoms, grid: tuple[int, int, int] | None = None) -> Guess | None:
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
    Predictions are deterministic (``seed`` before each one).

    The models are spin-paired. In a spin-polarised run the model serves the total density and
    PAW matrices (spins summed), and the magnetisation (up minus down, density and D) is
    extrapolated quadratically from the converged steps: each channel gets (total +- magnetisation)
    / 2, so a run without magnetisation gets half the total in each. The first SCF of a
    spin-polarised run is GPAW's own (its initial magnetic moments), not a cold start.
    """

    def __init__(self, model: Any, cold_start: bool = True, seed: int = 0) -> None:
        self.model = model
        self.name = f"model:{model.name}"
        self.cold_start = cold_start and model.min_history == 0
        self.seed = seed
        self.D = Extrapolate(2)
        self.magnetisation: deque[Guess] = deque(maxlen=3)  # (n_up - n_down, D_up - D_down), newest first
        self._observed = 0
        self._grid: tuple[int, int, int] | None = None
        self._nspins: int | None = None

    def observe(self, atoms: Atoms, nt_sR: np.ndarray, D_asii: list[np.ndarray]) -> None:
        nt_sR = np.asarray(nt_sR, np.float64)
        nspins = nt_sR.shape[0]
        if nspins not in (1, 2):
            raise UnsupportedSetup(f"{nspins} density components: the density models serve spin-paired and "
                                   "collinear spin-polarised runs; use an extrapolation provider")
        self._grid = tuple(nt_sR.shape[1:])
        D_aii = [np.asarray(D, np.float64).sum(0) for D in D_asii]  # spins summed
        self.model.observe(atoms.positions, nt_sR.sum(0), D_aii, atoms.numbers, atoms.cell[:])
        if not self.model.predicts_D:
            self.D.observe(atoms, nt_sR, D_asii)
        if nspins == 2:
            self.magnetisation.appendleft((nt_sR[0] - nt_sR[1], [np.asarray(D)[0] - np.asarray(D)[1]
                                                                  for D in D_asii]))
        self._nspins = nspins
        self._observed += 1

    def predict(self, atoms: Atoms, grid: tuple[int, int, int] | None = None) -> Guess | None:
        grid = grid or self._grid
        if grid is None or self._observed < self.model.min_history:
            return None
        if self._nspins == 2 and not self.magnetisation:  # spin-polarised, history lost: GPAW's own move
            return None
        nt, D = self.model.predict(atoms.positions, atoms.numbers, atoms.cell[:], grid, seed=self.seed)
        if D is None:
            D_asii = self.D.predict(atoms)[1]
            D = [np.asarray(D_sii).sum(0) for D_sii in D_asii]
        if self._nspins != 2:
            return nt[None], [np.asarray(D_a)[None] for D_a in D]
        m, Dm = _extrapolate(self.magnetisation, 2)
        nt_sR = np.maximum(np.stack([nt + m, nt - m]) / 2, 1e-10)
        return nt_sR, [np.stack([D_a + Dm_a, D_a - Dm_a]) / 2 for D_a, Dm_a in zip(D, Dm)]

    def reset(self) -> None:
        """Forget the history; the spin count of the run is kept (a spin-polarised run then gets
        GPAW's own move until a step converges again)."""
        self.model.reset()
        self.D.reset()
        self.magnetisation.clear()
        self._observed = 0


class AutoProvider:
    """Serve the guess of whichever candidate has been closest to the converged densities.

    Every step each candidate guesses (so each can be scored), and the guess of the one with the
    best running score is served. The score is an exponential moving average (weight ``decay``
    on the past) of the relative L1 distance between a candidate's guess and the converged
    density GPAW then found: it costs the L1 of two arrays per candidate and step. A candidate
    that cannot guess yet (too little history) is passed over. On frames outside a model's
    experience the physics candidates therefore take over, and a run is not slower (in
    iterations) than the best of them. Cold starts are left to GPAW.

    Parameters
    ----------
    candidates : list of providers
        In order of preference while no scores exist.
    decay : float
        Weight of the past in the running score (0: the last step only).
    """

    cold_start = False

    def __init__(self, candidates: list[DensityProvider], decay: float = 0.5) -> None:
        if not candidates:
            raise InvalidInput("the auto provider needs at least one candidate")
        if len({c.name for c in candidates}) != len(candidates):
            raise InvalidInput(f"the auto provider's candidates must differ: {[c.name for c in candidates]}")
        if not 0 <= decay < 1:
            raise InvalidInput(f"decay must be in [0, 1), got {decay}")
        self.candidates = list(candidates)
        self.name = "auto(" + ", ".join(c.name for c in self.candidates) + ")"
        self.decay = decay
        self.scores: dict[str, float] = {}
        #: the candidate served at each step (its name), for reports
        self.served: list[str | None] = []
        self._pending: dict[str, np.ndarray] = {}  # each candidate's last guess of nt

    def _drop(self, c: DensityProvider, err: AseLdmError) -> None:
        """A candidate that cannot serve this run (another grid spacing, spin, ...) leaves it."""
        log.warning("auto: %s dropped as a candidate (%s: %s)", c.name, type(err).__name__, err)
        self.candidates.remove(c)
        self._pending.pop(c.name, None)
        self.scores.pop(c.name, None)

    def observe(self, atoms: Atoms, nt_sR: np.ndarray, D_asii: list[np.ndarray]) -> None:
        nt = np.asarray(nt_sR, np.float64)
        norm = float(np.abs(nt).sum())
        for c in list(self.candidates):
            guess = self._pending.get(c.name)
            if guess is not None and guess.shape == nt.shape and norm > 0:
                err = float(np.abs(guess - nt).sum()) / norm
                if not np.isfinite(err):
                    err = np.inf  # a broken guess must never look best
                old = self.scores.get(c.name)
                self.scores[c.name] = err if old is None else self.decay * old + (1 - self.decay) * err
            try:
                c.observe(atoms, nt_sR, D_asii)
            except AseLdmError as e:
                self._drop(c, e)
        self._pending.clear()

    def predict(self, atoms: Atoms, grid: tuple[int, int, int] | None = None) -> Guess | None:
        guesses = {}
        for c in list(self.candidates):
            try:
                g = c.predict(atoms)  # auto never cold-starts: in MD a provider knows its grid
            except AseLdmError as e:
                self._drop(c, e)
                continue
            if g is not None and np.all(np.isfinite(g[0])):
                guesses[c.name] = g
                self._pending[c.name] = np.asarray(g[0], np.float64)
        if not guesses:
            self.served.append(None)
            return None
        order = {c.name: i for i, c in enumerate(self.candidates)}
        best = min(guesses, key=lambda n: (self.scores.get(n, np.inf), order[n]))
        self.served.append(best)
        return guesses[best]

    def reset(self) -> None:
        for c in self.candidates:
            c.reset()
        self._pending.clear()


def check_provider_name(name: str) -> None:
    """Refuse (InvalidInput) a name that is neither a provider nor a model, before any work."""
    from ..core.checkpoint import read_meta
    from ..core.registry import model_dir

    if not name:
        raise InvalidInput(f"no provider name given; use one of {', '.join(PROVIDER_NAMES)}, auto:MODEL or a model")
    model = name.partition(":")[2] if name.startswith("auto:") else (None if name in PROVIDER_NAMES else name)
    if name.startswith("auto:") and (not model or model in PROVIDER_NAMES or model.startswith("auto")):
        raise InvalidInput(f"{name!r}: auto:MODEL takes a trained model (pretrained name or run directory); the "
                           "physics candidates are always included")
    if model:
        try:
            read_meta(model_dir(model))
        except CheckpointError as err:
            raise InvalidInput(f"unknown provider {name!r}: not one of {', '.join(PROVIDER_NAMES)}, auto:MODEL, "
                               f"or a model ({err})") from None


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
    if name == "auto" or name.startswith("auto:"):
        check_provider_name(name)
        model = name.partition(":")[2]
        physics = [make_provider("sad-extrapolate", calc), Extrapolate(2)]
        return AutoProvider(([make_provider(model, calc, device)] if model else []) + physics)
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
