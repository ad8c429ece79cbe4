"""Time one guess of a density model (prior + network + PAW head) on the CPU or a GPU.

Random liquid-density Li cells of 16, 54 and 128 atoms on grids with the model's spacing; the
median of 20 predictions at new positions (the prior is recomputed each time) after a
three-step history, host-device copies included.

    OMP_NUM_THREADS=1 python benchmarks/bench_guess_cost.py li16-800K-sync --threads 1
    python benchmarks/bench_guess_cost.py li16-800K-sync --device cuda
"""
import argparse
import time

import numpy as np
import torch

import ase_ldm

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("model", nargs="+", help="pretrained names or run directories")
ap.add_argument("--device", default="cpu")
ap.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
ap.add_argument("--repeats", type=int, default=20)
ap.add_argument("--sizes", type=int, nargs="+", default=[2, 3, 4], help="bcc supercells m x m x m (2 m^3 Li)")
args = ap.parse_args()
torch.set_num_threads(args.threads)
cuda = args.device.startswith("cuda")
if cuda:
    torch.backends.cudnn.benchmark = True
for name in args.model:
    pred = ase_ldm.load(name, device=args.device)
    rng = np.random.default_rng(0)
    for m in args.sizes:
        L = 3.635 * m
        cell = np.eye(3) * L
        grid = pred.grid_for(cell)
        na = 2 * m**3
        Z = np.full(na, 3)
        pos = rng.random((na, 3)) * L
        nt = np.full(grid, 18.4 / 16 * na / L**3)
        D = np.zeros((na, 5, 5))
        pred.reset()
        for _ in range(3):
            pred.observe(pos, nt, D, Z, cell)
        for _ in range(3):
            pred.predict(pos + 0.01, Z, cell, grid)
        ts = []
        for k in range(args.repeats):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            pred.predict(pos + 0.01 * (k + 2), Z, cell, grid)  # new positions: the prior is recomputed
            if cuda:
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        print(f"{name}: Li{na} grid {'x'.join(map(str, grid))} on {args.device} ({torch.get_num_threads()} "
              f"threads): median {1000 * np.median(ts):.1f} ms per guess (min {1000 * min(ts):.1f})", flush=True)
