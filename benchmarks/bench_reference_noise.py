"""How exact are the reference densities the one-step errors are measured against?

Each chosen test frame is recomputed by GPAW from its positions with tight SCF criteria
(density 1e-8, eigenstates 1e-12, energy 1e-7 eV), on the dataset's grid and settings. Reported,
as relative L1 of nt (sum |a - b| / sum |tight|) and of D (sum over atoms of |a - b| / sum |tight|):
the stored frame (converged with GPAW's default criteria in the recorded MD) against the tight
one -- the floor any one-step error measured against the stored frames carries -- and each
model's one-step prediction (three stored past steps) against both.

    OMP_NUM_THREADS=1 python benchmarks/bench_reference_noise.py li16-800K-sync-lite li16-800K-sync \
        --data li16.h5 --frames $(seq 605 10 745)
"""
import argparse
import json
import time

import numpy as np
import torch

import ase_ldm
from ase_ldm.data.gpaw_io import D_asii_from_gpaw, nt_sR_from_gpaw
from ase_ldm.data.store import open_dataset

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("model", nargs="+", help="pretrained names or run directories")
ap.add_argument("--data", required=True)
ap.add_argument("--frames", type=int, nargs="+", required=True, help="test frames (each needs 3 past frames)")
ap.add_argument("--json", help="write the per-frame numbers here")
args = ap.parse_args()
torch.set_num_threads(1)
from gpaw import GPAW, PW  # noqa: E402

models = {name: ase_ldm.load(name, device="cpu") for name in args.model}
frames = sorted(args.frames)
cases = {}
with open_dataset(args.data) as ds:
    Z, cell, grid, ecut = ds.numbers, ds.cell(0), ds.grid, float(ds.attrs["ecut_eV"])
    for t in range(frames[0] - 3, frames[-1] + 1):
        f = ds.frame(t)
        D = [d[0] for d in f.D_asii]
        if t in frames:
            cases[t] = {"atoms": ds.atoms(t), "stored": (f.nt_sR[0], np.stack(D))}
            for name, m in models.items():
                nt, D_pred = m.predict(f.positions, Z, cell, grid)
                cases[t][name] = (nt, np.stack(D_pred))
        for m in models.values():
            m.observe(f.positions, f.nt_sR[0], D, Z, cell)


def rel(a, b):
    return float(np.abs(a - b).sum() / np.abs(b).sum())


rows = []
for t in frames:
    case = cases.pop(t)
    atoms = case.pop("atoms")
    atoms.calc = GPAW(mode=PW(ecut), xc="PBE", gpts=grid, occupations={"name": "fermi-dirac", "width": 0.1},
                      symmetry="off", txt=None, convergence={"density": 1e-8, "eigenstates": 1e-12, "energy": 1e-7})
    t0 = time.perf_counter()
    atoms.get_potential_energy()
    nt_tight = nt_sR_from_gpaw(atoms.calc)[0]
    D_tight = np.stack([d[0] for d in D_asii_from_gpaw(atoms.calc)])
    row = {"frame": t, "seconds": time.perf_counter() - t0}
    stored_nt, stored_D = case["stored"]
    for name, (nt, D) in case.items():
        row[f"{name} nt vs tight"] = rel(nt, nt_tight)
        row[f"{name} D vs tight"] = rel(D, D_tight)
        if name != "stored":
            row[f"{name} nt vs stored"] = rel(nt, stored_nt)
            row[f"{name} D vs stored"] = rel(D, stored_D)
    rows.append(row)
    print(t, {k: f"{100 * v:.4f} %" for k, v in row.items() if k not in ("frame", "seconds")}, flush=True)

print(f"\nmean over {len(rows)} frames (relative L1, %):")
for key in rows[0]:
    if key not in ("frame", "seconds"):
        print(f"  {key:<40} {100 * np.mean([r[key] for r in rows]):.4f}")
if args.json:
    with open(args.json, "w") as fd:
        json.dump(rows, fd, indent=1)
