"""Train the autoencoder + latent diffusion model on a dataset.

Settings come from a JSON config (TrainConfig: epochs, batch_size, lr, seed, model, loss, ...);
command-line options override single values. Checkpoints are written atomically; after an
interruption '--resume' continues with the same loss curve.

Example: ase-ldm train li16.h5 -o runs/li16 --config cfg.json --epochs 30
"""

from __future__ import annotations

import argparse

from ..errors import InvalidInput
from .options import add_training_options, training_config


class CLICommand:
    __doc__ = __doc__

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("data", help="training dataset (.h5)")
        p.add_argument("-o", "--output", required=True, help="run directory")
        add_training_options(p, "TrainConfig")
        p.add_argument("--max-frames", type=int, help="use only the first N frames")
        p.add_argument("--no-sjsd", action="store_true", help="train without the sJSD loss (lambda_sjsd = 0)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import dataclasses

        from ..ldm.config import TrainConfig
        from ..ldm.training import train

        if args.resume and args.no_sjsd:
            raise InvalidInput("--resume uses the run's own config.json; do not change settings when resuming")
        cfg = training_config(TrainConfig, args, {"max_frames": args.max_frames})
        if cfg is not None and args.no_sjsd:
            cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, lambda_sjsd=0.0))
        out = train(args.data, args.output, cfg, resume=args.resume, progress=not args.no_progress)
        import os

        if os.environ.get("RANK", "0") != "0":
            return 0
        last = out["history"][-1] if out["history"] else {}
        print(f"{args.output}: epoch {last.get('epoch')}, loss {last.get('total', float('nan')):.4f}, "
              f"test recon rel. L1 {last.get('test_recon_rel_l1', float('nan')):.4f}")
        return 0
