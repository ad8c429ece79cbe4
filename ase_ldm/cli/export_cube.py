"""Write one frame's density as a Gaussian cube file (electrons/Bohr^3) for VESTA or OVITO.

Example: ase-ldm export-cube li16.h5 --frame 10 -o frame10.cube
"""

from __future__ import annotations

import argparse


class CLICommand:
    __doc__ = __doc__

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("data", help="dataset (.h5)")
        p.add_argument("--frame", type=int, default=0, help="frame index (negative counts from the end)")
        p.add_argument("--spin", type=int, help="spin channel (default: total density)")
        p.add_argument("-o", "--output", required=True, help="cube file (.cube or .cube.gz)")
        p.add_argument("--force", action="store_true", help="replace an existing output")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from pathlib import Path

        from ..data.importers import export_cube
        from ..data.schema import DatasetError
        from ..data.store import open_dataset

        if Path(args.output).exists() and not args.force:  # fail fast; checked again while writing
            raise DatasetError(f"{args.output} exists; pass --force to replace it")
        with open_dataset(args.data) as ds:
            i = ds.frame_index(args.frame)
            export_cube(ds, i, args.output, spin=args.spin, overwrite=args.force)
        print(f"{args.output}: frame {i} of {args.data}")
        return 0
