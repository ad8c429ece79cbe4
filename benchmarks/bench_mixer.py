"""SCF iterations per guided MD step against the step of GPAW's density mixer.

For each mixer step (GPAW's default mixer, MSR1, takes 0.05) and each provider spec, NVE MD from
a dataset frame with the dataset's GPAW settings (as `scf-bench`), printing the iterations of every
step and the largest energy difference from GPAW's own run with the same mixer.

    OMP_NUM_THREADS=1 python benchmarks/bench_mixer.py li16.h5 --frame 600 --steps 10 --beta 0.05 0.15 0.3 \
        --provider li16-800K-sync-lite+wfs2 --provider sad-extrapolate+wfs2 --provider sad-extrapolate
"""
import argparse
import json

import numpy as np
import torch

from ase_ldm.scf.bench import run_provider

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("data")
ap.add_argument("--frame", type=int, default=600)
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--beta", type=float, nargs="+", default=[0.05, 0.15, 0.3])
ap.add_argument("--provider", action="append", default=[])
ap.add_argument("--json")
args = ap.parse_args()
torch.set_num_threads(1)
out = []
for beta in args.beta:
    ref = None
    for spec in ["gpaw", *args.provider]:
        r = run_provider(args.data, args.frame, args.steps, spec, mixer_beta=beta)
        ref = r if spec == "gpaw" else ref
        dE = float(np.abs(np.array(r["energy_eV"]) - np.array(ref["energy_eV"])).max())
        out.append({"beta": beta, "provider": spec, "iterations": r["iterations"], "max_dE_eV": dE})
        print(f"beta {beta:<5} {spec:<28} {np.mean(r['iterations']):5.2f}  {r['iterations']}  max dE {dE:.1e} eV",
              flush=True)
if args.json:
    with open(args.json, "w") as fd:
        json.dump(out, fd, indent=1)
