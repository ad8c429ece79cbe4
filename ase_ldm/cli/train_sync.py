"""Train the atom-synchronised density model (learned prior + periodic CNN + PAW head).

Reads a dataset (.h5 with nt and D) or a pack written by tools/pack_sync_data.py (.npz).
The first --train frames are used (default: 80 %), the last val_frames of them validate.
Settings come from a JSON SyncTrainConfig; options override single values; '--resume'
continues an interrupted run from its last checkpoint.

Example: ase-ldm train-sync li16.h5 --train 600 -o runs/li16-sync --epochs 100
"""

from __future__ import annotations

import argparse

from ..errors import InvalidInput
from .options import add_training_options, training_config


class CLICommand:
    __doc__ = __doc__

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("data", help="training dataset (.h5) or sync pack (.npz)")
        p.add_argument("-o", "--output", required=True, help="run directory")
        p.add_argument("--train", type=int, help="use frames [0, N) (default: the first 80 %%)")
        add_training_options(p, "SyncTrainConfig")
        p.add_argument("--val-frames", type=int)
        p.add_argument("--extra-data", action="append", default=[], metavar="PATH",
                       help="another trajectory of the same system (.h5 or .npz), all its frames trained on; "
                            "repeatable. No history crosses two trajectories; validation stays on DATA")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..sync.config import SyncTrainConfig
        from ..sync.training import train_sync

        if args.resume and args.train:
            raise InvalidInput("--resume uses the run's own config.json; do not change settings when resuming")
        cfg = training_config(SyncTrainConfig, args, {"val_frames": args.val_frames})
        n_train = args.train
        if cfg is not None:
            if n_train is None and not str(args.data).endswith(".npz"):
                from ..data.store import open_dataset

                with open_dataset(args.data) as ds:
                    n_train = int(round(0.8 * len(ds)))
        out = train_sync(args.data, args.output, cfg, n_train=n_train, resume=args.resume,
                         progress=not args.no_progress, extra_data=args.extra_data)
        last = next((r for r in reversed(out["history"]) if "val_rel_l1" in r), {})
        nan = float("nan")
        print(f"{args.output}: epoch {last.get('epoch')}, validation rel. L1 of nt {last.get('val_rel_l1', nan):.3e} "
              f"(extrapolation {last.get('val_rel_l1_baseline', nan):.3e}), "
              f"cold start {last.get('val_cold_rel_l1', nan):.3e}, D {last.get('val_D_rel', nan):.3e}")
        return 0
