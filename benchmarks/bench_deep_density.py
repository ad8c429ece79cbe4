"""Atoms-only densities on held-out frames: Deep Density against the synchronised models' cold start.

Trains (or resumes) Deep Density on frames [0, --train) of the dataset, then measures the relative
L1 of nt (sum |pred - nt| / sum |nt|, full grid) on test frames, next to each named synchronised
model predicting from the atoms alone (no history).

    OMP_NUM_THREADS=1 python benchmarks/bench_deep_density.py --data li16.h5 --train 600 \
        --run runs/li16-deep-density --epochs 15 --frames $(seq 600 10 749) \
        --compare li16-800K-sync li16-800K-sync-lite
"""
import argparse
import json
import time

import numpy as np
import torch

import ase_ldm
from ase_ldm.data.store import open_dataset
from ase_ldm.deepdensity import DeepDensityTrainConfig
from ase_ldm.deepdensity.training import load_deep_density, train_deep_density

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--data", required=True)
ap.add_argument("--train", type=int, default=600)
ap.add_argument("--run", required=True, help="Deep Density run directory (resumed if it has a checkpoint)")
ap.add_argument("--epochs", type=int, default=15)
ap.add_argument("--points", type=int, default=2000)
ap.add_argument("--frames", type=int, nargs="+", required=True)
ap.add_argument("--compare", nargs="*", default=[], help="synchronised models (their cold start)")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--json")
args = ap.parse_args()
torch.set_num_threads(args.threads)

from pathlib import Path  # noqa: E402

resume = (Path(args.run) / "model.json").exists()
t0 = time.perf_counter()
cfg = None if resume else DeepDensityTrainConfig(epochs=args.epochs, points=args.points)
hist = train_deep_density(args.data, args.run, cfg, n_train=args.train, resume=resume)["history"]
train_s = time.perf_counter() - t0
net = load_deep_density(args.run)
models = {name: ase_ldm.load(name, device="cpu") for name in args.compare}
rows = {"deep-density": [], **{name: [] for name in models}}
seconds = {k: [] for k in rows}
with open_dataset(args.data) as ds:
    Z, cell, grid = ds.numbers, ds.cell(0), ds.grid
    for t in args.frames:
        f = ds.frame(t)
        ref = f.nt_sR[0]
        s0 = time.perf_counter()
        rho = net.density_on_grid(f.positions, Z, cell, grid)
        seconds["deep-density"].append(time.perf_counter() - s0)
        rows["deep-density"].append(float(np.abs(rho - ref).sum() / np.abs(ref).sum()))
        for name, m in models.items():
            m.reset()
            s0 = time.perf_counter()
            nt, _ = m.predict(f.positions, Z, cell, grid)
            seconds[name].append(time.perf_counter() - s0)
            rows[name].append(float(np.abs(nt - ref).sum() / np.abs(ref).sum()))
print(f"Deep Density: {len(hist)} epochs, {train_s:.0f} s in this call, validation rel. L1 "
      f"{hist[-1].get('val_rel_l1', float('nan')):.4f}")
print(f"{'atoms-only model':<26}{'mean rel. L1':>14}{'max':>10}{'s/frame':>10}   ({len(args.frames)} frames)")
for name, errs in rows.items():
    print(f"{name:<26}{100 * np.mean(errs):>13.3f}%{100 * np.max(errs):>9.3f}%{np.median(seconds[name]):>10.3f}")
if args.json:
    with open(args.json, "w") as fd:
        json.dump({"rows": rows, "seconds": seconds, "history": hist}, fd, indent=1)
