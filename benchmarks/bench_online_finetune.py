"""Does fine-tuning on the converged steps of a run make the synchronised model's next guesses
better? (issue: the learned guess must beat free physics, goal 3)

A guided run produces converged nt + D at every step, so the model could take a few gradient
steps on them as it goes. This replays the test frames in order: each frame is predicted from
its three converged past steps, then (if ``lr`` > 0) the model takes ``steps`` Adam steps on a
batch of 4 frames drawn from the last ``window`` converged ones (random cell operations), with
the training loss. Reports the mean one-step rel. L1 of nt, overall, on the first 50 frames and
on the rest, for each setting.

    OMP_NUM_THREADS=1 python benchmarks/bench_online_finetune.py li16-800K-sync-lite --data li16.h5 --start 600
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

SETTINGS = ((0.0, 0, 1), (1e-4, 1, 8), (3e-4, 1, 8), (1e-4, 2, 16))  # lr, steps per frame, window


def main() -> None:
    from ase_ldm.data import open_dataset
    from ase_ldm.sync.predictor import SyncPredictor
    from ase_ldm.sync.series import series_from_dataset
    from ase_ldm.sync.symmetry import symmetry_ops
    from ase_ldm.sync.training import _losses

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--start", type=int, required=True, help="first test frame (needs the history before it)")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = open_dataset(args.data)
    pred = SyncPredictor.load(args.model, device="cpu")
    H = pred.model.history
    first = args.start - H
    series = series_from_dataset(ds, pred.prior, first, len(ds))
    species = torch.as_tensor(pred.prior.species_index(ds.numbers))
    band = pred.band_for(ds.cell(0), ds.grid)
    ops = symmetry_ops(ds.cell(0), ds.grid)
    out = {"model": args.model, "frames": [args.start, len(ds)], "settings": []}
    for lr, steps, window in SETTINGS:
        model = copy.deepcopy(pred.model)
        opt = torch.optim.Adam(model.parameters(), lr=lr) if lr else None
        rng = np.random.default_rng(0)
        errs = []
        t0 = time.perf_counter()
        for j in range(H, len(ds) - first):
            model.eval()
            with torch.no_grad():
                b = series.batch(torch.tensor([j]), torch.tensor([H]), torch.tensor([False]), H)
                nt, _ = model(b["p"], b["p_hist"], b["r_hist"], b["h"], b["frac"], species, b["D_hist"], band)
                errs.append(float((nt - b["nt"]).abs().sum() / b["nt"].abs().sum()))
            if opt is None:
                continue
            model.train()
            for _ in range(steps):
                ts = torch.tensor(rng.integers(max(H, j - window + 1), j + 1, size=min(4, window)))
                b = series.batch(ts, torch.full_like(ts, H), torch.zeros_like(ts, dtype=torch.bool), H)
                b = series.augment(b, [ops[i] for i in rng.integers(len(ops), size=len(ts))])
                losses = _losses(model, b, species, band)
                opt.zero_grad()
                (losses["nt"] + losses["D"]).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
        e = np.array(errs)
        row = {"lr": lr, "steps": steps, "window": window, "rel_l1": float(e.mean()),
               "rel_l1_first50": float(e[:50].mean()), "rel_l1_rest": float(e[50:].mean()),
               "seconds": time.perf_counter() - t0}
        out["settings"].append(row)
        print(f"lr {lr:g}, {steps} step(s) per frame, window {window}: {100 * row['rel_l1']:.4f} % "
              f"(first 50 frames {100 * row['rel_l1_first50']:.4f} %, rest {100 * row['rel_l1_rest']:.4f} %), "
              f"{row['seconds']:.0f} s", flush=True)
    if args.json:
        with open(args.json, "w") as fd:
            json.dump(out, fd, indent=1)


if __name__ == "__main__":
    main()
