"""Build a dataset from cube files + an ASE trajectory, GPAW restart files, or the reference npz.

Frames are matched in order; mismatched counts, shapes or atoms are errors naming the frame.
The output is written under a unique temporary name and renamed at the end, so a failed import
leaves nothing behind and never touches an existing file; a second import to the same output
is refused while the first one runs.

Examples:
  ase-ldm import --traj md.traj --cubes 'dens_*.cube.gz' --timestep 2 -o md.h5
  ase-ldm import --gpw step*.gpw --timestep 2 -o md.h5
  ase-ldm import --npz li16_800K.npz -o li16.h5
"""

from __future__ import annotations

import argparse

from ..errors import InvalidInput


class CLICommand:
    __doc__ = __doc__

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--traj", help="ASE trajectory (with --cubes)")
        src.add_argument("--gpw", nargs="+", metavar="FILE", help="GPAW restart files, one per frame")
        src.add_argument("--npz", help="reference .npz file (shared/data format)")
        p.add_argument("--cubes", help="glob of cube files (electrons/Bohr^3), one per trajectory frame")
        p.add_argument("--timestep", type=float, help="time between frames in fs (needed for --traj and --gpw)")
        p.add_argument("-o", "--output", required=True, help="output dataset (.h5)")
        p.add_argument("--force", action="store_true", help="replace an existing output")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..data.importers import frames_from_cubes, frames_from_gpw, frames_from_npz, write_frames

        if args.traj or args.gpw:
            if args.timestep is None or args.timestep <= 0:
                raise InvalidInput("--timestep (fs between frames, > 0) is required: trajectories and .gpw "
                                 "files do not store the time")
        if args.traj:
            if not args.cubes:
                raise InvalidInput("--traj needs --cubes GLOB (one cube file per frame)")
            frames = frames_from_cubes(args.traj, args.cubes, args.timestep)
            attrs = {"source": f"cubes:{args.cubes}", "timestep_fs": args.timestep,
                     "nt_source": "cube files in electrons/Bohr^3, divided by Bohr**3"}
        elif args.gpw:
            frames, attrs = frames_from_gpw(args.gpw, args.timestep)
        else:
            frames, attrs = frames_from_npz(args.npz)
        n = write_frames(args.output, frames, attrs, overwrite=args.force, progress=True)
        print(f"{args.output}: {n} frames")
        return 0
