"""Start GPAW's SCF from a supplied density: the only module that writes GPAW internals.

Two entry points:

* :func:`start_from_density` -- a fresh calculation: GPAW initialises as usual (superposition
  of atomic densities, LCAO wave functions), then ``nt_sR`` and ``D_asii`` are replaced by the
  given pair, renormalised to the system's charge, and the potential is recomputed before the
  first SCF iteration.
* :func:`guided_gpaw` / :class:`GuidedGPAW` -- MD: before the atoms move, the converged density
  of the finished step is handed to the provider, which predicts the density at the new
  positions. GPAW's move then runs as in GPAW 26.x (wave functions, PAW data, mixer) except that
  the prediction takes the place of the density GPAW would rebuild from the moved wave
  functions, so the potential is computed once, from the guess. Without a guess GPAW's own
  move runs unchanged. A provider with ``cold_start = True`` also supplies the first density of
  a fresh calculation (through :func:`start_from_density`). With ``wfs_extrapolation=K`` the
  wave functions start from their polynomial extrapolation (order K) over the last converged
  steps, aligned band-subspace by band-subspace (:func:`extrapolate_wave_functions`), instead of
  GPAW's move of the last ones; without a density guess the density is rebuilt from them.

The guess only changes where the SCF starts: GPAW's convergence criteria decide where it
ends, so converged energies and forces agree with an unguided run to the SCF tolerance.

Supported: new-code GPAW 26.x; plane-wave, LCAO and FD modes; spin-paired or spin-polarised
with a provider that predicts every spin channel; k-points; serial or MPI (``mpiexec -n N``,
``gpaw -P N``: every rank computes the guess from the gathered density, rank 0's is scattered
over the domains); no point-group symmetry (time reversal may stay on: it only pairs k and -k,
which share one density). Wave-function extrapolation needs plane waves or FD and bands
that are not split over ranks (domains, k-points and spins may be: each k-point's bands are
gathered onto the first rank of its domain, extrapolated there and scattered back). Anything
else is refused with :class:`UnsupportedSetup` naming the setting to change.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import numpy as np
from ase import Atoms
from ase.units import Bohr

from ..core.extrapolation import COEFFICIENTS, extrapolate
from ..data.gpaw_io import D_asii_from_gpaw, nt_sR_from_gpaw
from ..errors import InvalidInput, UnsupportedSetup
from .providers import DensityProvider, check_provider_name, make_provider

__all__ = ["UnsupportedSetup", "check_supported", "inject_density", "start_from_density", "GuidedGPAW",
           "guided_gpaw", "parse_spec", "check_spec"]

log = logging.getLogger(__name__)
SUPPORTED_GPAW = ("26.",)
#: GPAW modes whose SCF can start from a given density: plane waves, LCAO, finite differences
MODES = ("pw", "lcao", "fd")


def check_supported(calc: Any) -> None:
    """Refuse set-ups where injecting a density is not known to be right."""
    import gpaw

    if not gpaw.__version__.startswith(SUPPORTED_GPAW):
        raise UnsupportedSetup(f"GPAW {gpaw.__version__}: the hook is written against GPAW 26.x internals "
                               "(dft.density.nt_sR, D_asii, pot_calc.calculate); use GPAW 26.x")
    if not hasattr(calc, "params") or not hasattr(calc.params, "mode"):
        raise UnsupportedSetup(f"{type(calc).__name__} is not a new-code GPAW calculator")
    mode = calc.params.mode.name
    if mode not in MODES:
        raise UnsupportedSetup(f"mode {mode!r}: the hook supports the modes {MODES}")
    sym = calc.params.symmetry  # gpaw.dft.Symmetry, whatever form the user gave
    if getattr(sym, "point_group", True) or getattr(sym, "rotations", None) is not None:
        raise UnsupportedSetup(
            "point-group symmetry: GPAW keeps the wave functions of the irreducible k-points only and "
            "symmetrises every density with the group of the first positions, which MD breaks (and a guess "
            "without that symmetry would be symmetrised away); pass symmetry={'point_group': False} "
            "(time reversal may stay on) or symmetry='off'")


def inject_density(dft: Any, nt_sR: np.ndarray, D_asii: list[np.ndarray]) -> None:
    """Replace a GPAW DFT object's density by (nt_sR e/Angstrom^3, D_asii) and recompute the potential.

    Raises
    ------
    UnsupportedSetup
        The guess does not fit the calculation (spin channels, grid, atoms, projectors).
    """
    density = dft.density
    _write_density(density, nt_sR, D_asii, len(dft.setups), dft.comm)
    density.normalize(dft.pot_calc.charge)
    dft.potential, dft.energies, _ = dft.pot_calc.calculate(density, dft.ibzwfs, dft.potential.vHt_x)


def converged_wave_functions(dft: Any) -> list[np.ndarray | None]:
    """Copies of the wave functions of this rank's k-points and spins: plane-wave coefficients
    ``psit_nG``, or FD grid values ``psit_nR``, of all bands.

    Under domain decomposition each k-point's wave functions are gathered onto the first rank of
    its domain (a collective call); the other ranks of the domain get None.
    """
    out = []
    for wfs in dft.ibzwfs:
        if wfs.psit_nX.comm.size > 1:  # GPAW chose to split the bands (same answer on every rank)
            raise UnsupportedSetup(f"wave-function extrapolation with the bands split over {wfs.psit_nX.comm.size} "
                                   "ranks: the bands are aligned as one set; set parallel={'band': 1} or drop '+wfsK'")
        psit = wfs.psit_nX.gather()
        out.append(None if psit is None else np.array(psit.data, copy=True))
    return out


def real_wave_functions(dft: Any) -> list[bool]:
    """Per k-point and spin: whether the wave functions are real plane-wave coefficients (Gamma
    point), stored by GPAW as half a sphere with G = 0 first (FD's real grids are stored whole)."""
    from gpaw.core.plane_waves import PWDesc

    return [isinstance(wfs.psit_nX.desc, PWDesc) and wfs.psit_nX.desc.dtype == float for wfs in dft.ibzwfs]


def extrapolate_wave_functions(past: list[list[np.ndarray]], order: int,
                               real: list[bool] | None = None) -> list[np.ndarray]:
    r"""Wave functions extrapolated in time from converged steps (newest first), per k-point and spin.

    Each older set is first aligned to the newest by the rotation of its bands that brings it
    closest (orthogonal Procrustes, :math:`U = \mathrm{polar}(C_k C_0^\dagger)`): bands mix and
    reorder between steps, and only the occupied subspace is physical. The aligned sets are then
    combined with the polynomial coefficients of :mod:`ase_ldm.core.extrapolation` (order 1:
    :math:`2 C_0 - U_1 C_1`), as in Quantum ESPRESSO's ``wfc_extrapolation``. GPAW orthonormalises
    them at the start of the SCF.

    Parameters
    ----------
    past : list (steps, newest first) of lists (k-points and spins) of (nbands, ...) arrays:
        plane-wave coefficients (nbands, nG) or FD grid values (nbands, N1, N2, N3)
    order : int
    real : list of bool, optional
        Per k-point and spin: real wave functions stored as half a sphere (G = 0 first), whose
        overlaps are :math:`2\,\mathrm{Re}(a b^\dagger) - a_0 b_0` and whose rotations must be
        real (a complex one would break the reality the storage assumes).
    """
    out = []
    for q, C0 in enumerate(past[0]):
        is_real = bool(real[q]) if real is not None else False
        shape = C0.shape
        C0 = C0.reshape(shape[0], -1)
        aligned = [C0]
        for older in past[1:]:
            Ck = older[q].reshape(shape[0], -1)
            M = Ck @ C0.conj().T  # (n_older, n_newest) overlaps of the coefficient vectors
            if is_real:
                M = 2 * M.real - np.outer(Ck[:, 0].real, C0[:, 0].real)
            V, _, Wh = np.linalg.svd(M)
            U = (V @ Wh).conj().T  # maximises Re tr(U M): U Ck is closest to C0
            aligned.append(U @ Ck)
        out.append(extrapolate(aligned, order).reshape(shape))
    return out


def _extrapolated_wave_functions(dft: Any, past: list[list[np.ndarray | None]], order: int
                                 ) -> list[np.ndarray | None]:
    """:func:`extrapolate_wave_functions` of this rank's gathered histories (None where another
    rank of the domain holds them)."""
    real = real_wave_functions(dft)
    return [None if past[0][q] is None else
            extrapolate_wave_functions([[step[q]] for step in past], order, [real[q]])[0]
            for q in range(len(past[0]))]


def _set_wave_functions(dft: Any, psit: list[np.ndarray | None]) -> None:
    """Write gathered wave functions back, scattered over each k-point's domain (collective)."""
    for wfs, C in zip(dft.ibzwfs, psit):
        wfs.psit_nX.scatter_from(C)
        wfs._P_ani = None
        wfs.orthonormalized = False


def _move_with_density(dft: Any, atoms: Atoms, guess: tuple[np.ndarray, list[np.ndarray]] | None,
                       psit: list[np.ndarray] | None = None) -> None:
    """GPAW's ``DFT.move_atoms`` (26.x) with a guess of the density and/or the wave functions.

    ``guess`` (nt_sR, D_asii) takes the place of the density rebuilt from the moved wave
    functions, so the potential is computed once, from the guess. ``psit`` (per k-point and spin)
    replaces GPAW's moved wave functions; without a density guess the density is then rebuilt
    from them, as GPAW does from its own.
    """
    from gpaw.core.atom_arrays import AtomDistribution
    from gpaw.new.calculation import write_atoms
    from gpaw.utilities import check_atoms_too_close

    check_atoms_too_close(atoms)
    mm_av = dft.results.get("non_collinear_magmoms")
    dft.results = {}  # moving: the old results no longer describe the state, whatever happens next
    dft.atoms = atoms
    dft.relpos_ac = np.ascontiguousarray(atoms.get_scaled_positions())
    dft.comm.broadcast(dft.relpos_ac, 0)
    atomdist = dft.density.D_asii.layout.atomdist
    rank_a = dft.density.nt_sR.desc.ranks_from_fractional_positions(dft.relpos_ac)
    atomdist = AtomDistribution(rank_a, atomdist.comm)
    dft.pot_calc.move(dft.relpos_ac, atomdist)
    dft.ibzwfs.move(dft.relpos_ac, atomdist)
    if psit is not None:
        _set_wave_functions(dft, psit)
    dft.density.move(dft.relpos_ac, atomdist)
    if guess is None:
        dft.density.update(dft.ibzwfs)
    dft.potential.move(atomdist)
    dft.scf_loop.hamiltonian.move(dft.relpos_ac)
    dft.scf_loop.mixer.move(dft.relpos_ac, atomdist)
    if guess is None:
        dft.potential, dft.energies, _ = dft.pot_calc.calculate(dft.density, dft.ibzwfs, dft.potential.vHt_x)
    else:
        inject_density(dft, *guess)  # in place of density.update(ibzwfs); computes the potential
    if mm_av is None:
        _, mm_av = dft.density.calculate_magnetic_moments()
    write_atoms(atoms, mm_av, dft.density.nt_sR.desc, dft.log)
    dft.forces_have_been_printed = False


def _write_density(density: Any, nt_sR: np.ndarray, D_asii: list[np.ndarray], nsetups: int,
                   comm: Any = None) -> None:
    """Overwrite a GPAW Density's nt_sR (from e/Angstrom^3) and D_asii, checking that they fit.

    ``comm``: the calculation's world communicator. On several ranks rank 0's guess is
    broadcast (every rank then holds the same numbers, whatever each computed), its density is
    scattered over the domains and each rank keeps its atoms' D. The checks use the global
    shapes, so every rank raises or none does.
    """
    S = density.nt_sR.dims[0]
    nt_sR = np.asarray(nt_sR, np.float64)
    if nt_sR.shape[0] != S:
        raise UnsupportedSetup(f"the guess has {nt_sR.shape[0]} spin channel(s), the calculation {S}: a "
                               "spin-polarised run needs a provider that predicts both spins")
    grid = density.nt_sR.desc
    if tuple(nt_sR.shape[1:]) != tuple(grid.size_c):
        raise UnsupportedSetup(f"the guess is on a {nt_sR.shape[1:]} grid, the calculation on {tuple(grid.size_c)}")
    if len(D_asii) != nsetups:
        raise UnsupportedSetup(f"the guess has D for {len(D_asii)} atoms, the calculation has {nsetups}")
    for a, shape in enumerate(density.D_asii.layout.shape_a):
        if (S, *shape) != np.shape(D_asii[a]):
            raise UnsupportedSetup(f"D of atom {a} has shape {np.shape(D_asii[a])}, GPAW's is {(S, *shape)}")
    if comm is not None and comm.size > 1:
        nt_sR, *D_asii = _broadcast_arrays(comm, [nt_sR, *D_asii])
    if grid.comm.size > 1:
        density.nt_sR.scatter_from(nt_sR * Bohr**3)  # rank 0's part of the broadcast guess per domain
    else:
        density.nt_sR.data[:] = nt_sR * Bohr**3
    for a, D_sii in density.D_asii.items():
        D_sii[:] = D_asii[a]


def _broadcast_arrays(comm: Any, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Rank 0's arrays on every rank of ``comm`` (the shapes must agree on every rank)."""
    flat = np.concatenate([np.asarray(x, np.float64).ravel() for x in arrays])
    comm.broadcast(flat, 0)
    out, i = [], 0
    for x in arrays:
        n = np.size(x)
        out.append(flat[i:i + n].reshape(np.shape(x)))
        i += n
    return out


def start_from_density(calc: Any, atoms: Atoms, nt_sR: np.ndarray, D_asii: list[np.ndarray], *,
                       builder: Any = None, fixed_density_steps: int = 0) -> int:
    """Initialise ``calc`` for ``atoms`` with its first SCF starting from (nt_sR, D_asii).

    The calculation components are built as GPAW builds them for a cold start
    (``Parameters.create_dft_calculation_components``), except that the density is the given one:
    the potential and the initial LCAO wave functions are computed from it. Call before
    ``atoms.get_potential_energy()``; ``atoms.calc`` is set to ``calc``. ``builder`` is GPAW's
    component builder for these atoms when the caller has made one already.

    ``fixed_density_steps`` eigensolver iterations then run in the guessed potential with the
    density held fixed, before the SCF (which GPAW counts) starts. The LCAO wave functions are
    far from converged; without these steps their first output densities are mixed into the
    guess and undo much of it (BENCHMARKS.md, cold start: from the exact density, 12-14 SCF
    iterations without them, 6-7 in all with 3-4). Returns the steps run.
    """
    from gpaw.new.calculation import DFT

    _check_steps("fixed_density_steps", fixed_density_steps)
    check_supported(calc)
    params, log = calc.params, calc.log
    if builder is None:
        builder = params.dft_component_builder(atoms, log=log, comm=log.comm)
    basis_set = builder.create_basis_set()
    scf_loop = builder.create_scf_loop()
    pot_calc = builder.create_potential_calculator()
    density = builder.density_from_superposition(basis_set)
    _write_density(density, nt_sR, D_asii, len(atoms), builder.communicators["w"])
    density.normalize(pot_calc.charge)
    potential, energies, _ = pot_calc.calculate_without_orbitals(density, kpt_band_comm=builder.communicators["D"])
    ibzwfs = builder.create_ibz_wave_functions(basis_set, potential)
    if ibzwfs._wfs_u[0].has_eigs:
        ibzwfs.calculate_occs(scf_loop.occ_calc, density.nvalence - density.charge + pot_calc.charge)
    calc._dft = DFT.from_components(atoms, ibzwfs, density, potential, builder.setups, scf_loop, pot_calc, log,
                                    params, energies, converge=False)
    calc._atoms = atoms.copy()
    atoms.calc = calc
    steps = 0
    if fixed_density_steps:
        dft = calc._dft
        dft.scf_loop.update_density_and_potential = False
        try:
            for steps, _ in enumerate(dft.iconverge(), start=1):
                if steps >= fixed_density_steps:
                    break
        finally:
            dft.scf_loop.update_density_and_potential = True
    return steps


def _parallel_setting(calc: Any, key: str) -> Any:
    """One entry of the calculator's ``parallel`` parameter (None: GPAW's choice)."""
    parallel = getattr(calc.params, "parallel", None)
    parallel = parallel.todict() if hasattr(parallel, "todict") else parallel
    return (parallel or {}).get(key)


def _check_steps(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 50:
        raise InvalidInput(f"{name} must be an integer from 0 to 50, got {value!r}")


def _make_guided_class():
    from gpaw.new.ase_interface import ASECalculator

    class _Guided(ASECalculator):
        """GPAW's ASE calculator whose MD moves end with the provider's density."""

        provider: DensityProvider
        guess_seconds: list[float]  # seconds of each provider call (moves and cold starts)
        guessed_steps: int  # SCFs that started from the provider's density (cold start included)
        wfs_order: int
        wfs_history: deque

        def move_atoms(self, atoms: Atoms) -> None:
            old = self.atoms
            converged = self._dft is not None and self.dft.results
            if converged:
                self.provider.observe(old, nt_sR_from_gpaw(self), D_asii_from_gpaw(self))
            elif self._dft is not None:  # the last step did not converge: the histories lose a step
                self.provider.reset()
                self.wfs_history.clear()
            t0 = time.perf_counter()
            guess = self.provider.predict(atoms)
            psit = None
            if self.wfs_order >= 0 and converged:
                self.wfs_history.appendleft(converged_wave_functions(self.dft))
                if len(self.wfs_history) > 1:
                    psit = _extrapolated_wave_functions(self.dft, list(self.wfs_history), self.wfs_order)
            self.guess_seconds.append(time.perf_counter() - t0)
            if guess is None and psit is None:
                super().move_atoms(atoms)
                return
            self.guessed_steps += guess is not None
            with self.timer("Move"):
                _move_with_density(self.dft, atoms, guess, psit)
            self._atoms = atoms.copy()

        def create_new_calculation(self, atoms: Atoms) -> None:
            self.provider.reset()  # a fresh start (new cell or species) breaks the history
            self.wfs_history.clear()
            if getattr(self.provider, "cold_start", False):
                t0 = time.perf_counter()
                builder = self.params.dft_component_builder(atoms, log=self.log, comm=self.log.comm)
                # a spin-polarised run starts from GPAW's initial magnetic moments, which no
                # spin-paired model knows
                guess = (self.provider.predict(atoms, grid=tuple(int(n) for n in builder.grid.size))
                         if builder.ncomponents == 1 else None)
                if guess is not None:
                    start_from_density(self, atoms, *guess, builder=builder,
                                       fixed_density_steps=self.cold_fixed_steps)
                    self.guess_seconds.append(time.perf_counter() - t0)
                    self.guessed_steps += 1
                    return
            super().create_new_calculation(atoms)

    return _Guided


_GUIDED = None


def parse_spec(spec: str) -> tuple[str, int]:
    """``NAME`` or ``NAME+wfsK``: a provider and the order of the wave-function extrapolation
    (-1: GPAW's own move of the wave functions; see :func:`ase_ldm.scf.hook.extrapolate_wave_functions`)."""
    name, sep, order = spec.rpartition("+wfs")
    if not sep:
        return spec, -1
    try:
        return name, int(order)
    except ValueError:
        raise InvalidInput(f"{spec!r}: write NAME+wfsK with K the extrapolation order (1 or 2)") from None


def check_spec(spec: str, mode: str | None = None) -> tuple[str, int]:
    """:func:`parse_spec`, refusing (InvalidInput) an unknown provider or an order K that is not a
    wave-function extrapolation order, and (UnsupportedSetup) a wave-function extrapolation in
    GPAW ``mode`` that has none, before any GPAW work."""
    name, order = parse_spec(spec)
    check_provider_name(name)
    orders = [k for k in COEFFICIENTS if k > 0]
    if order != -1 and order not in orders:
        raise InvalidInput(f"{spec!r}: the wave-function extrapolation order K of NAME+wfsK must be "
                           f"{' or '.join(map(str, orders))}")
    check_wfs_mode(order, mode)
    return name, order


def check_wfs_mode(order: int, mode: str | None) -> None:
    """Refuse a wave-function extrapolation (``order`` >= 0) in LCAO mode, where it means nothing."""
    if order >= 0 and mode == "lcao":
        raise UnsupportedSetup("wave-function extrapolation in LCAO mode: the LCAO eigensolver diagonalises the "
                               "Hamiltonian in the basis at every SCF iteration, so only the density's start "
                               "matters; drop '+wfsK' (wfs_extrapolation=-1)")


def GuidedGPAW(provider: DensityProvider | str, *, wfs_extrapolation: int = -1, cold_fixed_steps: int = 0,
               **gpaw_kwargs: Any) -> Any:
    """A GPAW calculator (``gpaw.GPAW(**gpaw_kwargs)``) guided by ``provider`` in MD.

    ``provider`` is a :class:`~ase_ldm.scf.providers.DensityProvider` or its command-line name
    (``gpaw``, ``previous``, ``extrapolate-linear``, ``extrapolate-quadratic``,
    ``sad-extrapolate``, ``auto``, ``auto:MODEL``, a model run directory or pretrained name).
    ``wfs_extrapolation`` (1 or 2; -1: GPAW's own move) extrapolates the wave functions in time;
    ``cold_fixed_steps`` runs that many fixed-density eigensolver steps after a provider's cold
    start (:func:`start_from_density`).
    """
    from gpaw import GPAW

    gpaw_kwargs.setdefault("symmetry", "off")
    return guided_gpaw(GPAW(**gpaw_kwargs), provider, wfs_extrapolation=wfs_extrapolation,
                       cold_fixed_steps=cold_fixed_steps)


def guided_gpaw(calc: Any, provider: DensityProvider | str, *, wfs_extrapolation: int = -1,
                cold_fixed_steps: int = 0) -> Any:
    """Turn an existing (not yet used, or used) new-code GPAW calculator into a guided one.

    The calculator keeps all its settings and state; only ``move_atoms`` gains the hook.
    """
    global _GUIDED
    check_supported(calc)
    _check_steps("cold_fixed_steps", cold_fixed_steps)
    if wfs_extrapolation not in (-1, *(k for k in COEFFICIENTS if k > 0)):
        raise InvalidInput(f"wfs_extrapolation must be -1 (GPAW's own move) or one of "
                           f"{sorted(k for k in COEFFICIENTS if k > 0)}, got {wfs_extrapolation}")
    check_wfs_mode(wfs_extrapolation, calc.params.mode.name)
    band = _parallel_setting(calc, "band")
    if wfs_extrapolation >= 0 and band not in (None, 1):
        raise UnsupportedSetup(f"wave-function extrapolation with the bands split over {band} ranks: the bands "
                               "are aligned as one set; drop parallel={'band': ...} (domains and k-points may "
                               "be split) or drop '+wfsK'")
    if _GUIDED is None:
        _GUIDED = _make_guided_class()
    if isinstance(provider, str):
        provider = make_provider(provider, calc)
    # Re-class the instance GPAW's factory built (its constructor wiring is internal to GPAW).
    calc.__class__ = _GUIDED
    calc.provider = provider
    calc.guess_seconds = []
    calc.guessed_steps = 0
    calc.wfs_order = int(wfs_extrapolation)
    calc.cold_fixed_steps = int(cold_fixed_steps)
    calc.wfs_history = deque(maxlen=max(wfs_extrapolation, 0) + 1)
    return calc
