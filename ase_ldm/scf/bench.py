"""Compare SCF iterations and wall time per GPAW MD step across density providers.

Every provider runs the same NVE MD (velocity Verlet) from the same dataset frame (positions
and velocities) with the dataset's GPAW settings, and GPAW's own run (provider ``gpaw``) is
the reference for the energy and force differences. Step 0 (the cold start) is reported
apart; the per-step numbers are for the N MD steps after it. ``guess_seconds`` times the
provider's prediction before each move (its ``observe`` of the finished step is not included;
the seconds per step include everything).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
from ase import units
from ase.md.verlet import VelocityVerlet

from ..data.atomic import write_text_atomic
from ..data.store import open_dataset
from ..errors import DatasetError, InvalidInput

__all__ = ["run_provider", "scf_bench"]


def run_provider(data: str | os.PathLike, frame: int, steps: int, provider: str, device: str = "cpu",
                 txt: str | None = None) -> dict[str, Any]:
    """One guided NVE run; per-step iterations, seconds, energies and forces.

    ``provider`` is a provider name, optionally with ``+wfsK``: the wave functions are then
    extrapolated in time with order K (:func:`ase_ldm.scf.hook.parse_spec`).
    """
    from ..data.gpaw_io import calculator_from_provenance
    from .hook import guided_gpaw, parse_spec
    from .providers import make_provider

    with open_dataset(data) as ds:
        atoms = ds.atoms(frame)
        if not ds.has("velocities"):
            raise DatasetError(f"{data}: no velocities stored; scf-bench starts MD from a frame's velocities")
        dt = ds.timestep_fs
        calc = calculator_from_provenance(ds.attrs, ds.grid, txt=txt)
    name, wfs_order = parse_spec(provider)
    calc = guided_gpaw(calc, make_provider(name, calc, device=device), wfs_extrapolation=wfs_order)
    atoms.calc = calc
    t0 = time.perf_counter()
    e0 = atoms.get_potential_energy()
    cold = {"iterations": calc.get_number_of_iterations(), "seconds": time.perf_counter() - t0, "energy_eV": e0}
    dyn = VelocityVerlet(atoms, dt * units.fs)
    rec: dict[str, list] = {"iterations": [], "seconds": [], "energy_eV": [], "forces": []}
    last = [time.perf_counter()]

    def observe() -> None:
        if dyn.nsteps == 0:
            return
        now = time.perf_counter()
        rec["seconds"].append(now - last[0])
        last[0] = now
        rec["iterations"].append(int(calc.get_number_of_iterations()))
        rec["energy_eV"].append(float(atoms.get_potential_energy()))
        rec["forces"].append(atoms.get_forces().tolist())

    dyn.attach(observe, interval=1)
    last[0] = time.perf_counter()
    dyn.run(steps)
    return {"provider": provider, "cold_start": cold, **rec, "guess_seconds": calc.guess_seconds,
            "served": getattr(calc.provider, "served", None)}


def scf_bench(data: str | os.PathLike, frame: int, steps: int, providers: list[str], *, device: str = "cpu",
              json_out: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """Run every provider (GPAW's own first, as the reference) and summarise."""
    from .hook import parse_spec
    from .providers import check_provider_name

    for spec in providers:  # every name checked before minutes of GPAW work
        name, order = parse_spec(spec)
        check_provider_name(name)
        if order not in (-1, 1, 2):
            raise InvalidInput(f"{spec!r}: the wave-function extrapolation order K of NAME+wfsK must be 1 or 2")
    names = ["gpaw"] + [p for p in providers if p != "gpaw"]
    runs = {}
    it = names
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(names, desc="scf-bench", unit="provider")
    for name in it:
        runs[name] = run_provider(data, frame, steps, name, device)
    ref = runs["gpaw"]
    out: dict[str, Any] = {"data": str(data), "frame": frame, "steps": steps, "providers": {}}
    for name in names:
        r = runs[name]
        dE = np.abs(np.array(r["energy_eV"]) - np.array(ref["energy_eV"]))
        dF = np.abs(np.array(r["forces"]) - np.array(ref["forces"]))
        out["providers"][name] = {
            "iterations_per_step": float(np.mean(r["iterations"])),
            "iterations": r["iterations"],
            "seconds_per_step": float(np.mean(r["seconds"])),
            "seconds": [round(s, 4) for s in r["seconds"]],
            "guess_seconds_per_step": float(np.mean(r["guess_seconds"])) if r["guess_seconds"] else 0.0,
            # the guess's share of the step (the cold start's guess excluded)
            "guess_share": (float(np.sum(r["guess_seconds"][-len(r["seconds"]):]) / np.sum(r["seconds"]))
                            if r["seconds"] and r["guess_seconds"] else 0.0),
            "cold_start_iterations": r["cold_start"]["iterations"],
            "max_energy_diff_eV": float(dE.max()) if dE.size else 0.0,
            "max_force_diff_eV_A": float(dF.max()) if dF.size else 0.0,
        }
        if r.get("served") is not None:  # which candidate an auto provider served, step by step
            out["providers"][name]["served"] = r["served"]
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(out, indent=1))
    return out
