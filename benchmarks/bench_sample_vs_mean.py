"""Why the SCF guess is deterministic: one generated sample against the mean of K samples.

The converged density of a step is one definite function of the atomic positions (Born-
Oppenheimer), so a guess is scored by its distance to that one density. For any predictive
distribution, E|x - n|^2 = |E[x] - n|^2 + tr Cov[x]: a sample is on average further from n than
the distribution's mean, by its spread. This script measures it with the paper's generative
model (``li16-800K-paper``, DDPM at its calibrated temperature): for held-out frames it draws K
one-step samples from the true previous two frames and compares the relative L1 and L2 errors
of a single sample, of the mean of the K samples, and of deterministic DDIM.

    python benchmarks/bench_sample_vs_mean.py --data bench-output/li16_800K.h5 --start 600 --frames 20 --samples 8
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from tqdm.auto import tqdm

from ase_ldm import load_model
from ase_ldm.data import open_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="li16-800K-paper")
    ap.add_argument("--data", required=True)
    ap.add_argument("--start", type=int, default=600)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("-o", "--output")
    args = ap.parse_args()
    sur = load_model(args.model, device="cpu")
    ds = open_dataset(args.data)
    rows = {"one sample (DDPM)": [], f"mean of {args.samples} samples (DDPM)": [], "DDIM (deterministic)": []}
    rows_l2 = {k: [] for k in rows}
    gen = torch.Generator().manual_seed(0)
    for t in tqdm(range(args.start, args.start + args.frames), desc="samples"):
        n0, n1, ref = (ds.nt(k).sum(0).astype(np.float64) for k in (t - 2, t - 1, t))
        count = float(n1.sum() * sur.dV)
        z = sur.encode(n0, n1).repeat(args.samples, 1)
        xs = sur.decode(sur.predict_next(z, "ddpm", generator=gen), count)
        det = sur.decode(sur.predict_next(z[:1], "ddim", 20, gen), count)[0]
        preds = {"one sample (DDPM)": list(xs), f"mean of {args.samples} samples (DDPM)": [xs.mean(0)],
                 "DDIM (deterministic)": [det]}
        for k, xs_k in preds.items():
            rows[k] += [np.abs(x - ref).sum() / ref.sum() for x in xs_k]
            rows_l2[k] += [np.linalg.norm(x - ref) / np.linalg.norm(ref) for x in xs_k]
    out = {k: {"rel_l1": float(np.mean(v)), "rel_l2": float(np.mean(rows_l2[k]))} for k, v in rows.items()}
    for k, v in out.items():
        print(f"{k:32s} rel L1 {100 * v['rel_l1']:.3f}%   rel L2 {100 * v['rel_l2']:.3f}%")
    if args.output:
        with open(args.output, "w") as fd:
            json.dump({"frames": [args.start, args.start + args.frames], "samples": args.samples, **out}, fd, indent=1)


if __name__ == "__main__":
    main()
