"""Run GPAW ab-initio MD and record the density: structures, calculator settings, the loop.

The ``li-liquid`` preset is N lithium atoms at the liquid density of the reference data
(24.01 Angstrom^3 per atom: bcc with a = 3.635 Angstrom), melted, then equilibrated at the
chosen temperature before recording starts.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
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

from ..errors import DatasetError, InvalidInput
from .recorder import DensityRecorder
from .store import DensityWriter, open_dataset

__all__ = ["AIMDSettings", "StoredRun", "li_liquid", "make_gpaw", "run_aimd", "check_outputs", "check_append",
           "stored_run", "settings_differences", "PRESETS"]

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
) -> int:
    """Run GPAW MD and record every ``settings.interval``-th step into ``out``.

    With ``append`` and an existing ``out``, MD continues from its last frame (positions and
    velocities), skipping melting and equilibration, and the time axis continues.

    Before any GPAW work the outputs are checked (:func:`check_outputs`) and, when appending to
    a file with frames, the settings and ``atoms`` are compared with the file's
    (:func:`check_append`): a difference raises instead of being ignored. A GPAW log
    (``gpaw_txt``, a path or ``'-'`` for stdout) is continued when appending, never replaced
    unless ``overwrite``.

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
    check_outputs(out, append=append, overwrite=overwrite, gpaw_txt=gpaw_txt)
    stored = check_append(out, settings, atoms) if append and Path(out).exists() else None
    if atoms is None and (stored is None or stored.frames == 0):
        raise InvalidInput("no starting structure: give atoms, or append to an existing file with frames")
    writer = DensityWriter(out, append=append, overwrite=overwrite,
                           attrs={"timestep_fs": settings.timestep_fs, "aimd_settings": asdict(settings)})
    log_file = None
    try:
        if gpaw_txt is not None and str(gpaw_txt) != "-":
            log_file = open(gpaw_txt, "a" if append else "w", encoding="utf-8")  # noqa: SIM115 - closed below
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
        atoms.calc = make_gpaw(settings, txt=gpaw_txt if log_file is None else log_file)
        # A resumed run draws fresh Langevin noise: seed offset by the frames already written.
        seed = settings.seed + len(writer)

        bar = _progress(settings, progress, resumed=last is not None)
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


# -- checks before any GPAW work -------------------------------------------------------------

def _check_writable(path: Path, what: str, *, may_exist: bool, replace_hint: str) -> None:
    """Refuse a path that cannot be written as a new (or, if ``may_exist``, existing) file."""
    if path.is_dir():
        raise DatasetError(f"{path}: is a folder; give a file name for the {what}")
    parent = path.parent
    if not parent.exists():
        raise DatasetError(
            f"{path}: the folder {parent} does not exist; create it first (mkdir -p {parent}) "
            f"or choose another {what}; nothing was run")
    if not parent.is_dir():
        raise DatasetError(f"{path}: {parent} is not a folder; choose another {what}; nothing was run")
    if path.exists():
        if not may_exist:
            raise DatasetError(f"{path} exists; {replace_hint}; nothing was run")
        if not os.access(path, os.W_OK):
            raise DatasetError(f"{path}: no permission to write it; choose another {what}; nothing was run")
        return
    try:  # os.access ignores read-only mounts for root; creating a file is the real test
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".ase-ldm-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise DatasetError(
            f"{path}: cannot create files in {parent} ({err.strerror or err}); choose a writable "
            f"folder for the {what}; nothing was run") from None


def check_outputs(
    out: str | os.PathLike,
    *,
    append: bool = False,
    overwrite: bool = False,
    gpaw_txt: str | os.PathLike | None = None,
) -> None:
    """Check that every output of a recording can be written, before any computation.

    Parameters
    ----------
    out : path
        The dataset. Its folder must exist and be writable; an existing file is refused
        unless ``append`` (continue it) or ``overwrite`` (replace it).
    append, overwrite : bool
        As for :func:`run_aimd`.
    gpaw_txt : path or '-', optional
        The GPAW log: checked like ``out`` (an existing log is continued when appending,
        replaced only with ``overwrite``); it must not be the dataset itself.

    Raises
    ------
    DatasetError
        What is wrong with which output, and what to do.
    """
    out = Path(out)
    _check_writable(out, "output dataset", may_exist=append or overwrite,
                    replace_hint="continue it with --append or replace it with --force")
    if gpaw_txt is None or str(gpaw_txt) == "-":
        return
    txt = Path(gpaw_txt)
    if txt.resolve() == out.resolve():
        raise DatasetError(f"{txt}: the GPAW log would overwrite the output dataset; give --gpaw-txt another name")
    _check_writable(txt, "GPAW log (--gpaw-txt)", may_exist=append or overwrite,
                    replace_hint="choose another --gpaw-txt, continue it with --append or replace it with --force")


@dataclass
class StoredRun:
    """What a dataset says about the AIMD run that wrote it (see :func:`stored_run`).

    Attributes
    ----------
    settings : dict
        :class:`AIMDSettings` field values the file records: all of them for files written by
        :func:`run_aimd` (``aimd_settings`` attribute), else those its provenance implies.
    mode : str or None
        GPAW mode name ('pw', 'fd', 'lcao'), if recorded.
    frames : int
        Complete frames in the file.
    has_velocities : bool
        Whether the file stores velocities (needed to continue the MD).
    numbers, positions, cell, time_fs
        The last frame's species, positions (Angstrom), cell (Angstrom) and time (fs); None
        for an empty file.
    """

    settings: dict[str, Any] = field(default_factory=dict)
    mode: str | None = None
    frames: int = 0
    numbers: np.ndarray | None = None
    positions: np.ndarray | None = None
    cell: np.ndarray | None = None
    time_fs: float | None = None
    has_velocities: bool = False


_FIELDS = {f.name for f in fields(AIMDSettings)}
# provenance attribute -> AIMDSettings field, for files without 'aimd_settings'
_ATTR_FIELDS = {"timestep_fs": "timestep_fs", "temperature_K": "temperature_K", "friction_per_fs": "friction_per_fs",
                "ecut_eV": "ecut", "xc": "xc"}
# field -> (command-line option, why it matters); settings not listed here are compared too
_OPTIONS = {
    "timestep_fs": ("--timestep", ""),
    "ecut": ("--ecut", "the cutoff sets the density grid"),
    "temperature_K": ("--temperature", ""),
    "ensemble": ("--ensemble", ""),
    "friction_per_fs": ("--friction", ""),
    "melt_steps": ("--melt-steps", "a continued run does not melt again"),
    "melt_temperature_K": ("--melt-temperature", "a continued run does not melt again"),
    "equil_steps": ("--equil-steps", "a continued run does not equilibrate again"),
    "interval": ("--interval", "sets the time between frames"),
    "seed": ("--seed", "a continued run draws its noise from the stored seed"),
    "kpts": ("--kpts", ""),
    "gpts": ("--gpts", "sets the density grid"),
    "xc": ("", ""),
    "smearing_eV": ("", ""),
    "mode": ("", "ase-ldm record runs plane-wave (pw) GPAW"),
}
# settings that may differ when appending: how many more steps to run
_NOT_COMPARED = {"steps"}


def stored_run(path: str | os.PathLike) -> StoredRun:
    """Read the AIMD settings and last frame an existing dataset records.

    Raises
    ------
    DatasetError
        ``path`` is missing, damaged or not a density trajectory.
    """
    with open_dataset(path) as ds:
        attrs = ds.attrs
        run = StoredRun(frames=len(ds), has_velocities=ds.has("velocities"))
        if run.frames:
            last = run.frames - 1
            run.numbers = np.asarray(ds.numbers)
            run.positions = np.asarray(ds.array("positions", last, last + 1)[0])
            run.cell = np.asarray(ds.cell(last))
            run.time_fs = float(ds.time_fs[last])
    settings: dict[str, Any] = {}
    for key, name in _ATTR_FIELDS.items():
        if attrs.get(key) is not None:
            settings[name] = attrs[key]
    if isinstance(attrs.get("ensemble"), str):
        settings["ensemble"] = attrs["ensemble"].lower()
    kpts = attrs.get("kpts")
    if isinstance(kpts, list) and len(kpts) == 3:
        settings["kpts"] = kpts
    interval, timestep = attrs.get("frame_interval_fs"), attrs.get("timestep_fs")
    if interval is not None and timestep:
        ratio = float(interval) / float(timestep)
        if abs(ratio - round(ratio)) < 1e-6 and round(ratio) >= 1:
            settings["interval"] = round(ratio)
    recorded = attrs.get("aimd_settings")
    if isinstance(recorded, dict):
        settings.update({k: v for k, v in recorded.items() if k in _FIELDS})
    for name in ("kpts", "gpts"):
        if isinstance(settings.get(name), list):
            settings[name] = tuple(int(k) for k in settings[name])
    run.settings = settings
    mode = attrs.get("mode")
    run.mode = str(mode).lower() if mode is not None else None
    return run


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _show(value: Any) -> str:
    return repr(list(value) if isinstance(value, tuple) else value)


def settings_differences(stored: StoredRun, settings: AIMDSettings) -> list[str]:
    """One line per setting in which ``settings`` differ from those ``stored`` in a dataset.

    ``steps`` is never compared (it is how many more steps to run); settings the file does not
    record are not compared.
    """
    requested = asdict(settings)
    pairs = [(name, value, requested[name]) for name, value in stored.settings.items()
             if name in requested and name not in _NOT_COMPARED]
    if stored.mode is not None:
        pairs.append(("mode", stored.mode, "pw"))
    out = []
    for name, old, new in pairs:
        if _same(old, new):
            continue
        option, why = _OPTIONS.get(name, ("", ""))
        label = f"{name} ({option})" if option else name
        out.append(f"{label}: stored {_show(old)}, requested {_show(new)}" + (f" [{why}]" if why else ""))
    return out


def check_append(
    out: str | os.PathLike,
    settings: AIMDSettings,
    atoms: Atoms | None = None,
    *,
    structure: str | None = None,
) -> StoredRun:
    """Refuse to append to ``out`` with other settings or another starting structure.

    The run a dataset records must be one run: appending continues it from its last frame
    (positions and velocities), so every setting that affects the physics or the record
    (temperature, ensemble, friction, timestep, ecut, kpts, xc, mode, interval, gpts,
    seed, ...; all but ``steps``) must equal the stored one, and a starting structure is only
    accepted if it is the last frame itself (same species, cell and positions within 1e-6 A).

    Parameters
    ----------
    out : path
        An existing dataset.
    settings : AIMDSettings
        The settings the continued run would use.
    atoms : Atoms, optional
        A starting structure given with the append.
    structure : str, optional
        Where ``atoms`` came from (a file name), for the message.

    Returns
    -------
    StoredRun
        The file's stored run.

    Raises
    ------
    InvalidInput
        Naming each differing setting with its stored and requested value.
    DatasetError
        ``out`` is damaged, not a density trajectory, or stores no velocities to continue from.
    """
    stored = stored_run(out)
    if stored.frames and not stored.has_velocities:
        raise DatasetError(
            f"{out}: no velocities stored, so its MD cannot be continued; record a new file instead; nothing was run")
    diffs = settings_differences(stored, settings)
    if diffs:
        raise InvalidInput(
            f"{out} was recorded with other settings than requested; appending continues that run, so "
            f"they must match:\n  " + "\n  ".join(diffs) + "\nDrop these options (a continued run uses the "
            "stored settings) or write a new file (another -o, or --force to replace this one); nothing was run")
    if atoms is not None and stored.frames:
        what = structure or "the starting structure given"
        same = (len(atoms) == len(stored.numbers) and np.array_equal(atoms.numbers, stored.numbers)
                and np.abs(np.asarray(atoms.cell) - stored.cell).max() < 1e-6
                and np.abs(atoms.positions - stored.positions).max() < 1e-6)
        if not same:
            raise InvalidInput(
                f"{what}: --append continues {out} from its last frame (frame {stored.frames - 1}, "
                f"t = {stored.time_fs:g} fs), so a starting structure is only accepted if it is that frame, "
                f"and this one ({atoms.get_chemical_formula()}) is not. Drop the structure file to continue "
                "the run, or write a new file (another -o, or --force to replace this one); nothing was run")
    return stored


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
