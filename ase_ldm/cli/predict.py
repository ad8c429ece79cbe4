"""Write one-step-ahead predictions of every frame after the first, as a dataset.

Frame t of DATA is predicted from the converged frames before it (the synchronised model
also uses the atoms of frame t) and written with frame t's atoms and time, so
'ase-ldm evaluate OUT --reference DATA' scores the model. An interrupted run keeps its
frames; '--resume' continues it.

With --samples K (generative models), each frame also gets nt_spread: the relative L1 norm of
the per-voxel standard deviation over K samples, the model's estimate of its own error.

Example: ase-ldm predict li16-800K-sync --data li16.h5 -o li16-pred.h5
         ase-ldm predict li16-800K --data li16.h5 --start 600 --samples 8 --history 0 -o atoms-only.h5
"""

from __future__ import annotations

import argparse


class CLICommand:
    __doc__ = __doc__

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="run directory or pretrained name (e.g. li16-800K-sync)")
        p.add_argument("--data", required=True, help="dataset with the converged frames (and D)")
        p.add_argument("-o", "--output", required=True, help="output dataset (.h5)")
        p.add_argument("--history", type=int, help="past frames the synchronised model uses (default: all it reads)")
        p.add_argument("--start", type=int, default=1, help="first frame to predict (default 1), e.g. the test part")
        p.add_argument("--samples", type=int, metavar="K",
                       help="also write the spread of K samples per frame (nt_spread; generative models only)")
        p.add_argument("--device", default="cpu")
        p.add_argument("--resume", action="store_true", help="continue an interrupted output")
        p.add_argument("--force", action="store_true", help="replace an existing output")
        p.add_argument("--no-progress", action="store_true")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..predict import predict_to_dataset

        n = predict_to_dataset(args.model, args.data, args.output, history=args.history, start=args.start,
                               device=args.device, samples=args.samples,
                               resume=args.resume, overwrite=args.force, progress=not args.no_progress)
        print(f"{args.output}: {n} predicted frames")
        return 0
