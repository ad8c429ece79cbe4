"""Run GPAW ab-initio MD and record the density: structures, calculator settings, the loop.

The ``li-liquid`` preset is N lithium atoms at the liquid density of the reference data
(24.01 Angstrom^3 per atom: bcc with a = 3.635 Angstrom), melted, then equilibrated at the
chosen temperature before recording starts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from ase import Atoms, units
from ase.md.velocitydistribution import Stationary

try:  # ASE >= 3.28
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # pragma: no cover - older ASE
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as _mb

    def thermalize_momenta(atoms, temperature_K, *, rng=None):
        _mb(atoms, temperature_K=temperature_K, rng=rng)

from ..core.mpi import from_root, is_root
from ..errors import DatasetError, InvalidInput
from .recorder import DensityRecorder
from .root_writer import open_writer

__all__ = ["AIMDSettings", "li_liquid", "make_gpaw", "run_aimd", "PRESETS"]

log = logging.getLogger(__name__)

LI_BCC_A = 3.635  # Angstrom, bcc lattice constant giving the reference liquid density
LI_VOLUME_PER_ATOM = LI_BCC_A**3 / 2  # Angstrom^3


def li_liquid(natoms: int = 16, seed: int = 0) -> Atoms:
    """N Li atoms in a periodic cubic box at liquid density (before melting).

    ``natoms = 2 m^3`` (2, 16, 54, 128, ...) gives an m x m x m bcc supercell; other counts are
    placed at random with a minimum distance of 2.2 Angstrom.
    """
    if natoms < 1:
        raise InvalidInput(f"natoms must be positive, got {natoms}")
    m = round((natoms / 2) ** (1 / 3))
    if 2 * m**3 == natoms:
        from ase.build import bulk

        return bulk("Li", "bcc", a=LI_BCC_A, cubic=True).repeat((m, m, m))
    L = (natoms * LI_VOLUME_PER_ATOM) ** (1 / 3)
    rng = np.random.default_rng(seed)
    atoms = Atoms(f"Li{natoms}", cell=[L, L, L], pbc=True)
    pos: list[np.ndarray] = []
    for _ in range(100_000):
        trial = rng.random(3) * L
        if all(_mic_distance(trial, p, L) > 2.2 for p in pos):
            pos.append(trial)
            if len(pos) == natoms:
                atoms.positions = np.array(pos)
                return atoms
    raise InvalidInput(f"could not place {natoms} Li atoms without overlap")


def _mic_distance(a: np.ndarray, b: np.ndarray, L: float) -> float:
    d = a - b
    d -= L * np.round(d / L)
    return float(np.linalg.norm(d))


PRESETS = {"li-liquid": li_liquid}


@dataclass(frozen=True)
class AIMDSettings:
    """How to run and record GPAW AIMD.

    Parameters
    ----------
    steps : int
        MD steps to run (and record, every ``interval`` steps) after equilibration.
    timestep_fs : float
        MD timestep, fs.
    ecut : float
        Plane-wave cutoff, eV.
    temperature_K : float
        Thermostat temperature (NVT) or initial velocity temperature (NVE), K.
    ensemble : str
        ``'nvt'`` (ASE Langevin) or ``'nve'`` (velocity Verlet).
    friction_per_fs : float
        Langevin friction, 1/fs.
    melt_steps, melt_temperature_K : int, float
        Langevin steps at the melting temperature before equilibration (not recorded).
    equil_steps : int
        Steps at ``temperature_K`` before recording (not recorded).
    interval : int
        Record every ``interval`` MD steps.
    seed : int
        Seeds the initial velocities and the Langevin noise.
    kpts, xc, smearing_eV : GPAW settings (Gamma point, PBE, Fermi-Dirac 0.1 eV by default).
    gpts : tuple of 3 int, optional
        Real-space grid; by default GPAW's choice for ``ecut``. Set it to keep the grid spacing of
        a model's training data on another cell (Li16 reference: 7.27 A / 30 points).
    """

    steps: int = 10
    timestep_fs: float = 2.0
    ecut: float = 300.0
    temperature_K: float = 800.0
    ensemble: str = "nvt"
    friction_per_fs: float = 0.01
    melt_steps: int = 0
    melt_temperature_K: float = 1500.0
    equil_steps: int = 0
    interval: int = 1
    seed: int = 0
    kpts: tuple[int, int, int] = (1, 1, 1)
    xc: str = "PBE"
    smearing_eV: float = 0.1
    gpts: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.ensemble not in ("nvt", "nve"):
            raise InvalidInput(f"ensemble must be 'nvt' or 'nve', got {self.ensemble!r}")
        for name in ("timestep_fs", "ecut", "temperature_K"):
            if not getattr(self, name) > 0:
                raise InvalidInput(f"{name} must be positive, got {getattr(self, name)}")
        if self.steps < 0 or self.interval < 1:
            raise InvalidInput("steps must be >= 0 and interval >= 1")


def make_gpaw(settings: AIMDSettings, txt: str | IO[str] | None = None) -> Any:
    """A serial plane-wave GPAW calculator as used for the reference data (symmetry off).

    ``txt`` is GPAW's log: a file name, ``'-'`` for stdout, an open text file, or None.
    """
    from gpaw import GPAW, PW

    extra = {} if settings.gpts is None else {"gpts": tuple(settings.gpts)}
    return GPAW(mode=PW(settings.ecut), xc=settings.xc, kpts=settings.kpts,
                occupations={"name": "fermi-dirac", "width": settings.smearing_eV},
                symmetry="off", txt=txt, **extra)


def _dynamics(atoms: Atoms, settings: AIMDSettings, temperature_K: float, seed: int) -> Any:
    dt = settings.timestep_fs * units.fs
    if settings.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, dt)
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin

    if not any(isinstance(c, FixCom) for c in atoms.constraints):
        atoms.set_constraint([*atoms.constraints, FixCom()])
    return Langevin(atoms, dt, temperature_K=temperature_K, friction=settings.friction_per_fs / units.fs,
                    fixcm=False, rng=np.random.default_rng(seed))


def run_aimd(
    atoms: Atoms | None,
    out: str | os.PathLike,
    settings: AIMDSettings,
    *,
    append: bool = False,
    overwrite: bool = False,
    gpaw_txt: str | os.PathLike | None = None,
    progress: bool = True,
    guess: str = "auto+wfs2",
) -> int:
    """Run GPAW MD and record every ``settings.interval``-th step into ``out``.

    With ``append`` and an existing ``out``, MD continues from its last frame (positions and
    velocities), skipping melting and equilibration, and the time axis continues.

    Before any GPAW work the outputs are checked and, when appending to a file with frames, the
    settings and ``atoms`` are compared with the file's (:mod:`ase_ldm.data.continuation`): a
    difference raises instead of being ignored. A GPAW log
    (``gpaw_txt``, a path or ``'-'`` for stdout) is continued when appending, never replaced
    unless ``overwrite``.

    Under MPI (``mpiexec -n N``, ``gpaw -P N``) every rank runs the MD and rank 0 checks and
    writes the files and shows the progress; an error found there is raised on every rank.

    ``guess`` starts each MD step's SCF (:func:`ase_ldm.scf.hook.parse_spec`: a provider name,
    optionally ``+wfsK``; ``gpaw`` for GPAW's own). It changes where the SCF starts, not the
    converged densities that are recorded.

    Returns
    -------
    int
        Number of frames in ``out`` at the end.

    Raises
    ------
    DatasetError
        An output cannot be written, exists without ``append``/``overwrite``, or is damaged.
    InvalidInput
        Appending with settings or a starting structure other than the file's.
    """
    from ..scf.hook import check_spec, guided_gpaw
    from ..scf.providers import make_provider
    from .continuation import check_append, check_outputs

    guess_name, wfs_order = check_spec(guess)
    from_root(check_outputs, out, append=append, overwrite=overwrite, gpaw_txt=gpaw_txt)
    stored = from_root(lambda: check_append(out, settings, atoms) if append and Path(out).exists() else None)
    if atoms is None and (stored is None or stored.frames == 0):
        raise InvalidInput("no starting structure: give atoms, or append to an existing file with frames")
    writer = open_writer(out, append=append, overwrite=overwrite,
                         attrs={"timestep_fs": settings.timestep_fs, "aimd_settings": asdict(settings)})
    log_file = None
    try:
        if gpaw_txt is not None and str(gpaw_txt) != "-":  # GPAW logs from rank 0, which opens the file
            opened: list[IO[str]] = []
            from_root(lambda: opened.append(open(gpaw_txt, "a" if append else "w", encoding="utf-8")))  # noqa: SIM115
            log_file = opened[0] if opened else None
        last = writer.last_frame()
        if last is not None:
            if last.velocities is None:  # checked by check_append; kept for a file changed since
                raise DatasetError(f"{out}: no velocities stored; cannot continue the MD")
            atoms = Atoms(numbers=last.numbers, positions=last.positions, cell=last.cell, pbc=last.pbc)
            atoms.set_velocities(last.velocities)
            log.info("continuing %s from frame %d (t = %.2f fs)", out, len(writer) - 1, last.time_fs)
        elif atoms is None:  # the file lost its frames since check_append
            raise InvalidInput("no starting structure: give atoms, or append to an existing file with frames")
        else:
            atoms = atoms.copy()
        calc = make_gpaw(settings, txt="-" if gpaw_txt is not None and str(gpaw_txt) == "-" else log_file)
        atoms.calc = guided_gpaw(calc, make_provider(guess_name, calc), wfs_extrapolation=wfs_order)
        # A resumed run draws fresh Langevin noise: seed offset by the frames already written.
        seed = settings.seed + len(writer)

        bar = _progress(settings, progress and is_root(), resumed=last is not None)
        if last is None:
            T0 = settings.melt_temperature_K if settings.melt_steps else settings.temperature_K
            thermalize_momenta(atoms, T0, rng=np.random.default_rng(seed))
            Stationary(atoms)
            for nsteps, T in ((settings.melt_steps, settings.melt_temperature_K),
                              (settings.equil_steps, settings.temperature_K)):
                if nsteps:
                    pre = _dynamics(atoms, settings, T, seed)
                    bar.attach(pre)
                    pre.run(nsteps)
        dyn = _dynamics(atoms, settings, settings.temperature_K, seed)
        recorder = DensityRecorder(writer, atoms, dyn)
        dyn.attach(recorder, interval=settings.interval)
        bar.attach(dyn)
        dyn.run(settings.steps)
        bar.close()
        return len(writer)
    finally:
        try:
            writer.close()
        finally:
            if log_file is not None:
                log_file.close()


class _progress:
    """A tqdm bar over all MD steps (melting and equilibration included), or nothing."""

    def __init__(self, settings: AIMDSettings, enabled: bool, resumed: bool) -> None:
        total = settings.steps + (0 if resumed else settings.melt_steps + settings.equil_steps)
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="GPAW MD", unit="step")

    def attach(self, dyn: Any) -> None:
        # Observers are also called once before the first step of every run: skip that call.
        if self._bar is not None:
            dyn.attach(lambda: dyn.nsteps > 0 and self._bar.update(1), interval=1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
