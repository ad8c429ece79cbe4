"""Run GPAW AIMD and record the density of every step into a dataset.

Start from an ASE-readable structure file or the built-in preset 'li-liquid' (N Li atoms at
liquid density, melted, then equilibrated). A killed run keeps its completed frames;
'--append' continues it from the last frame.

Example: ase-ldm record --preset li-liquid --atoms 16 --steps 100 --ecut 300 -o li16.h5
"""

from __future__ import annotations

import argparse

from ..errors import InvalidInput


class CLICommand:
    __doc__ = __doc__

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("structure", nargs="?", help="ASE-readable structure file (last image is used)")
        p.add_argument("--preset", choices=["li-liquid"], help="built-in starting structure")
        p.add_argument("--atoms", type=int, default=16, help="number of atoms for the preset (default 16)")
        p.add_argument("-o", "--output", required=True, help="output dataset (.h5)")
        p.add_argument("--steps", type=int, default=10, help="MD steps to record (default 10)")
        p.add_argument("--timestep", type=float, default=2.0, help="MD timestep in fs (default 2)")
        p.add_argument("--ecut", type=float, default=300.0, help="plane-wave cutoff in eV (default 300)")
        p.add_argument("--temperature", type=float, default=800.0, help="temperature in K (default 800)")
        p.add_argument("--ensemble", choices=["nvt", "nve"], default="nvt",
                       help="nvt: ASE Langevin; nve: velocity Verlet (default nvt)")
        p.add_argument("--friction", type=float, default=0.01, help="Langevin friction in 1/fs (default 0.01)")
        p.add_argument("--melt-steps", type=int, default=None,
                       help="steps at --melt-temperature before equilibration (preset default 20, else 0)")
        p.add_argument("--melt-temperature", type=float, default=1500.0, help="melting temperature in K")
        p.add_argument("--equil-steps", type=int, default=None,
                       help="steps at --temperature before recording (preset default 20, else 0)")
        p.add_argument("--interval", type=int, default=1, help="record every N-th MD step (default 1)")
        p.add_argument("--kpts", type=int, nargs=3, default=[1, 1, 1], metavar="K", help="k-point grid")
        p.add_argument("--gpts", type=int, nargs=3, metavar="N",
                       help="real-space grid (default: GPAW's choice for --ecut); keep a model's grid spacing")
        p.add_argument("--seed", type=int, default=0, help="random seed (velocities, Langevin noise)")
        p.add_argument("--gpaw-txt", help="GPAW log file (default: none)")
        g = p.add_mutually_exclusive_group()
        g.add_argument("--append", action="store_true", help="continue an existing output from its last frame")
        g.add_argument("--force", action="store_true", help="replace an existing output")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from pathlib import Path

        from ..data.aimd import PRESETS, AIMDSettings, run_aimd

        resuming = args.append and Path(args.output).exists()
        atoms = None
        if not resuming:
            if (args.structure is None) == (args.preset is None):
                raise InvalidInput("give a structure file or --preset (exactly one)")
            if args.preset:
                atoms = PRESETS[args.preset](args.atoms, seed=args.seed)
            else:
                from ase.io import read

                atoms = read(args.structure, index=-1)
                if not atoms.pbc.all() or atoms.cell.rank < 3:
                    raise InvalidInput(f"{args.structure}: a periodic 3D cell is required (pbc={atoms.pbc.tolist()})")
        default_pre = 20 if args.preset else 0
        settings = AIMDSettings(
            steps=args.steps, timestep_fs=args.timestep, ecut=args.ecut, temperature_K=args.temperature,
            ensemble=args.ensemble, friction_per_fs=args.friction,
            melt_steps=default_pre if args.melt_steps is None else args.melt_steps,
            melt_temperature_K=args.melt_temperature,
            equil_steps=default_pre if args.equil_steps is None else args.equil_steps,
            interval=args.interval, seed=args.seed, kpts=tuple(args.kpts),
            gpts=tuple(args.gpts) if args.gpts else None)
        n = run_aimd(atoms, args.output, settings, append=args.append, overwrite=args.force,
                     gpaw_txt=args.gpaw_txt, progress=not args.no_progress)
        print(f"{args.output}: {n} frames")
        return 0
