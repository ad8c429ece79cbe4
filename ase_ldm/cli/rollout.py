"""Roll a trained model out from a dataset frame and write the generated trajectory.

MODEL is a run directory or a pretrained name (e.g. li16-800K). The initial state is frames
i-1 and i of --init. The output is a dataset, so 'ase-ldm evaluate OUT --reference DATA'
works on it. Atoms are not modelled: each generated frame carries the atoms of --init at the
same time when --init has that frame (so pointwise errors against it are computed), else
those of frame i. With --samples K, K independent chains run as one batch and are written to
OUT with suffixes -s0, -s1, ...

Example: ase-ldm rollout li16-800K --init li16.h5 --frame 600 --steps 150 -o rollout.h5
"""

from __future__ import annotations

import argparse


class CLICommand:
    __doc__ = __doc__

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="run directory or pretrained name")
        p.add_argument("--init", required=True, help="dataset holding the initial frames")
        p.add_argument("--frame", type=int, required=True,
                       help="initial frame i >= 1 (frame i-1 gives the derivative); negative counts from the end")
        p.add_argument("--steps", type=int, required=True, help="frames to generate (>= 1)")
        p.add_argument("--samples", type=int, default=1, help="independent chains (batched, >= 1)")
        p.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
        p.add_argument("--sampler-steps", type=int, default=20, help="DDIM steps (ddpm always uses all)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto")
        p.add_argument("-o", "--output", required=True, help="output dataset (.h5)")
        p.add_argument("--force", action="store_true", help="replace existing outputs")
        therm = p.add_mutually_exclusive_group()
        therm.add_argument("--thermostat", type=float, metavar="TAU",
                           help="grid-latent models: time constant (steps) of the latent thermostat (default 1)")
        therm.add_argument("--no-thermostat", action="store_true",
                           help="grid-latent models: let the chain run at its own pace")
        p.add_argument("--no-rollout-gain", action="store_true",
                       help="grid-latent models: serve the samples without the rollout gain fitted on the model's "
                            "own rollouts (the decoder's sample gain only)")
        hold = p.add_mutually_exclusive_group()
        hold.add_argument("--hold-steps", type=float, metavar="TAU",
                          help="grid-latent models: relaxation time (steps) of the amplitude hold that keeps each "
                               "chain's short-wavelength amplitude at the training data's (default: the model's)")
        hold.add_argument("--no-hold", action="store_true",
                          help="grid-latent models: serve through the rollout gain without the amplitude hold")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..ldm.rollout import check_rollout_args, rollout_to_datasets

        check_rollout_args(args.steps, args.samples, args.sampler_steps if args.sampler == "ddim" else None)
        options: dict = {}
        if args.no_thermostat:
            options["thermostat"] = None
        elif args.thermostat is not None:
            options["thermostat"] = args.thermostat
        if args.no_rollout_gain:
            options["rollout_gain"] = False
        if args.no_hold:
            options["hold"] = False
        elif args.hold_steps is not None:
            options["hold"] = args.hold_steps
        paths = rollout_to_datasets(args.model, args.init, args.frame, args.steps, args.output,
                                    samples=args.samples, sampler=args.sampler, n_steps=args.sampler_steps,
                                    seed=args.seed, device=args.device, overwrite=args.force, progress=True,
                                    options=options)
        for p in paths:
            print(f"{p}: {args.steps} generated frames")
        return 0
