"""Benchmark GPAW SCF iterations per MD step with density providers as initial guesses.

Runs NVE MD from the same dataset frame (positions, velocities, GPAW settings) for each
provider: gpaw (GPAW's own reuse, always run as the reference), previous,
extrapolate-linear, extrapolate-quadratic, sad-extrapolate, or a model (pretrained name or
run directory). NAME+wfsK also extrapolates the wave functions in time (order K: 1 linear,
2 quadratic) instead of GPAW's move of them. Reports iterations per step, seconds per step
(model time included), the guess's share of them and the largest energy and force
differences from GPAW's own run. --threads N runs each provider in a fresh process with N
threads (torch, OpenMP, BLAS). Under MPI (mpiexec -n N ase-ldm scf-bench ...) every provider
runs on all ranks and rank 0 prints and writes.

Example: ase-ldm scf-bench li16.h5 --frame 600 --steps 10 --provider extrapolate-quadratic
         --provider sad-extrapolate --threads 1 --json scf.json
"""

from __future__ import annotations

import argparse


class CLICommand:
    __doc__ = __doc__

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("data", help="dataset with velocities (e.g. recorded or the imported reference)")
        p.add_argument("--frame", type=int, default=0, help="start frame")
        p.add_argument("--steps", type=int, default=10, help="MD steps after the cold start")
        p.add_argument("--provider", action="append", default=[], help="provider name, or NAME+wfsK (repeatable)")
        p.add_argument("--device", default="cpu", help="device for model providers")
        p.add_argument("--threads", type=int, help="run each provider in a fresh process with this many threads")
        p.add_argument("--mode", choices=["pw", "lcao", "fd"],
                       help="GPAW mode on the dataset's grid (default: the dataset's; lcao uses the dzp basis)")
        p.add_argument("--mixer-beta", type=float,
                       help="step of GPAW's density mixer for every provider, GPAW's own included (default: "
                            "GPAW's, 0.05); the converged answer does not depend on it")
        p.add_argument("--json", help="write the results here")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..core.mpi import is_root
        from ..scf.bench import scf_bench

        out = scf_bench(args.data, args.frame, args.steps, args.provider or ["extrapolate-quadratic"],
                        device=args.device, json_out=args.json, threads=args.threads, mode=args.mode,
                        mixer_beta=args.mixer_beta)
        if not is_root():
            return 0
        print(f"{'provider':<30}{'iter/step':>10}{'s/step':>9}{'guess':>7}{'cold':>6}{'max dE (eV)':>13}"
              f"{'max dF (eV/A)':>15}{'threads':>8}")
        for name, r in out["providers"].items():
            print(f"{name:<30}{r['iterations_per_step']:>10.2f}{r['seconds_per_step']:>9.3f}"
                  f"{100 * r['guess_share']:>6.0f}%{r['cold_start_iterations']:>6d}"
                  f"{r['max_energy_diff_eV']:>13.2e}{r['max_force_diff_eV_A']:>15.2e}{r['threads']['torch']:>8d}")
        return 0
