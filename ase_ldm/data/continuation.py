"""Checks before a recording runs: every output can be written, and an append continues the same run.

Both run before any GPAW work, so a mistake costs seconds, not an MD run: :func:`check_outputs`
refuses missing or unwritable folders and existing files (unless appending or replacing);
:func:`check_append` refuses to continue a dataset with other settings (temperature, ensemble,
timestep, cutoff, k-points, ...) or from another structure than its last frame.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ..errors import DatasetError, InvalidInput
from .aimd import AIMDSettings
from .store import open_dataset

__all__ = ["StoredRun", "check_outputs", "check_append", "stored_run", "settings_differences", "same_setting"]


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


def same_setting(a: Any, b: Any) -> bool:
    """Whether two recorded settings agree (numbers to 1e-6 relative, sequences item by item)."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same_setting(x, y) for x, y in zip(a, b))
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
        if same_setting(old, new):
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
