"""Write a baseline prediction of a reference trajectory, for comparison with models.

Kinds: previous (the previous frame; "persistence" is accepted too), linear and quadratic extrapolation in time, sad
(GPAW's superposition of atomic densities at each frame's atoms), sad-extrapolate (sad plus
the time-extrapolated residual). Frames keep the reference's atoms and times, so
'ase-ldm evaluate OUT --reference REF' computes pointwise errors too.

Example: ase-ldm baseline li16.h5 --kind previous -o previous.h5
"""

from __future__ import annotations

import argparse


class CLICommand:
    __doc__ = __doc__

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        from ..analysis.baselines import ALIASES, BASELINES

        p.add_argument("reference", help="reference trajectory (dataset)")
        p.add_argument("--kind", choices=(*BASELINES, *ALIASES), default="previous")
        p.add_argument("--start", type=int, help="first predicted frame (default: first with enough history)")
        p.add_argument("--stop", type=int, help="one past the last predicted frame")
        p.add_argument("-o", "--output", required=True, help="output dataset")
        p.add_argument("--force", action="store_true", help="replace an existing output")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..analysis.baselines import baseline_frames
        from ..data.importers import write_frames
        from ..data.store import open_dataset

        with open_dataset(args.reference) as ref:
            attrs = {"source": f"baseline:{args.kind} of {args.reference}", "baseline": args.kind,
                     "timestep_fs": ref.timestep_fs}
            n = write_frames(args.output, baseline_frames(ref, args.kind, args.start, args.stop), attrs,
                             overwrite=args.force, progress=True)
        print(f"{args.output}: {n} frames ({args.kind})")
        return 0
