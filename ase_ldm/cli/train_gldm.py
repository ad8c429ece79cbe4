"""Train the grid-latent diffusion model (translation-equivariant latent, atom-conditioned denoiser).

Stage 1 trains the periodic patch autoencoder, stage 2 the denoiser on the frozen latents. The
last 20 % of DATA are never read (test), the last tenth of the rest validates and calibrates
the spread of the samples. Settings come from a JSON GldmTrainConfig; options override single
values; '--resume' continues an interrupted run from its last checkpoint.

Example: ase-ldm train-gldm li16.h5 -o runs/li16-gldm --extra-data li16_s31.h5
         ase-ldm train-gldm li16.h5 -o runs/li16-gldm-sr --finetune runs/li16-gldm --config sr.json
"""

from __future__ import annotations

import argparse

from .options import training_config


class CLICommand:
    __doc__ = __doc__

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("data", help="training dataset (.h5)")
        p.add_argument("-o", "--output", required=True, help="run directory")
        p.add_argument("--config", help="JSON file with GldmTrainConfig fields (nested blocks allowed)")
        p.add_argument("--ae-epochs", type=int, help="autoencoder epochs")
        p.add_argument("--denoiser-steps", type=int, help="denoiser optimiser steps")
        p.add_argument("--seed", type=int)
        p.add_argument("--device", choices=["auto", "cpu", "cuda"])
        p.add_argument("--resume", action="store_true", help="continue the run in --output")
        p.add_argument("--no-progress", action="store_true")
        p.add_argument("--extra-data", action="append", default=[], metavar="PATH",
                       help="another trajectory of the same system, all its frames trained on; repeatable")
        start = p.add_mutually_exclusive_group()
        start.add_argument("--init-autoencoder", metavar="RUN",
                           help="take over this run's (or shipped model's) trained autoencoder; train a new denoiser")
        start.add_argument("--finetune", metavar="RUN",
                           help="take over this run's whole model and continue its denoiser with this config "
                                "(e.g. {\"self_rollout\": 0.5})")
        p.set_defaults(epochs=None, batch_size=None, lr=None)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..gldm.config import GldmTrainConfig
        from ..gldm.training import train_gldm

        cfg = training_config(GldmTrainConfig, args, {"ae_epochs": args.ae_epochs,
                                                      "denoiser_steps": args.denoiser_steps})
        out = train_gldm(args.data, args.output, cfg, resume=args.resume, progress=not args.no_progress,
                         extra_data=args.extra_data, init_autoencoder=args.init_autoencoder,
                         finetune=args.finetune)
        last = out["history"][-1] if out["history"] else {}
        nan = float("nan")
        recon = next((r["val_reconstruction"] for r in reversed(out["history"]) if "val_reconstruction" in r), nan)
        print(f"{args.output}: validation rel. L1 of nt: reconstruction {recon:.3e}, "
              f"one step {last.get('val_one_step', nan):.3e}, atoms only {last.get('val_atoms_only', nan):.3e}, "
              f"autonomous {last.get('val_autonomous', nan):.3e}")
        return 0
