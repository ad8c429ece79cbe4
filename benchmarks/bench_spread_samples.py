"""Does the spread follow the error better with more samples? (issue: the latent diffusion
surrogate, calibrated uncertainty)

For each frame, ``--samples`` samples are drawn once (``predict_samples``, each in a frame turned by
a random cell operation), and the spread of their first K is computed for each K of
``--subsets``. The error is that of the served mean, which does not depend on K. Reported per set
and history: the Spearman rank correlation between per-frame spread and error. The spread's
calibration factor is one number per history, so it does not change a rank correlation.

    OMP_NUM_THREADS=1 python benchmarks/bench_spread_samples.py li16-800K --data li16.h5 \\
        --unseen li16_1200K.h5 --samples 64 --subsets 8 16 32 64
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    import torch
    from bench_gldm import samples_at
    from scipy.stats import spearmanr

    from ase_ldm.core.registry import load
    from ase_ldm.data import open_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True, help="the training dataset: its test frames --start..--stop")
    ap.add_argument("--start", type=int, default=600)
    ap.add_argument("--stop", type=int, default=750)
    ap.add_argument("--every", type=int, default=5, help="every n-th test frame (half of it on --unseen)")
    ap.add_argument("--unseen", action="append", default=[], help="recordings the model never saw")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--subsets", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--json", default="bench-output/spread_samples.json")
    args = ap.parse_args()
    if max(args.subsets) > args.samples or min(args.subsets) < 2:
        ap.error("each subset needs 2..--samples samples")
    torch.set_num_threads(1)
    model = load(args.model, device="cpu")
    sets = [(Path(args.data).stem, args.data, list(range(args.start, args.stop, args.every)))]
    for u in args.unseen:
        with open_dataset(u) as du:
            sets.append((Path(u).stem, u, list(range(model.history, len(du), max(1, args.every // 2)))))
    res: dict = {"model": args.model, "samples": args.samples}
    for name, path, frames in sets:
        with open_dataset(path) as ds:
            for h in (0, model.history):
                err, spread = [], {k: [] for k in args.subsets}
                for t in frames:
                    s, f = samples_at(model, ds, t, h, args.samples)
                    ref = f.nt_sR[0]
                    err.append(float(np.abs(s.nt_R - ref).sum() / np.abs(ref).sum()))
                    for k in args.subsets:
                        spread[k].append(float(s.samples[:k].std(0).sum() / np.abs(s.nt_R).sum()))
                rank = {k: float(spearmanr(spread[k], err).statistic) for k in args.subsets}
                res[f"{name}_h{h}"] = {"frames": len(frames), "spearman": rank, "error": err, "spread": spread}
                print(name, "history", h, "frames", len(frames), "spearman", rank, flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
