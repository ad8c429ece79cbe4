"""Read densities out of GPAW (new code path) and convert between density conventions.

GPAW keeps two pseudo-densities apart:

* ``nt_sR`` -- the smooth pseudo-density, including the smooth pseudo-core density and without
  compensation charges. Strictly positive; this is what datasets store (as ``nt``).
* ``get_pseudo_density()`` of new GPAW -- ``nt`` plus the compensation charges
  :math:`\\sum_{aL} Q^a_L \\hat g^a_L(\\mathbf r)`, with
  :math:`Q^a_L = \\sum_{ij} D^a_{ij} \\Delta^a_{ijL}` (+ :math:`\\Delta^a_0 + N^a_v/\\sqrt{4\\pi}` for L=0).
  It integrates to the number of valence electrons and is negative near nuclei.

:func:`compensated_density` and :func:`nt_from_compensated` convert between them with GPAW's
own setups and compensation-charge functions.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from ase import Atoms
from ase.units import Bohr

from ..errors import DatasetError, InvalidInput
from .schema import Frame

__all__ = [
    "check_gpaw_calculator",
    "nt_sR_from_gpaw",
    "D_asii_from_gpaw",
    "frame_from_gpaw",
    "provenance_from_gpaw",
    "load_gpw",
    "compensated_density",
    "nt_from_compensated",
    "calculator_from_provenance",
    "superposition_density",
]


def check_gpaw_calculator(calc: Any) -> None:
    """Refuse calculators whose density we cannot read the documented way."""
    if not hasattr(calc, "dft"):
        raise DatasetError(
            f"{type(calc).__name__} is not a new-code GPAW calculator (no .dft attribute); "
            "ase_ldm reads GPAW >= 24 through gpaw.new (GPAW(...) from 'from gpaw import GPAW')")
    density = calc.dft.density
    if density.nt_sR.dims[0] not in (1, 2):
        raise DatasetError("non-collinear densities are not supported; use a collinear calculation")


def nt_sR_from_gpaw(calc: Any) -> np.ndarray:
    """GPAW's smooth pseudo-density, (S, N1, N2, N3) float64, electrons/Angstrom^3.

    Read from ``calc.dft.density.nt_sR`` on the periodic grid (all points, as
    ``get_pseudo_density()`` returns them), gathered to every rank.
    """
    check_gpaw_calculator(calc)
    nt_sR = calc.dft.density.nt_sR.to_pbc_grid().gather(broadcast=True)
    return np.asarray(nt_sR.data, dtype=np.float64) / Bohr**3


def D_asii_from_gpaw(calc: Any) -> list[np.ndarray]:
    """PAW atomic density matrices, one (S, ni, ni) float64 array per atom."""
    check_gpaw_calculator(calc)
    D_asii = calc.dft.density.D_asii.gather(broadcast=True)
    return [np.array(D_asii[a].real, dtype=np.float64) for a in range(len(calc.dft.setups))]


def frame_from_gpaw(calc: Any, atoms: Atoms | None = None, time_fs: float = 0.0,
                    scf_iterations: int | None = None) -> Frame:
    """Everything a dataset frame holds, from a converged GPAW calculator.

    Energy and forces come from the calculator's cached results (no new calculation).
    """
    atoms = calc.atoms if atoms is None else atoms
    results = getattr(calc, "results", {}) or {}
    if scf_iterations is None:
        try:
            scf_iterations = int(calc.get_number_of_iterations())
        except (AttributeError, TypeError):
            scf_iterations = None
    energy = results.get("energy")
    return Frame(
        nt_sR=nt_sR_from_gpaw(calc),
        positions=atoms.positions.copy(),
        cell=atoms.cell[:].copy(),
        numbers=atoms.numbers.copy(),
        time_fs=float(time_fs),
        D_asii=D_asii_from_gpaw(calc),
        velocities=atoms.get_velocities() if atoms.has("momenta") else None,
        energy=None if energy is None else float(energy),
        forces=None if results.get("forces") is None else np.array(results["forces"]),
        scf_iterations=scf_iterations,
        pbc=atoms.pbc.copy(),
    )


def provenance_from_gpaw(calc: Any) -> dict[str, Any]:
    """Dataset attributes describing a GPAW calculation."""
    import gpaw

    check_gpaw_calculator(calc)
    p = calc.params.todict()
    mode = dict(p.get("mode", {}))
    occ = p.get("occupations", {})
    out: dict[str, Any] = {
        "code": "GPAW",
        "gpaw_version": gpaw.__version__,
        "mode": mode.get("name", "?"),
        "xc": p.get("xc", {}).get("name", str(calc.params.xc)),
        "kpts": np.asarray(p.get("kpts", {}).get("size", [1, 1, 1])).tolist() if isinstance(p.get("kpts"), dict)
        else str(p.get("kpts")),
        "smearing": f"{occ.get('name', 'default')} {occ.get('width', '')}".strip() if occ else "default",
        "symmetry": str(p.get("symmetry", "default")),
        "spinpol": calc.dft.density.nt_sR.dims[0] == 2,
        "nt_source": "calc.dft.density.nt_sR / Bohr**3 (smooth pseudo-density incl. pseudo-core, "
                     "no compensation charges)",
    }
    if "ecut" in mode:
        out["ecut_eV"] = float(mode["ecut"])
    return out


def load_gpw(path: str | os.PathLike) -> Any:
    """Open a GPAW restart file with the new code path."""
    from gpaw import GPAW

    try:
        calc = GPAW(str(path), txt=None)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except Exception as err:  # GPAW raises many types for damaged files
        raise DatasetError(f"{path}: cannot read as a GPAW restart file ({type(err).__name__}: {err})") from None
    check_gpaw_calculator(calc)
    return calc


def _densities(calc: Any, nt_sR: np.ndarray, D_asii: list[np.ndarray]):
    """A gpaw Densities object on ``calc``'s grid and setups holding the given (nt, D)."""
    from gpaw.densities import Densities

    check_gpaw_calculator(calc)
    density = calc.dft.density
    grid = density.nt_sR.desc
    nt_sR = np.asarray(nt_sR, dtype=np.float64)
    S = density.nt_sR.dims[0]
    if not grid.pbc_c.all() or not np.array_equal(grid.size_c, nt_sR.shape[1:]) or nt_sR.shape[0] != S:
        raise DatasetError(
            f"density of shape {nt_sR.shape} does not fit the calculator's periodic grid "
            f"(S={S}, {tuple(grid.size_c)})")
    ug = grid.empty(S)
    ug.data[:] = nt_sR * Bohr**3
    D = density.D_asii.new()
    for a in D.keys():
        D[a][:] = D_asii[a]
    return Densities(ug, D, calc.dft.relpos_ac, calc.dft.setups)


def compensated_density(calc: Any, nt_sR: np.ndarray, D_asii: list[np.ndarray]) -> np.ndarray:
    """``nt`` plus compensation charges: what new GPAW's ``get_pseudo_density()`` returns.

    Parameters
    ----------
    calc : GPAW calculator
        Supplies setups, grid and atomic positions (need not hold this density).
    nt_sR : (S, N1, N2, N3) array
        electrons/Angstrom^3.
    D_asii : list of (S, ni, ni) arrays

    Returns
    -------
    (S, N1, N2, N3) float64 array, electrons/Angstrom^3.
    """
    dens = _densities(calc, nt_sR, D_asii)
    return dens.pseudo_densities(add_compensation_charges=True).data.copy()


def nt_from_compensated(calc: Any, n_sR: np.ndarray, D_asii: list[np.ndarray]) -> np.ndarray:
    """Inverse of :func:`compensated_density`: remove the compensation charges of ``D_asii``.

    The compensation charges are linear in ``D`` and independent of ``nt``, so they are
    computed once on a zero density and subtracted.
    """
    n_sR = np.asarray(n_sR, dtype=np.float64)
    ghat_sR = compensated_density(calc, np.zeros_like(n_sR), D_asii)
    return n_sR - ghat_sR


def calculator_from_provenance(attrs: dict[str, Any], grid: tuple[int, int, int], txt: str | None = None,
                               mode: str | None = None, mixer: dict[str, Any] | None = None) -> Any:
    """An (unconverged) GPAW calculator with a dataset's settings, on exactly its grid.

    Uses the provenance attributes ``ecut_eV``, ``xc``, ``kpts`` and ``smearing``; ``gpts`` is
    set to ``grid`` so densities line up point for point. ``mode`` overrides the dataset's
    plane-wave mode: ``'lcao'`` (GPAW's ``dzp`` basis) or ``'fd'``, on the same grid. ``mixer``
    is GPAW's ``mixer`` parameter (default: GPAW's).
    """
    from gpaw import GPAW, PW

    if attrs.get("mode", "pw") not in ("pw", "PW") and not str(attrs.get("mode", "")).startswith("PW"):
        raise DatasetError(f"dataset mode {attrs.get('mode')!r}: only plane-wave (pw) data are supported")
    if mode not in (None, "pw", "lcao", "fd"):
        raise InvalidInput(f"mode {mode!r}: choose pw, lcao or fd")
    if "ecut_eV" not in attrs:
        raise DatasetError("dataset has no 'ecut_eV' attribute; cannot rebuild its GPAW settings")
    kpts = attrs.get("kpts", [1, 1, 1])
    if not isinstance(kpts, (list, tuple)):
        kpts = [1, 1, 1] if str(kpts).lower() in ("gamma", "[1, 1, 1]") else kpts
    width = 0.1
    smearing = str(attrs.get("smearing", ""))
    for tok in smearing.replace("eV", " ").split():
        try:
            width = float(tok)
        except ValueError:
            pass
    modes = {"pw": {"mode": PW(float(attrs["ecut_eV"]))}, "lcao": {"mode": "lcao", "basis": "dzp"},
             "fd": {"mode": "fd"}}
    return GPAW(**modes[mode or "pw"], xc=str(attrs.get("xc", "PBE")), kpts=kpts,
                gpts=tuple(int(n) for n in grid), occupations={"name": "fermi-dirac", "width": width},
                symmetry="off", txt=txt, **({} if mixer is None else {"mixer": dict(mixer)}))


def superposition_density(calc: Any, atoms: Atoms) -> tuple[np.ndarray, list[np.ndarray]]:
    """GPAW's cold-start guess at ``atoms``: the superposition of free-atom densities.

    Built as GPAW builds it (setups, basis functions, ``density_from_superposition``), without
    the LCAO step or any SCF iteration (about 25 ms for Li2 at PW(200)).

    Returns
    -------
    nt_sR : (S, N1, N2, N3) float64, electrons/Angstrom^3
    D_asii : list of (S, ni, ni) float64 (free-atom occupations)
    """
    builder = calc.params.dft_component_builder(atoms)
    density = builder.density_from_superposition(builder.create_basis_set())
    nt = np.asarray(density.nt_sR.to_pbc_grid().gather(broadcast=True).data, np.float64) / Bohr**3
    D_asii = density.D_asii.gather(broadcast=True)
    return nt, [np.array(D_asii[a].real, np.float64) for a in range(len(atoms))]
