"""Run GPAW AIMD and record the density of every step into a dataset.

Start from an ASE-readable structure file or the built-in preset 'li-liquid' (N Li atoms at
liquid density, melted, then equilibrated). A killed run keeps its completed frames;
'--append' continues it from the last frame with the settings stored in the file (options
given with --append must equal the stored ones). Outputs are checked before GPAW starts.
Under MPI (mpiexec -n N ase-ldm record ...) every rank runs the MD and rank 0 writes.

Example: ase-ldm record --preset li-liquid --atoms 16 --steps 100 --ecut 300 -o li16.h5
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import InvalidInput

# option dest -> (AIMDSettings field, default for a new file); with --append the stored value is the default
_SETTINGS: dict[str, tuple[str, Any]] = {
    "timestep": ("timestep_fs", 2.0),
    "ecut": ("ecut", 300.0),
    "temperature": ("temperature_K", 800.0),
    "ensemble": ("ensemble", "nvt"),
    "friction": ("friction_per_fs", 0.01),
    "melt_steps": ("melt_steps", None),  # preset: 20, else 0
    "melt_temperature": ("melt_temperature_K", 1500.0),
    "equil_steps": ("equil_steps", None),  # preset: 20, else 0
    "interval": ("interval", 1),
    "kpts": ("kpts", (1, 1, 1)),
    "gpts": ("gpts", None),
    "seed": ("seed", 0),
}


class CLICommand:
    __doc__ = __doc__

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        # Settings default to None here so that --append can tell given options from defaults.
        p.add_argument("structure", nargs="?", help="ASE-readable structure file (last image is used)")
        p.add_argument("--preset", choices=["li-liquid"], help="built-in starting structure")
        p.add_argument("--atoms", type=int, help="number of atoms for the preset (default 16)")
        p.add_argument("-o", "--output", required=True, help="output dataset (.h5)")
        p.add_argument("--steps", type=int, default=10, help="MD steps to record (default 10)")
        p.add_argument("--timestep", type=float, help="MD timestep in fs (default 2)")
        p.add_argument("--ecut", type=float, help="plane-wave cutoff in eV (default 300)")
        p.add_argument("--temperature", type=float, help="temperature in K (default 800)")
        p.add_argument("--ensemble", choices=["nvt", "nve"],
                       help="nvt: ASE Langevin; nve: velocity Verlet (default nvt)")
        p.add_argument("--friction", type=float, help="Langevin friction in 1/fs (default 0.01)")
        p.add_argument("--melt-steps", type=int,
                       help="steps at --melt-temperature before equilibration (preset default 20, else 0)")
        p.add_argument("--melt-temperature", type=float, help="melting temperature in K (default 1500)")
        p.add_argument("--equil-steps", type=int,
                       help="steps at --temperature before recording (preset default 20, else 0)")
        p.add_argument("--interval", type=int, help="record every N-th MD step (default 1)")
        p.add_argument("--kpts", type=int, nargs=3, metavar="K", help="k-point grid (default 1 1 1)")
        p.add_argument("--gpts", type=int, nargs=3, metavar="N",
                       help="real-space grid (default: GPAW's choice for --ecut); keep a model's grid spacing")
        p.add_argument("--seed", type=int, help="random seed (velocities, Langevin noise; default 0)")
        p.add_argument("--gpaw-txt", help="GPAW log file (default: none); continued with --append")
        p.add_argument("--guess", default="auto+wfs2",
                       help="SCF initial guess of each MD step: a provider as in scf-bench (gpaw, "
                            "sad-extrapolate, auto, auto:MODEL, a model; NAME+wfsK also extrapolates the "
                            "wave functions). Default auto+wfs2: the physics guess closest so far, with the wave "
                            "functions extrapolated quadratically (BENCHMARKS.md: the fastest guess). The recorded "
                            "densities are GPAW's converged ones whatever the guess")
        g = p.add_mutually_exclusive_group()
        g.add_argument("--append", action="store_true",
                       help="continue an existing output from its last frame, with its stored settings")
        g.add_argument("--force", action="store_true", help="replace an existing output")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from pathlib import Path

        from ..core.mpi import from_root, is_root
        from ..data.aimd import PRESETS, AIMDSettings, run_aimd
        from ..data.continuation import check_append, check_outputs, stored_run

        out = Path(args.output)
        # Every output first: nothing is computed for a file that cannot be written. Under MPI
        # rank 0 reads the files and every rank gets its answer.
        from_root(check_outputs, out, append=args.append, overwrite=args.force, gpaw_txt=args.gpaw_txt)
        stored = from_root(lambda: stored_run(out) if args.append and out.exists() else None)
        resuming = stored is not None and stored.frames > 0

        given = {field: getattr(args, dest) for dest, (field, _) in _SETTINGS.items()
                 if getattr(args, dest) is not None}
        for name in ("kpts", "gpts"):
            if name in given:
                given[name] = tuple(given[name])
        if resuming:
            if args.preset is not None or args.atoms is not None:
                raise InvalidInput(
                    f"--preset/--atoms build a new starting structure, but --append continues {out} from its "
                    f"last frame (frame {stored.frames - 1}); drop --preset/--atoms to continue it, or write a "
                    "new file (another -o, or --force to replace this one); nothing was run")
            base = dict(stored.settings)
        else:
            if (args.structure is None) == (args.preset is None):
                raise InvalidInput("give a structure file or --preset (exactly one)")
            pre = 20 if args.preset else 0
            base = {field: pre if default is None and dest.endswith("_steps") else default
                    for dest, (field, default) in _SETTINGS.items()}
            if stored is not None:  # an existing file without frames: keep to its recorded settings
                base.update(stored.settings)
        if resuming:
            try:
                AIMDSettings(**base)
            except (TypeError, InvalidInput) as err:
                raise InvalidInput(f"{out}: its stored settings cannot be continued by 'ase-ldm record' ({err}); "
                                   "write a new file") from None
        settings = AIMDSettings(**{**base, **given, "steps": args.steps})

        atoms = None
        if args.preset:
            atoms = PRESETS[args.preset](16 if args.atoms is None else args.atoms, seed=settings.seed)
        elif args.structure is not None:
            from ase.io import read

            try:
                atoms = read(args.structure, index=-1)
            except FileNotFoundError:
                raise InvalidInput(f"{args.structure}: no such structure file") from None
            except Exception as err:  # ASE raises many types for unreadable files
                raise InvalidInput(f"{args.structure}: cannot read as a structure file "
                                   f"({type(err).__name__}: {err}); give an ASE-readable file") from None
            if not atoms.pbc.all() or atoms.cell.rank < 3:
                raise InvalidInput(f"{args.structure}: a periodic 3D cell is required (pbc={atoms.pbc.tolist()})")
        if stored is not None:
            # named refusals (settings, structure) before run_aimd repeats the check
            from_root(check_append, out, settings, atoms, structure=args.structure)
        n = run_aimd(atoms, out, settings, append=args.append, overwrite=args.force,
                     gpaw_txt=args.gpaw_txt, progress=not args.no_progress, guess=args.guess)
        if is_root():
            print(f"{args.output}: {n} frames")
        return 0
