"""Is a model's one-step error predictable from its earlier errors? (issue: the learned guess, goal 3)

A guided MD run knows, after each SCF, the converged density and so the model's error at that
step. If the errors of successive steps were correlated, adding a share of the last error to
the next guess (error feedback) would be free accuracy. This predicts the test frames one step
ahead from the converged history (as in a guided run), and reports the mean relative L1 of nt
and of D for the model and for the model plus a share a of the last error (and a linear
extrapolation of the last two), with the correlation of successive error fields.

    OMP_NUM_THREADS=1 python benchmarks/bench_error_feedback.py li16-800K-sync-lite --data li16.h5 --start 600
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def main() -> None:
    from ase_ldm.core.registry import load
    from ase_ldm.data import open_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--start", type=int, required=True, help="first test frame")
    ap.add_argument("--stop", type=int)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = open_dataset(args.data)
    model = load(args.model, device="cpu")
    numbers, cell = ds.numbers, ds.cell(0)
    stop = len(ds) if args.stop is None else args.stop

    def D(k: int) -> list[np.ndarray]:
        return [np.asarray(x)[0] for x in ds.D_asii(k)]

    for k in range(args.start - model.max_history, args.start):
        model.observe(ds.array("positions", k, k + 1)[0], ds.nt(k).sum(0), D(k), numbers, cell)
    P, T, PD, TD = [], [], [], []
    for t in range(args.start, stop):
        pos = ds.array("positions", t, t + 1)[0]
        nt, D_pred = model.predict(pos, numbers, cell, ds.grid)
        P.append(nt)
        T.append(ds.nt(t).sum(0).astype(np.float64))
        PD.append(np.concatenate([d.ravel() for d in D_pred]))
        TD.append(np.concatenate([d.ravel() for d in D(t)]))
        model.observe(pos, T[-1], D(t), numbers, cell)
    P, T, PD, TD = map(np.array, (P, T, PD, TD))
    E, ED = T - P, TD - PD

    def rel(guess: np.ndarray, ref: np.ndarray) -> float:
        return float(np.abs(guess - ref).sum() / np.abs(ref).sum())

    rules = {"model": lambda X, Y, i: X[i]}
    for a in (0.5, 1.0):
        rules[f"model + {a} x last error"] = lambda X, Y, i, a=a: X[i] + a * Y[i - 1]
    rules["model + linear extrapolation of the errors"] = lambda X, Y, i: X[i] + 2 * Y[i - 1] - Y[i - 2]
    out = {"model": args.model, "frames": [args.start + 2, stop]}
    for name, rule in rules.items():
        nt = np.mean([rel(rule(P, E, i), T[i]) for i in range(2, len(T))])
        d = np.mean([rel(rule(PD, ED, i), TD[i]) for i in range(2, len(T))])
        out[name] = {"nt_rel_l1": float(nt), "D_rel_l1": float(d)}
        print(f"{name:45s} nt {100 * nt:.4f} %   D {100 * d:.4f} %")
    corr = [np.corrcoef(E[i].ravel(), E[i - 1].ravel())[0, 1] for i in range(1, len(E))]
    out["error_correlation_successive_steps"] = float(np.mean(corr))
    print(f"correlation of successive error fields: {np.mean(corr):.4f}")
    if args.json:
        with open(args.json, "w") as fd:
            json.dump(out, fd, indent=1)


if __name__ == "__main__":
    main()
