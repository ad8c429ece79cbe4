"""Train the autoencoder + latent diffusion model on a dataset.

Settings come from a JSON config (TrainConfig: epochs, batch_size, lr, seed, model, loss, ...);
command-line options override single values. Checkpoints are written atomically; after an
interruption '--resume' continues with the same loss curve.

Example: ase-ldm train li16.h5 -o runs/li16 --config cfg.json --epochs 30
"""

from __future__ import annotations

import argparse

from ..errors import InvalidInput


class CLICommand:
    __doc__ = __doc__

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("data", help="training dataset (.h5)")
        p.add_argument("-o", "--output", required=True, help="run directory")
        p.add_argument("--config", help="JSON file with TrainConfig fields (nested 'model' and 'loss' allowed)")
        p.add_argument("--epochs", type=int)
        p.add_argument("--batch-size", type=int)
        p.add_argument("--lr", type=float)
        p.add_argument("--seed", type=int)
        p.add_argument("--max-frames", type=int, help="use only the first N frames")
        p.add_argument("--no-sjsd", action="store_true", help="train without the sJSD loss (lambda_sjsd = 0)")
        p.add_argument("--device", choices=["auto", "cpu", "cuda"])
        p.add_argument("--resume", action="store_true", help="continue the run in --output")
        p.add_argument("--no-progress", action="store_true")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import dataclasses
        import json

        from ..core.config import from_dict
        from ..ldm.config import TrainConfig
        from ..ldm.training import train

        cfg = None
        if not args.resume or args.config:
            base = json.loads(open(args.config).read()) if args.config else {}
            cfg = from_dict(TrainConfig, base)
            over = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr),
                                       ("seed", args.seed), ("max_frames", args.max_frames),
                                       ("device", args.device)) if v is not None}
            cfg = dataclasses.replace(cfg, **over)
            if args.no_sjsd:
                cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, lambda_sjsd=0.0))
        elif any(v is not None for v in (args.epochs, args.batch_size, args.lr, args.seed, args.max_frames)):
            raise InvalidInput("--resume uses the run's own config.json; do not change settings when resuming")
        out = train(args.data, args.output, cfg, resume=args.resume, progress=not args.no_progress)
        import os

        if os.environ.get("RANK", "0") != "0":
            return 0
        last = out["history"][-1] if out["history"] else {}
        print(f"{args.output}: epoch {last.get('epoch')}, loss {last.get('total', float('nan')):.4f}, "
              f"test recon rel. L1 {last.get('test_recon_rel_l1', float('nan')):.4f}")
        return 0
