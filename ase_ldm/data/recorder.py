"""An observer that writes GPAW densities from any ASE dynamics into a dataset.

Example::

    recorder = DensityRecorder("traj.h5", atoms, dyn)
    dyn.attach(recorder, interval=5)
    dyn.run(100)

Each call appends one flushed frame, so a killed run keeps every completed frame. With
``append=True`` an existing file is continued: its time axis goes on from the last frame,
and the first call of a fresh dynamics object (step 0, the state already stored) is skipped.
A continued file must stay one run: dynamics (ensemble, thermostat, temperature, friction)
or GPAW settings (mode, xc, cutoff, k-points, smearing) other than the stored ones are refused.

Under MPI (``mpiexec -n N``, ``gpaw -P N``) every rank gathers the frame and rank 0 writes it
(:class:`~ase_ldm.data.root_writer.RootWriter`); an error in writing is raised on every rank.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from ase import Atoms, units

from ..core.mpi import world
from ..errors import DatasetError, InvalidInput
from .gpaw_io import frame_from_gpaw, provenance_from_gpaw
from .root_writer import RootWriter, open_writer
from .store import DensityWriter

__all__ = ["DensityRecorder", "dynamics_attrs"]

# provenance that must not change within one trajectory (timestep: checked by DensityWriter)
_DYNAMICS_KEYS = ("ensemble", "dynamics", "temperature_K", "friction_per_fs")
_GPAW_KEYS = ("mode", "xc", "kpts", "ecut_eV", "smearing", "spinpol")


def dynamics_attrs(dyn: Any) -> dict[str, Any]:
    """Provenance of an ASE dynamics object: ensemble, timestep, thermostat settings."""
    name = type(dyn).__name__
    out: dict[str, Any] = {"ensemble": {"VelocityVerlet": "NVE"}.get(name, "NVT" if hasattr(dyn, "temp") else name),
                           "dynamics": name, "timestep_fs": round(float(dyn.dt / units.fs), 9)}
    if hasattr(dyn, "temp"):
        out["temperature_K"] = round(float(dyn.temp / units.kB), 9)
    if hasattr(dyn, "fr"):
        out["friction_per_fs"] = round(float(dyn.fr * units.fs), 12)
    return out


def _differences(stored: dict[str, Any], new: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """``'key: stored X, requested Y'`` for each of ``keys`` present in both and different."""
    from .continuation import same_setting

    return [f"{key}: stored {stored[key]!r}, requested {new[key]!r}" for key in keys
            if key in stored and key in new and not same_setting(stored[key], new[key])]


class DensityRecorder:
    """Callable observer writing the attached calculator's density as one frame per call.

    Parameters
    ----------
    target : path, DensityWriter or RootWriter
        Output dataset. A path is opened with ``append`` / ``overwrite`` as given (from rank 0
        under MPI, :func:`~ase_ldm.data.root_writer.open_writer`).
    atoms : Atoms
        The atoms the dynamics moves; ``atoms.calc`` must be a (new-code) GPAW calculator.
    dyn : ASE dynamics, optional
        Supplies the time (``dyn.get_time()``) and provenance (ensemble, timestep,
        temperature). Without it frames are spaced by ``timestep_fs``.
    timestep_fs : float, optional
        Time between recorded frames when no ``dyn`` is given.
    append, overwrite : bool
        See :class:`~ase_ldm.data.store.DensityWriter`.
    attrs : mapping, optional
        Extra provenance attributes.

    Raises
    ------
    InvalidInput
        When appending to a file with frames: ``dyn`` differs from the recorded dynamics
        (ensemble, dynamics class, temperature, friction), or, at the first call, the
        calculator from the recorded GPAW settings (mode, xc, cutoff, k-points, smearing).
    """

    def __init__(
        self,
        target: str | os.PathLike | DensityWriter | RootWriter,
        atoms: Atoms,
        dyn: Any = None,
        *,
        timestep_fs: float | None = None,
        append: bool = False,
        overwrite: bool = False,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        if dyn is None and timestep_fs is None:
            raise InvalidInput("give the dynamics object (dyn=...) or the time between frames (timestep_fs=...)")
        extra = dict(attrs or {})
        if dyn is not None:
            extra = {**dynamics_attrs(dyn), **extra}
        given = isinstance(target, (DensityWriter, RootWriter))
        if isinstance(target, DensityWriter) and world().size > 1:
            raise InvalidInput(f"DensityRecorder on {world().size} MPI ranks with a DensityWriter: every rank "
                               "would open the file; pass the path (or open_writer(path), which writes from "
                               "rank 0)")
        self.writer = target if given else open_writer(target, append=append, overwrite=overwrite, attrs=extra)
        if given:
            self.writer.attrs.update(extra)
        self._stored = self.writer.stored_attrs if len(self.writer) else {}
        if self._stored:
            diffs = _differences(self._stored, extra, _DYNAMICS_KEYS)
            if diffs:
                if not given:
                    self.writer.close()  # opened here: release the file
                raise InvalidInput(
                    f"{self.writer.path}: appending with other dynamics than the trajectory was recorded with "
                    f"({'; '.join(diffs)}); use the recorded settings or write a new file")
        self.atoms = atoms
        self.dyn = dyn
        self.timestep_fs = timestep_fs
        last = self.writer.last_time_fs
        self._t0 = 0.0 if last is None else last
        self._skip_first = last is not None
        self._last_positions = None if last is None else self.writer.last_frame().positions

    def _time_fs(self) -> float:
        if self.dyn is not None:
            return self._t0 + float(self.dyn.get_time() / units.fs)
        last = self.writer.last_time_fs
        return 0.0 if last is None else last + float(self.timestep_fs)

    def __call__(self) -> None:
        calc = self.atoms.calc
        if calc is None:
            raise DatasetError("the atoms have no calculator; attach a GPAW calculator before recording")
        if self._skip_first:
            self._skip_first = False
            at_start = self.dyn is None or self.dyn.nsteps == 0
            if at_start and np.allclose(self.atoms.positions, self._last_positions, atol=1e-8):
                return  # the state the appended run starts from is already the file's last frame
        if len(self.writer) == 0:
            self.writer.attrs = {**provenance_from_gpaw(calc), **self.writer.attrs}
        elif self._stored:
            diffs = _differences(self._stored, provenance_from_gpaw(calc), _GPAW_KEYS)
            if diffs:
                raise InvalidInput(
                    f"{self.writer.path}: appending a frame computed with other GPAW settings than the "
                    f"trajectory's ({'; '.join(diffs)}); use the recorded settings or write a new file")
            self._stored = {}  # checked once: the calculator keeps its settings
        frame = frame_from_gpaw(calc, self.atoms, time_fs=self._time_fs())
        self.writer.append(frame)

    def __len__(self) -> int:
        return len(self.writer)

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> DensityRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
