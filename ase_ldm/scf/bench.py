"""Compare SCF iterations and wall time per GPAW MD step across density providers.

Every provider runs the same NVE MD (velocity Verlet) from the same dataset frame (positions
and velocities) with the dataset's GPAW settings, and GPAW's own run (provider ``gpaw``) is
the reference for the energy and force differences. Step 0 (the cold start) is reported
apart; the per-step numbers are for the N MD steps after it. ``guess_seconds`` times the
provider's prediction before each move (its ``observe`` of the finished step is not included;
the seconds per step include everything).

With ``threads``, each provider runs in a fresh process (spawned, so nothing warm is shared
between providers) whose torch, OpenMP and BLAS thread counts are all ``threads``; without it,
the providers run one after the other in this process with its thread settings. Either way
the result records each run's torch threads and its thread environment variables. Library
callers of ``threads`` need the ``if __name__ == "__main__":`` guard that spawning requires.

Under MPI (``mpiexec -n N ase-ldm scf-bench ...``) every provider's MD runs on all ranks, and
rank 0 shows the progress and writes the JSON; ``threads`` is refused there (the thread count of
each rank is set by the environment that ``mpiexec`` passes on, e.g. ``-x OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from typing import Any

import numpy as np
from ase import units
from ase.md.verlet import VelocityVerlet

from ..core.mpi import from_root, is_root, world
from ..data.atomic import write_text_atomic
from ..data.store import open_dataset
from ..errors import DatasetError, InvalidInput

__all__ = ["run_provider", "scf_bench"]

#: the environment variables that set the thread count of OpenMP and the BLAS libraries
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def run_provider(data: str | os.PathLike, frame: int, steps: int, provider: str, device: str = "cpu",
                 txt: str | None = None, mode: str | None = None, mixer_beta: float | None = None) -> dict[str, Any]:
    """One guided NVE run; per-step iterations, seconds, energies and forces.

    ``provider`` is a provider name, optionally with ``+wfsK``: the wave functions are then
    extrapolated in time with order K (:func:`ase_ldm.scf.hook.parse_spec`). ``mode`` (pw, lcao,
    fd) overrides the dataset's mode on the same grid
    (:func:`ase_ldm.data.gpaw_io.calculator_from_provenance`). ``mixer_beta`` sets the step of
    GPAW's density mixer (its default mixer, MSR1, takes 0.05).
    """
    from ..data.gpaw_io import calculator_from_provenance
    from .hook import guided_gpaw, parse_spec
    from .providers import make_provider

    with open_dataset(data) as ds:
        atoms = ds.atoms(frame)
        if not ds.has("velocities"):
            raise DatasetError(f"{data}: no velocities stored; scf-bench starts MD from a frame's velocities")
        dt = ds.timestep_fs
        calc = calculator_from_provenance(ds.attrs, ds.grid, txt=txt, mode=mode,
                                          mixer=None if mixer_beta is None else {"beta": float(mixer_beta)})
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
    import torch

    return {"provider": provider, "cold_start": cold, **rec, "guess_seconds": calc.guess_seconds,
            "served": getattr(calc.provider, "served", None),
            "threads": {"torch": torch.get_num_threads(), **{k: os.environ.get(k) for k in THREAD_VARIABLES}}}


def _run_with_threads(threads: int, *args: Any) -> dict[str, Any]:
    """:func:`run_provider` in a spawned process (the target of :func:`_spawn`)."""
    import torch

    torch.set_num_threads(threads)
    return run_provider(*args)


def _spawn(threads: int, *args: Any) -> dict[str, Any]:
    """:func:`run_provider` in a fresh process with ``threads`` threads everywhere."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    os.environ.update({k: str(threads) for k in THREAD_VARIABLES})  # read by the child's libraries at import
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            try:
                return pool.submit(_run_with_threads, threads, *args).result()
            except BrokenProcessPool:
                raise RuntimeError(f"scf-bench: the process running provider {args[3]!r} died (killed, out of "
                                   "memory or crashed in GPAW); run that provider alone to see why") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def scf_bench(data: str | os.PathLike, frame: int, steps: int, providers: list[str], *, device: str = "cpu",
              json_out: str | os.PathLike | None = None, progress: bool = True,
              threads: int | None = None, mode: str | None = None,
              mixer_beta: float | None = None) -> dict[str, Any]:
    """Run every provider (GPAW's own first, as the reference) and summarise.

    ``threads``: run each provider in a fresh process with that many threads (see the module
    docstring); None runs them here. ``mixer_beta``: the step of GPAW's density mixer for every
    provider, GPAW's own included (None: GPAW's default).
    """
    if mixer_beta is not None and not (isinstance(mixer_beta, (int, float)) and 0 < mixer_beta <= 1):
        raise InvalidInput(f"mixer_beta must be a number in (0, 1], got {mixer_beta!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidInput(f"threads must be a positive integer, got {threads!r}")
    ranks = world().size
    if threads is not None and ranks > 1:
        raise InvalidInput(f"threads: a fresh process per provider cannot join the {ranks} MPI ranks; drop "
                           "--threads and set the threads of each rank in mpiexec's environment "
                           "(mpiexec -x OMP_NUM_THREADS=1 ...)")
    from .hook import check_spec

    if mode not in (None, "pw", "lcao", "fd"):
        raise InvalidInput(f"mode {mode!r}: choose pw, lcao or fd")
    for spec in providers:  # every name checked before minutes of GPAW work
        check_spec(spec, mode)
    names = ["gpaw"] + [p for p in providers if p != "gpaw"]
    runs = {}
    it = names
    if progress and is_root():
        from tqdm.auto import tqdm

        it = tqdm(names, desc="scf-bench", unit="provider")
    for name in it:
        args = (data, frame, steps, name, device, None, mode, mixer_beta)
        runs[name] = run_provider(*args) if threads is None else _spawn(threads, *args)
    ref = runs["gpaw"]
    out: dict[str, Any] = {"data": str(data), "frame": frame, "steps": steps, "threads": threads,
                           "mpi_ranks": ranks, "mode": mode or "dataset's", "mixer_beta": mixer_beta,
                           "providers": {}}
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
            "threads": r["threads"],
        }
        if r.get("served") is not None:  # which candidate an auto provider served, step by step
            out["providers"][name]["served"] = r["served"]
    if json_out is not None:
        from_root(write_text_atomic, json_out, json.dumps(out, indent=1))
    return out
