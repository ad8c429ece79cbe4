"""An ASE calculator that serves an ML-predicted pseudo-density at every MD step.

Example::

    calc = DensityCalculator("li16-800K", calc=GPAW(...), timestep_fs=2.0, resync_every=10)
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, 2 * units.fs)
    dyn.attach(lambda: densities.append(calc.get_pseudo_density()))

Energy, forces and stress come from the wrapped calculator (any ASE calculator, GPAW
included); the density comes from the model. The model advances one step whenever the atoms
have moved by one MD step (``stride`` MD steps per model step when the MD timestep is a
fraction of the model's). Its state is (re)synchronised from a real density: explicitly with
:meth:`DensityCalculator.synchronize`, or from the wrapped GPAW calculator's own converged
density at the first step and then every ``resync_every`` model steps.

Densities are the smooth pseudo-density ``nt`` (electrons/Angstrom^3, no compensation
charges: the old-GPAW convention of ``get_pseudo_density()``; new GPAW's adds compensation
charges).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, CalculatorSetupError, PropertyNotImplementedError, all_changes

from .core.fourier import fourier_interpolate
from .errors import AseLdmError, InvalidInput, ModelMismatch

__all__ = ["DensityCalculator", "CalculatorMismatch", "ModelMismatch"]


class CalculatorMismatch(ModelMismatch, CalculatorSetupError):
    """The calculator's refusal: its model does not fit these atoms or this MD (an ASE
    :class:`~ase.calculators.calculator.CalculatorSetupError` and an ase_ldm
    :class:`~ase_ldm.errors.ModelMismatch`)."""


class DensityCalculator(Calculator):
    """ASE calculator wrapping a trained density model and, optionally, a force calculator.

    The model comes from :func:`ase_ldm.core.registry.load` and is used through its protocol
    only. A model that needs no history (``min_history == 0``, e.g. ``"li16-800K-sync"``)
    serves the density of each step's atoms alone by default: no synchronisation, no drift, and
    any cell its grid spacing fits (:meth:`~ase_ldm.core.registry.DensityModel.grid_for`). A model
    that needs history (the paper's ``"li16-800K"``) is synchronised from real densities and then
    advances on its own predictions, one model step per ``stride`` MD steps.

    Parameters
    ----------
    model : str or DensityModel
        A pretrained name, a run directory, or a loaded model.
    calc : ASE calculator, optional
        Supplies energy, forces and stress. A GPAW calculator can also synchronise the model.
    timestep_fs : float, optional
        The MD timestep. For a model that reads history it is checked against the model's:
        ``timestep_fs * stride`` must equal it. Default: the model's timestep.
    stride : int
        MD steps per model step.
    history : int, optional
        Past steps a prediction reads (default: the fewest the model needs).
    resync_every : int
        Re-synchronise from the wrapped GPAW calculator's density every this many model steps
        (0: only at the first step).
    sampler, sampler_steps, seed : str, int, int
        For generative models: DDIM (deterministic, default) or DDPM, its steps, the noise seed.
    samples : int
        For models with samples (the grid-latent diffusion family): draw this many samples at
        every model step (0: none) and serve their calibrated per-voxel standard deviation as the
        ``pseudo_density_std`` result, and their relative spread as
        :meth:`get_density_uncertainty`. The density served stays the model's mean.
    record : str, optional
        Append every served density, with the atoms, to this dataset file.
    device : str
        'auto', 'cpu' or 'cuda'.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "pseudo_density", "pseudo_density_std"]
    default_parameters: dict[str, Any] = {"model": None, "timestep_fs": None, "stride": 1, "history": None,
                                          "resync_every": 0, "sampler": "ddim", "sampler_steps": 20, "seed": 0,
                                          "samples": 0, "record": None, "device": "auto"}

    def __init__(self, model: Any, calc: Calculator | None = None, **kwargs: Any) -> None:
        from .core.registry import load

        name = model if isinstance(model, str) else str(getattr(model, "name", "model"))
        super().__init__(model=str(name), **kwargs)
        p = self.parameters
        self.calc = calc
        self._writer = None
        self._n_R: np.ndarray | None = None
        self._std_R: np.ndarray | None = None
        self._spread: float | None = None
        try:
            self.model = load(model, device=p["device"]) if isinstance(model, (str, os.PathLike)) else model
            self.model.max_history = self.model.min_history if p["history"] is None else p["history"]
            if hasattr(self.model, "set_sampler"):
                self.model.set_sampler(p["sampler"], p["sampler_steps"])
            if isinstance(p["seed"], bool) or not isinstance(p["seed"], (int, np.integer)):
                raise InvalidInput(f"seed must be an integer, got {p['seed']!r}")
            self.model.seed(int(p["seed"]))
            k = p["samples"]
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0 or k == 1:
                raise InvalidInput(f"samples must be 0 (none) or an integer of at least 2, got {k!r}")
            if k and not hasattr(self.model, "predict_samples"):
                raise InvalidInput(f"{name} is deterministic: it draws no samples and has no spread; use samples=0 "
                                   "or a generative model (the grid-latent diffusion family)")
        except (AseLdmError, TypeError, ValueError) as err:
            raise CalculatorMismatch(str(err)) from None
        stride = p["stride"]
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
            raise CalculatorMismatch(f"stride must be a positive integer, got {stride!r}")
        dt_model = self.model.timestep_fs
        dt = p["timestep_fs"]
        if dt is not None and not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
            raise CalculatorMismatch(f"timestep_fs must be a positive number of femtoseconds, got {dt!r}")
        if self.model.max_history > 0 and dt_model is not None:
            dt = dt_model / stride if dt is None else float(dt)
            if abs(dt * stride - dt_model) > 1e-6:
                raise CalculatorMismatch(
                    f"MD timestep {dt} fs x stride {stride} != the model's timestep {dt_model} fs; use timestep "
                    f"{dt_model / stride:g} fs, or stride {dt_model / dt:g} if that is an integer")
        self._md_timestep_fs = float(dt or dt_model or 1.0)
        self._observed = 0
        self._md_steps = 0
        self._model_steps = 0
        self._last_state: tuple[bytes, ...] | None = None
        self._pending_sync: tuple[np.ndarray, np.ndarray] | None = None

    # -- checks and synchronisation ------------------------------------------------------
    def grid_for(self, atoms: Atoms) -> tuple[int, int, int]:
        """The grid the model serves for these atoms' cell."""
        return self.model.grid_for(atoms.cell[:])

    def check_atoms(self, atoms: Atoms) -> None:
        """Refuse atoms whose species, cell or periodicity the model cannot serve."""
        if not atoms.pbc.all():
            raise CalculatorMismatch("the model is periodic: atoms need pbc=True in all directions")
        if not np.all(np.isfinite(atoms.positions)):
            raise CalculatorMismatch("atoms have non-finite positions")
        try:
            self.model.check_setup(atoms.numbers, atoms.cell[:], self.grid_for(atoms))
        except AseLdmError as err:
            raise CalculatorMismatch(str(err)) from None

    def synchronize(self, n_prev: np.ndarray, n: np.ndarray, atoms: Atoms | None = None) -> None:
        """Restart the model's history from two consecutive real densities (e/Angstrom^3, spins summed).

        ``atoms`` (default: the attached atoms) are those of ``n``; a model that needs PAW
        matrices in its history cannot be synchronised from densities alone.
        """
        if self.model.predicts_D and self.model.max_history > 0:
            raise CalculatorMismatch("this model reads PAW matrices in its history; synchronise it by wrapping "
                                     "a GPAW calculator instead")
        n_prev, n = (np.asarray(x, np.float64) for x in (n_prev, n))
        n_prev, n = (x.sum(0) if x.ndim == 4 else x for x in (n_prev, n))  # spins summed
        atoms = atoms if atoms is not None else self.atoms
        if atoms is None:  # attached but not yet calculated: observed at the first calculation
            self._pending_sync = (n_prev, n)
            return
        self._pending_sync = None
        self.model.reset()
        self._observed = 0
        for dens in (n_prev, n):
            self._observe(atoms, dens, None)
        self._n_R = n.copy()
        self._std_R = self._spread = None
        self._model_steps = 0

    def _observe(self, atoms: Atoms, n: np.ndarray, D: np.ndarray | None, predicted: bool = False) -> None:
        try:
            self.model.observe(atoms.positions, n, D, atoms.numbers, atoms.cell[:], predicted=predicted)
        except AseLdmError as err:
            raise CalculatorMismatch(str(err)) from None
        self._observed += 1

    def _gpaw_density(self, atoms: Atoms) -> tuple[np.ndarray, list[np.ndarray] | None] | None:
        """The wrapped GPAW calculator's converged density (spins summed) and spin-paired PAW
        matrices at ``atoms``, if it is a new-code GPAW calculator."""
        if self.calc is None or not hasattr(type(self.calc), "dft"):  # new-code GPAW has a dft property
            return None
        from .data.gpaw_io import D_asii_from_gpaw, nt_sR_from_gpaw

        self.calc.get_property("energy", atoms)  # converged at these positions
        D = ([np.asarray(D_sii).sum(0) for D_sii in D_asii_from_gpaw(self.calc)]
             if self.model.predicts_D else None)  # a model that reads no PAW matrices gets none
        return nt_sR_from_gpaw(self.calc).sum(0), D

    def _synchronize_from_gpaw(self, atoms: Atoms) -> bool:
        """Observe GPAW's density at ``atoms`` (repeated up to the model's minimum history)."""
        real = self._gpaw_density(atoms)
        if real is None:
            return False
        self._observe(atoms, *real)
        while self._observed < self.model.min_history:
            self._observe(atoms, *real)
        self._n_R = real[0]
        self._std_R = self._spread = None
        self._model_steps = 0
        return True

    def _advance(self, atoms: Atoms) -> None:
        """One model step: predict the density at ``atoms`` and feed it back as history."""
        try:
            k = int(self.parameters["samples"])
            if k:
                pred = self.model.predict_samples(atoms.positions, atoms.numbers, atoms.cell[:],
                                                  self.grid_for(atoms), k)
                n, D, self._std_R, self._spread = pred.nt_R, None, pred.std_R, pred.spread
            else:
                n, D = self.model.predict(atoms.positions, atoms.numbers, atoms.cell[:], self.grid_for(atoms))
        except AseLdmError as err:
            raise CalculatorMismatch(str(err)) from None
        if self.model.max_history > 0:
            self._observe(atoms, n, D, predicted=True)
        self._n_R = n
        self._model_steps += 1

    # -- the ASE contract ----------------------------------------------------------------
    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None,
                  system_changes: list[str] = all_changes) -> None:
        properties = properties or ["energy"]
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if {"numbers", "cell", "pbc"} & set(system_changes):
            self.check_atoms(atoms)
        wanted = [p for p in properties if p not in ("pseudo_density", "pseudo_density_std")]
        if wanted:
            if self.calc is None:
                raise PropertyNotImplementedError(
                    f"{wanted}: this DensityCalculator wraps no force calculator; pass calc=...")
            for name in ("energy", "free_energy", "forces"):
                self.results[name] = self.calc.get_property(name, atoms)
            if "stress" in properties:
                self.results["stress"] = self.calc.get_property("stress", atoms)
        self._update_density(atoms)
        self.results["pseudo_density"] = self._n_R.copy()
        if self._std_R is not None:
            self.results["pseudo_density_std"] = self._std_R.copy()
        if self.parameters["record"]:
            self._record(atoms)

    def _update_density(self, atoms: Atoms) -> None:
        state = (atoms.positions.tobytes(), atoms.cell[:].tobytes(), atoms.numbers.tobytes(), atoms.pbc.tobytes())
        moved = self._last_state is not None and state != self._last_state
        self._last_state = state
        if self._pending_sync is not None:
            self.synchronize(*self._pending_sync, atoms=atoms)
            return
        if self.model.max_history == 0:  # from the atoms alone: every new state gets its own density
            if self._n_R is None or moved:
                self._advance(atoms)
            return
        if self._observed < self.model.min_history:
            if not self._synchronize_from_gpaw(atoms):
                raise CalculatorMismatch("the model has no history yet: call synchronize(n_prev, n) with two real "
                                         "densities, or wrap a GPAW calculator to synchronise from")
            return
        if self._n_R is not None and not moved:
            return
        if self._n_R is not None:
            self._md_steps += 1
            if self._md_steps % int(self.parameters["stride"]):
                return  # between model steps the last density is served
            k = int(self.parameters["resync_every"])
            if k and self._model_steps + 1 >= k and self._synchronize_from_gpaw(atoms):
                return
        self._advance(atoms)

    def _record(self, atoms: Atoms) -> None:
        from .data.schema import Frame
        from .data.store import DensityWriter

        if self._writer is None:
            self._writer = DensityWriter(self.parameters["record"], append=True,
                                         attrs={"source": f"DensityCalculator({self.parameters['model']})",
                                                "timestep_fs": self._md_timestep_fs})
        t = self._writer.last_time_fs + self._md_timestep_fs if len(self._writer) else 0.0
        self._writer.append(Frame(nt_sR=self._n_R[None].astype(np.float32), positions=atoms.positions,
                                  cell=atoms.cell[:], numbers=atoms.numbers, time_fs=t, pbc=atoms.pbc))

    def get_pseudo_density(self, spin: int | None = None, gridrefinement: int = 1, broadcast: bool = True,
                           pad: bool = True) -> np.ndarray:
        """The model's pseudo-density for the current atoms, electrons/Angstrom^3.

        Same signature and units as GPAW's. Spin-paired models return the total for
        ``spin=None`` and half of it for ``spin=0`` or ``1``. ``gridrefinement=2`` interpolates
        by Fourier zero-padding (the density is periodic).
        """
        if self.atoms is None:
            raise CalculatorMismatch("no atoms yet: attach the calculator (atoms.calc = calc) and compute once "
                                     "(calc.get_property('pseudo_density', atoms)) before asking for the density")
        n = self.get_property("pseudo_density")
        if spin is not None:
            if spin not in (0, 1):
                raise InvalidInput(f"spin must be None, 0 or 1, got {spin}")
            n = 0.5 * n
        if gridrefinement == 1:
            return n
        if gridrefinement != 2:
            raise InvalidInput(f"gridrefinement must be 1 or 2, got {gridrefinement}")
        return fourier_interpolate(n, 2)

    def get_density_uncertainty(self) -> float:
        """The model's estimate of its relative L1 error for the current atoms (dimensionless).

        The L1 norm of the calibrated per-voxel standard deviation over the samples, relative to
        the L1 norm of the served density; the per-voxel standard deviation (electrons/Angstrom^3)
        is the ``pseudo_density_std`` result. Needs ``samples`` >= 2.
        """
        if not int(self.parameters["samples"]):
            raise PropertyNotImplementedError("the density uncertainty needs samples: create the calculator with "
                                              "samples=K (K >= 2) and a generative model")
        if self.atoms is None:
            raise CalculatorMismatch("no atoms yet: attach the calculator (atoms.calc = calc) and compute once")
        self.get_property("pseudo_density")
        if self._spread is None:
            raise CalculatorMismatch("the density of this step was synchronised from GPAW, not predicted: it has no "
                                     "spread; ask again after the next MD step")
        return float(self._spread)

    def todict(self, skip_default: bool = True) -> dict[str, Any]:
        d = super().todict(skip_default)
        if self.calc is not None:
            d["calc"] = type(self.calc).__name__
        return d

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

