"""Build datasets from other formats, and export frames as cube files.

Sources: an ASE trajectory plus one Gaussian cube file per frame, GPAW restart files
(``.gpw``), and the reference ``.npz`` format of the shared Li16 data. Frames are matched
in order; any mismatch is an error that names the frame.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.units import Bohr

from ..errors import DatasetError, InvalidInput
from .atomic import atomic_output
from .schema import Frame
from .store import DensityDataset, DensityWriter

__all__ = [
    "read_cube",
    "write_cube",
    "frames_from_cubes",
    "frames_from_npz",
    "frames_from_gpw",
    "write_frames",
    "export_cube",
]


def _natural_key(path: str) -> list[Any]:
    """Sort ``f2.cube`` before ``f10.cube``."""
    import re

    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", path)]


def expand_glob(pattern: str) -> list[str]:
    """Files matching ``pattern`` in natural order; an error if none match."""
    files = sorted(glob.glob(pattern), key=_natural_key)
    if not files:
        raise DatasetError(f"no files match {pattern!r}")
    return files


def read_cube(path: str | os.PathLike) -> tuple[np.ndarray, Atoms]:
    """Read a (possibly gzipped) Gaussian cube file.

    Returns
    -------
    data : (N1, N2, N3) float64 array
        As stored in the file; for GPAW densities that is electrons/Bohr^3.
    atoms : Atoms
    """
    from ase.io.cube import read_cube as _read

    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the name says
            raw = gzip.decompress(raw)
        text = raw.decode()
        out = _read(io.StringIO(text), read_data=True)
    except (OSError, ValueError, IndexError, EOFError) as err:
        raise DatasetError(f"{path}: cannot read as a cube file ({err}); the file is truncated or not a cube") from None
    data = np.asarray(out["data"])
    if data.ndim != 3:
        raise DatasetError(f"{path}: cube data has shape {data.shape}, expected a 3D grid")
    return data, out["atoms"]


def write_cube(path: str | os.PathLike, atoms: Atoms, n_R: np.ndarray, *, overwrite: bool = True) -> None:
    """Write a density in electrons/Angstrom^3 as a cube file in electrons/Bohr^3.

    Follows GPAW's convention ``write(f, atoms, data=n * Bohr**3)`` and ASE's cube layout
    (origin 0, grid point (i, j, k) at fractional (i/N1, j/N2, k/N3)), but prints 9
    significant digits so float32 data survive a round trip exactly. A ``.gz`` name is
    gzip-compressed. The file is written under a unique temporary name and renamed (see
    :func:`ase_ldm.data.atomic.atomic_output`); ``overwrite=False`` refuses an existing file.
    """
    path = Path(path)
    data = np.asarray(n_R, np.float64) * Bohr**3
    if data.ndim != 3:
        raise InvalidInput(f"a cube holds one 3D grid, got shape {data.shape}")
    lines = ["ase_ldm density, electrons/Bohr^3", "OUTER LOOP: X, MIDDLE LOOP: Y, INNER LOOP: Z",
             f"{len(atoms):5d}{0.0:12.6f}{0.0:12.6f}{0.0:12.6f}"]
    for c in range(3):
        lines.append(f"{data.shape[c]:5d}" + "".join(f"{x:12.6f}" for x in atoms.cell[c] / data.shape[c] / Bohr))
    for Z, pos in zip(atoms.numbers, atoms.positions / Bohr):
        lines.append(f"{Z:5d}{0.0:12.6f}" + "".join(f"{x:12.6f}" for x in pos))
    body = "\n".join(" ".join(f"{v:.8e}" for v in row) for row in data.reshape(-1, 6 if data.size % 6 == 0 else 1))
    text = "\n".join(lines) + "\n" + body + "\n"
    raw = gzip.compress(text.encode()) if path.suffix == ".gz" else text.encode()
    with atomic_output(path, overwrite=overwrite) as tmp:
        try:
            tmp.write_bytes(raw)
        except OSError as err:
            raise DatasetError(f"cannot write {path} ({err.strerror or err}); free disk space or choose "
                               "another location") from None


def _check_atoms(where: str, atoms: Atoms, ref: Atoms, tol: float = 1e-4) -> None:
    if len(atoms) != len(ref) or np.any(atoms.numbers != ref.numbers):
        raise DatasetError(f"{where}: atoms {atoms.get_chemical_formula()} differ from the trajectory's "
                           f"{ref.get_chemical_formula()} (count, species or order)")
    diff = np.abs(atoms.positions - ref.positions).max()
    if diff > tol:
        raise DatasetError(f"{where}: atom positions differ from the trajectory frame by {diff:.3g} A; "
                           "the cube files and the trajectory do not correspond")
    cdiff = np.abs(atoms.cell[:] - ref.cell[:]).max()
    if cdiff > tol:
        raise DatasetError(f"{where}: cell differs from the trajectory frame by {cdiff:.3g} A")


def frames_from_cubes(
    trajectory: str | os.PathLike | Sequence[Atoms],
    cubes: str | Sequence[str],
    timestep_fs: float,
    t0_fs: float = 0.0,
) -> Iterator[Frame]:
    """Frames from an ASE trajectory and one cube file per frame (electrons/Bohr^3).

    Parameters
    ----------
    trajectory : path or list of Atoms
        Any file ``ase.io.read(..., index=':')`` reads.
    cubes : glob pattern or list of paths
        One cube per trajectory frame, in natural sort order; plain or ``.gz``.
    timestep_fs : float
        Time between frames, fs (trajectories do not store it).
    """
    images = _read_images(trajectory) if isinstance(trajectory, (str, os.PathLike)) else list(trajectory)
    files = expand_glob(cubes) if isinstance(cubes, str) else list(cubes)
    if len(files) != len(images):
        raise DatasetError(f"{len(files)} cube files but {len(images)} trajectory frames; "
                           "give exactly one cube per frame")
    grid = None
    for i, (atoms, fname) in enumerate(zip(images, files)):
        data, cube_atoms = read_cube(fname)
        where = f"frame {i} ({fname})"
        if grid is None:
            grid = data.shape
        elif data.shape != grid:
            raise DatasetError(f"{where}: grid {data.shape} differs from frame 0's {grid}")
        _check_atoms(where, cube_atoms, atoms)
        yield Frame(
            nt_sR=(data / Bohr**3)[None].astype(np.float32),
            positions=atoms.positions.copy(),
            cell=atoms.cell[:].copy(),
            numbers=atoms.numbers.copy(),
            time_fs=t0_fs + i * timestep_fs,
            velocities=atoms.get_velocities() if atoms.has("momenta") else None,
            energy=_maybe(atoms, "energy"),
            forces=_maybe(atoms, "forces"),
            pbc=atoms.pbc.copy(),
        )


def _read_images(path: str | os.PathLike) -> list[Atoms]:
    """All frames of an ASE-readable trajectory; a missing, empty or unreadable file is a DatasetError."""
    from ase.io import read
    from ase.io.formats import UnknownFileTypeError

    path = Path(path)
    try:
        images = read(path, index=":")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (UnknownFileTypeError, OSError, ValueError, KeyError, IndexError, EOFError, StopIteration) as err:
        if path.is_dir():
            raise DatasetError(f"{path} is a folder, not a trajectory ASE can read ({err}); give the trajectory "
                               "file (e.g. md.traj)") from None
        raise DatasetError(f"{path}: cannot read as an ASE trajectory ({type(err).__name__}: {err}); the file is "
                           "empty, truncated or of a format ASE does not know") from None
    if not images:
        raise DatasetError(f"{path}: the trajectory holds no frames")
    return images


def _maybe(atoms: Atoms, name: str) -> Any:
    calc = atoms.calc
    if calc is None or name not in getattr(calc, "results", {}):
        return None
    return calc.results[name]


NPZ_ARRAYS = ("nt", "positions", "cell", "numbers", "timestep_fs")
NPZ_OPTIONAL = ("D", "velocities", "energy", "forces", "scf_iterations")


def frames_from_npz(path: str | os.PathLike) -> tuple[Iterator[Frame], dict[str, Any]]:
    """Frames from the reference ``.npz`` format (see ``shared/data/README.md``).

    Returns the frame iterator and provenance attributes (from ``<name>.meta.json`` if present).

    Raises
    ------
    DatasetError
        The file is missing, empty, truncated, not an ``.npz`` archive of arrays, lacks an
        array or has arrays of inconsistent shapes; or the meta JSON is unreadable.
    """
    path = Path(path)
    arrays = _load_npz(path)
    T = _check_npz_shapes(path, arrays)
    attrs: dict[str, Any] = {"source": f"npz:{path.name}"}
    meta_path = path.with_suffix(".meta.json")
    if meta_path.exists():
        attrs.update(_attrs_from_meta(_read_meta(meta_path)))
    dt = float(arrays["timestep_fs"])
    attrs.setdefault("timestep_fs", dt)
    nt, cell, numbers, D = arrays["nt"], arrays["cell"], arrays["numbers"], arrays.get("D")

    def frames() -> Iterator[Frame]:
        for i in range(T):
            yield Frame(
                nt_sR=nt[i][None] if nt.ndim == 4 else nt[i],
                positions=arrays["positions"][i],
                cell=cell[i] if cell.ndim == 3 else cell,
                numbers=numbers,
                time_fs=i * dt,
                D_asii=None if D is None else [D[i, a][None] if D.ndim == 4 else D[i, a] for a in range(D.shape[1])],
                velocities=arrays["velocities"][i] if "velocities" in arrays else None,
                energy=float(arrays["energy"][i]) if "energy" in arrays else None,
                forces=arrays["forces"][i] if "forces" in arrays else None,
                scf_iterations=int(arrays["scf_iterations"][i]) if "scf_iterations" in arrays else None,
            )

    return frames(), attrs


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """The reference arrays of an ``.npz`` file, each read once; anything unreadable is a DatasetError.

    Never loads pickled objects, and never suggests doing so.
    """
    if path.is_dir():
        raise DatasetError(f"{path} is a folder, not an .npz file")
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise _bad_npz(path, err) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path}: holds a single array, not an .npz archive of the arrays {list(NPZ_ARRAYS)}")
    with z:
        missing = sorted(set(NPZ_ARRAYS) - set(z.files))
        if missing:
            raise DatasetError(f"{path}: missing arrays {missing}; expected the reference npz format")
        try:
            return {k: z[k] for k in (*NPZ_ARRAYS, *NPZ_OPTIONAL) if k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise _bad_npz(path, err) from None


def _bad_npz(path: Path, err: BaseException) -> DatasetError:
    if isinstance(err, EOFError) or (path.exists() and path.stat().st_size == 0):
        reason = "the file is empty"
    elif isinstance(err, (zipfile.BadZipFile, zlib.error)):
        reason = f"damaged or cut-short zip archive: {err}"
    elif "pickle" in str(err):  # numpy's text suggests allow_pickle: loading untrusted pickles is never needed here
        reason = "not a NumPy .npz archive (its content would need unpickling, which ase_ldm never does)"
    else:
        reason = str(err)
    return DatasetError(f"{path}: cannot read as .npz ({reason}); the file is empty, truncated or not an .npz "
                        "archive of arrays: re-create or re-download it")


def _check_npz_shapes(path: Path, a: dict[str, np.ndarray]) -> int:
    """Check the reference arrays' shapes against each other; return the number of frames."""
    def bad(name: str, expected: str) -> DatasetError:
        return DatasetError(f"{path}: {name} has shape {a[name].shape}, expected {expected}")

    nt = a["nt"]
    if nt.ndim not in (4, 5):
        raise bad("nt", "(T, N1, N2, N3) or (T, S, N1, N2, N3)")
    T = nt.shape[0]
    if T == 0:
        raise DatasetError(f"{path}: nt holds no frames")
    for name in ("positions", *NPZ_OPTIONAL):
        if name in a and (a[name].ndim == 0 or a[name].shape[0] != T):
            n = a[name].shape[0] if a[name].ndim else "no"
            raise DatasetError(f"{path}: {name} has {n} frames, nt has {T}")
    if a["numbers"].ndim != 1:
        raise bad("numbers", "(Na,)")
    na = len(a["numbers"])
    if a["positions"].shape != (T, na, 3):
        raise bad("positions", f"(T={T}, Na={na}, 3)")
    if a["cell"].shape not in ((3, 3), (T, 3, 3)):
        raise bad("cell", f"(3, 3) or (T={T}, 3, 3)")
    dt = a["timestep_fs"]
    if dt.size != 1 or not np.issubdtype(dt.dtype, np.number) or not float(dt.reshape(())) > 0:
        raise DatasetError(f"{path}: timestep_fs must be one positive number (fs), got {dt!r}")
    if "D" in a and (a["D"].ndim not in (4, 5) or a["D"].shape[:2] != (T, na)):
        raise bad("D", f"(T={T}, Na={na}, ni, ni) or (T, Na, S, ni, ni)")
    for name in ("velocities", "forces"):
        if name in a and a[name].shape != (T, na, 3):
            raise bad(name, f"(T={T}, Na={na}, 3)")
    for name in ("energy", "scf_iterations"):
        if name in a and a[name].shape != (T,):
            raise bad(name, f"(T={T},)")
    return T


def _read_meta(meta_path: Path) -> dict[str, Any]:
    """The optional provenance file next to an ``.npz``; it must hold a JSON object."""
    fix = "fix it, or remove it (it is optional)"
    if meta_path.is_dir():
        raise DatasetError(f"{meta_path} is a folder, not a provenance JSON file; {fix}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DatasetError(f"{meta_path}: cannot read the provenance JSON ({err}); {fix}") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{meta_path}: must hold a JSON object of provenance fields, got a JSON "
                           f"{type(meta).__name__}; {fix}")
    return meta


def _attrs_from_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Map the reference meta.json keys onto the dataset's provenance attributes."""
    rename = {"gpaw": "gpaw_version", "thermostat": "ensemble", "kpts": "kpts", "occupations": "smearing"}
    out = {rename.get(k, k): v for k, v in meta.items() if k not in ("arrays", "grid", "frames")}
    if isinstance(meta.get("mode"), str) and "PW(" in meta["mode"]:
        try:
            out["ecut_eV"] = float(meta["mode"].split("(")[1].split()[0].rstrip(")"))
        except (IndexError, ValueError):
            pass
    if isinstance(meta.get("arrays"), dict) and "nt" in meta["arrays"]:
        out["nt_source"] = meta["arrays"]["nt"]
    return out


def frames_from_gpw(files: Iterable[str | os.PathLike], timestep_fs: float, t0_fs: float = 0.0
                    ) -> tuple[Iterator[Frame], dict[str, Any]]:
    """Frames from GPAW restart files, one per frame, in the given order."""
    from .gpaw_io import frame_from_gpaw, load_gpw, provenance_from_gpaw

    files = list(files)
    if not files:
        raise DatasetError("no .gpw files given")
    first = load_gpw(files[0])
    attrs = provenance_from_gpaw(first)
    attrs["source"] = f"gpw:{Path(files[0]).name}..."
    attrs["timestep_fs"] = timestep_fs

    def frames() -> Iterator[Frame]:
        ref = None
        for i, fname in enumerate(files):
            calc = first if i == 0 else load_gpw(fname)
            frame = frame_from_gpaw(calc, calc.atoms, time_fs=t0_fs + i * timestep_fs)
            if ref is not None:
                where = f"frame {i} ({fname})"
                if frame.grid != ref.grid:
                    raise DatasetError(f"{where}: grid {frame.grid} differs from frame 0's {ref.grid}")
                if len(frame.numbers) != len(ref.numbers) or np.any(frame.numbers != ref.numbers):
                    raise DatasetError(f"{where}: atoms differ from frame 0's (count, species or order)")
            if ref is None:
                ref = frame
            yield frame

    return frames(), attrs


def write_frames(path: str | os.PathLike, frames: Iterable[Frame], attrs: dict[str, Any] | None = None,
                 *, overwrite: bool = False, progress: bool = False) -> int:
    """Write frames to a new dataset file, atomically: a failure leaves no partial output.

    The file is built under a unique temporary name next to ``path`` and renamed at the end,
    so an existing file is never touched unless ``overwrite`` and the import succeeded. While
    it runs, ``path`` is locked: a second writer of the same output is refused (see
    :mod:`ase_ldm.data.atomic`).

    Returns
    -------
    int
        The number of frames written (each one verified on disk).

    Raises
    ------
    DatasetError
        ``path`` exists (without ``overwrite``) or is being written by another process, a
        frame is invalid, or writing failed (disk full, read-only folder, ...).
    """
    path = Path(path)
    n = 0
    with atomic_output(path, overwrite=overwrite) as tmp:
        it = frames
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(frames, desc=f"import -> {path.name}", unit="frame")
        with DensityWriter(tmp, attrs=attrs, overwrite=True, lock=False, name=path) as writer:
            for frame in it:
                writer.append(frame)
                n += 1
        if n == 0:
            raise DatasetError(f"{path}: no frames to write")
    return n


def export_cube(dataset: DensityDataset, index: int, path: str | os.PathLike, spin: int | None = None,
                *, overwrite: bool = True) -> None:
    """Write frame ``index`` of ``dataset`` as a cube file (electrons/Bohr^3, GPAW convention).

    ``spin=None`` writes the total density (sum over spins). ``overwrite=False`` refuses an
    existing ``path``.
    """
    nt_sR = dataset.nt(index).astype(np.float64)
    if spin is not None and not 0 <= spin < len(nt_sR):
        raise InvalidInput(f"spin {spin} out of range: {dataset.path} has {len(nt_sR)} spin channel(s); use "
                           f"0..{len(nt_sR) - 1}, or leave it out for the total density")
    n_R = nt_sR.sum(0) if spin is None else nt_sR[spin]
    write_cube(path, dataset.atoms(index), n_R, overwrite=overwrite)
