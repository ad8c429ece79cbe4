"""Time one synchronised-model prediction (prior + CNN + PAW head) on the GPU.

Random liquid-density Li cells of 16, 54 and 128 atoms on grids with the model's spacing; median
of 20 predictions at new positions (the prior is recomputed each time), host-device copies
included.

    python benchmarks/bench_sync_gpu_time.py        (needs CUDA)
"""
import time

import numpy as np
import torch

from ase_ldm.sync.predictor import SyncPredictor

torch.backends.cudnn.benchmark = True
pred = SyncPredictor.load("li16-800K-sync", device="cuda")
rng = np.random.default_rng(0)
for m, N in ((2, 30), (3, 45), (4, 60)):
    L = 3.635 * m
    cell = np.eye(3) * L
    na = 2 * m**3
    Z = np.full(na, 3)
    pos = rng.random((na, 3)) * L
    nt = np.full((N, N, N), 18.4 / 16 * na / L**3)
    D = np.zeros((na, 5, 5))
    pred.reset()
    for _ in range(3):
        pred.observe(pos, nt, D, Z, cell)
    for _ in range(5):
        pred.predict(pos + 0.01, Z, cell, (N, N, N))
    torch.cuda.synchronize()
    ts = []
    for k in range(20):
        t0 = time.perf_counter()
        pred.predict(pos + 0.01 * (k + 2), Z, cell, (N, N, N))  # new positions: the prior is recomputed
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    print(f"Li{na} grid {N}^3: median {1000 * np.median(ts):.1f} ms per prediction (incl. host<->device copies)")
