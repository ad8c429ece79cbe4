"""An ASE calculator that serves an ML-predicted pseudo-density at every MD step.

>>> calc = DensityCalculator("li16-800K", calc=GPAW(...), timestep_fs=2.0, resync_every=10)
>>> atoms.calc = calc
>>> dyn = VelocityVerlet(atoms, 2 * units.fs)
>>> dyn.attach(lambda: densities.append(calc.get_pseudo_density()))

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

from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

__all__ = ["DensityCalculator", "ModelMismatch"]


class ModelMismatch(ValueError):
    """The model does not fit the atoms or the MD (grid, cell, species, timestep)."""


class DensityCalculator(Calculator):
    """ASE calculator wrapping a trained density model and, optionally, a force calculator.

    With an atom-synchronised model (e.g. ``"li16-800K-sync"``) the density is predicted from
    the atoms of each step alone (the model's cold-start mode): no history, no synchronisation,
    no timestep, and any cell with the model's grid spacing (the grid is the cell length divided
    by that spacing). The paper's model instead advances its latent state step by step.

    Parameters
    ----------
    model : str, DensitySurrogate or SyncPredictor
        A pretrained name, a run directory, or a loaded model.
    calc : ASE calculator, optional
        Supplies energy, forces and stress. A GPAW calculator can also synchronise the model.
    timestep_fs : float, optional
        The MD timestep. Checked against the model's: ``timestep_fs * stride`` must equal it.
        Default: the model's timestep (one model step per MD step).
    stride : int
        MD steps per model step.
    resync_every : int
        Re-synchronise from the wrapped GPAW calculator's density every this many model steps
        (0: only at the first step).
    sampler, sampler_steps, seed : str, int, int
        DDIM (deterministic, default) or DDPM, its steps, and the noise seed.
    record : str, optional
        Append every served density, with the atoms, to this dataset file.
    device : str
        'auto', 'cpu' or 'cuda'.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "pseudo_density"]
    default_parameters: dict[str, Any] = {"model": None, "timestep_fs": None, "stride": 1, "resync_every": 0,
                                          "sampler": "ddim", "sampler_steps": 20, "seed": 0, "record": None,
                                          "device": "auto"}

    def __init__(self, model: Any, calc: Calculator | None = None, **kwargs: Any) -> None:
        from .surrogate import DensitySurrogate, load_model
        from .sync_predictor import SyncPredictor, is_sync_model

        name = model if isinstance(model, str) else str(getattr(model, "meta", {}).get("name", "model"))
        super().__init__(model=str(name), **kwargs)
        p = self.parameters
        self.calc = calc
        self._writer = None
        self._n_R: np.ndarray | None = None
        self.sync: SyncPredictor | None = None
        if isinstance(model, SyncPredictor) or (isinstance(model, str) and is_sync_model(model)):
            # atom-synchronised model: the density of the atoms as they are, from the atoms alone
            self.sync = model if isinstance(model, SyncPredictor) else SyncPredictor.load(model, device=p["device"])
            self.sync.max_history = 0
            self._md_timestep_fs = float(p["timestep_fs"] or self.sync.timestep_fs or 1.0)
            return
        self.surrogate = model if isinstance(model, DensitySurrogate) else load_model(model, device=p["device"])
        stride = int(p["stride"])
        if stride < 1:
            raise ModelMismatch(f"stride must be a positive integer, got {p['stride']}")
        dt = self.surrogate.timestep_fs if p["timestep_fs"] is None else float(p["timestep_fs"])
        if abs(dt * stride - self.surrogate.timestep_fs) > 1e-6:
            raise ModelMismatch(
                f"MD timestep {dt} fs x stride {stride} != the model's timestep {self.surrogate.timestep_fs} fs; "
                f"use timestep {self.surrogate.timestep_fs / stride:g} fs, or stride "
                f"{self.surrogate.timestep_fs / dt:g} if that is an integer")
        self._md_timestep_fs = self.surrogate.timestep_fs / stride
        self._z = None
        self._md_steps = 0
        self._model_steps = 0
        self._last_positions: np.ndarray | None = None
        import torch

        self._gen = torch.Generator(device=self.surrogate.device).manual_seed(int(p["seed"]))

    # -- checks and synchronisation ------------------------------------------------------
    def check_atoms(self, atoms: Atoms) -> None:
        """Refuse atoms whose species, cell or periodicity differ from the model's system."""
        if self.sync is not None:
            if not atoms.pbc.all():
                raise ModelMismatch("the model is periodic: atoms need pbc=True in all directions")
            try:
                self.sync.check_setup(atoms.numbers, atoms.cell[:], self._sync_grid(atoms))
            except ValueError as err:
                raise ModelMismatch(str(err)) from None
            return
        sur = self.surrogate
        if len(atoms) != len(sur.numbers) or np.any(atoms.numbers != sur.numbers):
            raise ModelMismatch(f"atoms {atoms.get_chemical_formula()} differ from the model's training system "
                                f"({len(sur.numbers)} atoms, Z = {sorted(set(sur.numbers.tolist()))})")
        if not atoms.pbc.all():
            raise ModelMismatch("the model is periodic: atoms need pbc=True in all directions")
        if np.abs(atoms.cell[:] - sur.cell).max() > 1e-4:
            raise ModelMismatch(f"cell {atoms.cell.cellpar().round(4).tolist()} differs from the model's "
                                f"{__import__('ase').cell.Cell(sur.cell).cellpar().round(4).tolist()}")

    def synchronize(self, n_prev: np.ndarray, n: np.ndarray) -> None:
        """Restart the model's state from two consecutive real densities (e/Angstrom^3)."""
        self._z = self.surrogate.encode(n_prev, n)
        self._n_R = self.surrogate.check_density(n).astype(np.float64)
        self._model_steps = 0

    def _gpaw_density(self, atoms: Atoms) -> np.ndarray | None:
        """The wrapped GPAW calculator's converged density at ``atoms`` (spins summed), if any."""
        if self.calc is None or not hasattr(type(self.calc), "dft"):  # new-code GPAW has a dft property
            return None
        from .data.gpaw_io import nt_sR_from_gpaw

        self.calc.get_property("energy", atoms)  # converged at these positions
        return nt_sR_from_gpaw(self.calc).sum(0)

    def _advance(self) -> None:
        """One model step: sample the next latent and decode (renormalised to the current count)."""
        count = float(self._n_R.sum() * self.surrogate.dV)
        self._z = self.surrogate.predict_next(self._z, self.parameters["sampler"],
                                              int(self.parameters["sampler_steps"]), self._gen)
        self._n_R = self.surrogate.decode(self._z, count)[0]
        self._model_steps += 1

    # -- the ASE contract ----------------------------------------------------------------
    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None,
                  system_changes: list[str] = all_changes) -> None:
        properties = properties or ["energy"]
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if {"numbers", "cell", "pbc"} & set(system_changes):
            self.check_atoms(atoms)
        wanted = [p for p in properties if p != "pseudo_density"]
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
        if self.parameters["record"]:
            self._record(atoms)

    def _sync_grid(self, atoms: Atoms) -> tuple[int, int, int]:
        """The grid with the synchronised model's spacing on this cell."""
        n = np.round(atoms.cell.lengths() / self.sync.grid_spacing).astype(int)
        return tuple(int(max(k, 1)) for k in n)

    def _update_density(self, atoms: Atoms) -> None:
        if self.sync is not None:
            nt, _ = self.sync.predict(atoms.positions, atoms.numbers, atoms.cell[:], self._sync_grid(atoms))
            self._n_R = nt
            return
        moved = self._last_positions is not None and not np.array_equal(self._last_positions, atoms.positions)
        self._last_positions = atoms.positions.copy()
        if self._z is None:
            n = self._gpaw_density(atoms)
            if n is None:
                raise RuntimeError("the model has no state yet: call synchronize(n_prev, n) with two real "
                                   "densities, or wrap a GPAW calculator to synchronise from")
            self.synchronize(n, n)
            return
        if not moved:
            return
        self._md_steps += 1
        if self._md_steps % int(self.parameters["stride"]):
            return  # between model steps the last density is served
        k = int(self.parameters["resync_every"])
        if k and self._model_steps + 1 >= k:
            n = self._gpaw_density(atoms)
            if n is not None:
                self.synchronize(self._n_R, n)
                return
        self._advance()

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
        n = self.get_property("pseudo_density")
        if spin is not None:
            if spin not in (0, 1):
                raise ValueError(f"spin must be None, 0 or 1, got {spin}")
            n = 0.5 * n
        if gridrefinement == 1:
            return n
        if gridrefinement != 2:
            raise ValueError("gridrefinement must be 1 or 2")
        return _fourier_interpolate(n, 2)

    def todict(self, skip_default: bool = True) -> dict[str, Any]:
        d = super().todict(skip_default)
        if self.calc is not None:
            d["calc"] = type(self.calc).__name__
        return d

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _fourier_interpolate(n: np.ndarray, factor: int) -> np.ndarray:
    """Periodic band-limited interpolation onto a grid ``factor`` times finer."""
    N = np.array(n.shape)
    F = np.fft.fftshift(np.fft.fftn(n))
    M = N * factor
    G = np.zeros(M, complex)
    lo = (M - N) // 2
    G[lo[0]:lo[0] + N[0], lo[1]:lo[1] + N[1], lo[2]:lo[2] + N[2]] = F
    return np.real(np.fft.ifftn(np.fft.ifftshift(G))) * factor**3
