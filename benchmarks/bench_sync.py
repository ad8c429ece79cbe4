"""One-step accuracy of the atom-synchronised model against every baseline, side by side.

For each held-out frame t of a reference dataset, every method predicts nt_t (and D_t) from
frames before t and the atoms of frame t:

* persistence, quadratic extrapolation (nt and D);
* GPAW's free-atom superposition (sad) and sad + quadratically extrapolated residual;
* the model's learned prior alone, and prior + quadratically extrapolated residual;
* the model with three past steps (warm) and from the atoms alone (cold);
* the model fed its own predictions as history (autoregressive), from the true frames before the
  test segment: error after 1, 10, 50 and all steps.

Metrics: relative L1 of nt (= integral of |dn| per electron of nt), integral of |dn| in
electrons, relative Frobenius error of the PAW matrices and their largest element error; the
model's time per step on this machine (one frame, torch threads as set by OMP_NUM_THREADS).

    python benchmarks/bench_sync.py li16-800K-sync --data bench-output/li16_800K.h5 --start 600
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from ase_ldm.analysis.baselines import baseline_frames
from ase_ldm.core.extrapolation import extrapolate
from ase_ldm.data import open_dataset
from ase_ldm.sync.net import unpack_D
from ase_ldm.sync.predictor import SyncPredictor
from ase_ldm.sync.series import series_from_dataset


def _D(frame_D: list[np.ndarray]) -> np.ndarray:
    """All atoms' spin-paired PAW matrices as one flat vector (species may differ in ni)."""
    return np.concatenate([np.asarray(D)[0].ravel() for D in frame_D])


def _flat(D_aii: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(D).ravel() for D in D_aii])


class Score:
    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float, float]] = []

    def add(self, nt: np.ndarray, ref: np.ndarray, dV: float, D: np.ndarray | None, D_ref: np.ndarray) -> None:
        diff = float(np.abs(nt - ref).sum())
        rel = diff / float(np.abs(ref).sum())
        if D is None:
            self.rows.append((rel, diff * dV, np.nan, np.nan))
        else:
            self.rows.append((rel, diff * dV, float(np.linalg.norm(D - D_ref) / np.linalg.norm(D_ref)),
                              float(np.abs(D - D_ref).max())))

    def summary(self) -> dict[str, float]:
        a = np.array(self.rows)
        return {"rel_l1_mean": a[:, 0].mean(), "rel_l1_max": a[:, 0].max(), "int_abs_dn_e": a[:, 1].mean(),
                "D_rel_fro": a[:, 2].mean(), "D_max_abs": a[:, 3].max(), "frames": len(a)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--start", type=int, required=True, help="first test frame (needs 3 frames before it)")
    ap.add_argument("--stop", type=int)
    ap.add_argument("--no-gpaw", action="store_true", help="skip GPAW's superposition baselines")
    ap.add_argument("--auto-history", type=int, default=1,
                    help="past steps the autoregressive run uses (its own predictions; default 1)")
    ap.add_argument("-o", "--output", help="write the results as JSON")
    args = ap.parse_args()
    pred = SyncPredictor.load(args.model, device="cpu")
    model = pred.model
    ds = open_dataset(args.data)
    stop = len(ds) if args.stop is None else args.stop
    first = args.start - 3
    series = series_from_dataset(ds, pred.prior, first, stop)
    dV = ds.volume_element()
    numbers, cell = ds.numbers, ds.cell(0)
    species = torch.as_tensor(pred.prior.species_index(numbers))
    band = pred.band_for(cell, ds.grid)
    scores = {k: Score() for k in ("persistence", "quadratic", "sad (GPAW)", "sad-extrapolate (GPAW)",
                                   "learned prior", "learned prior + quadratic residual", "model, cold (atoms only)",
                                   "model, warm (3 past steps)", f"model, autoregressive (h={args.auto_history})")}
    gpaw = {} if args.no_gpaw else {
        "sad (GPAW)": baseline_frames(ds, "sad", args.start, stop),
        "sad-extrapolate (GPAW)": baseline_frames(ds, "sad-extrapolate", args.start, stop)}
    auto = SyncPredictor(model, pred.prior, pred.meta, torch.device("cpu"), max_history=args.auto_history)
    for k in range(first, args.start):
        auto.observe(ds.array("positions", k, k + 1)[0], ds.nt(k).sum(0), [np.asarray(D)[0] for D in ds.D_asii(k)],
                     numbers, cell)
    auto_err: dict[int, float] = {}
    seconds = []
    for i, t in enumerate(tqdm(range(args.start, stop), desc="bench-sync")):
        j = t - first
        ref = (series.p[j] + series.r[j]).double().numpy()
        D_ref = _D(ds.D_asii(t))
        nts = [ds.nt(t - k).sum(0).astype(np.float64) for k in (1, 2, 3)]
        Ds = [_D(ds.D_asii(t - k)).astype(np.float64) for k in (1, 2, 3)]
        scores["persistence"].add(nts[0], ref, dV, Ds[0], D_ref)
        scores["quadratic"].add(extrapolate(nts), ref, dV, extrapolate(Ds), D_ref)
        p = series.p[j].double().numpy()
        r_hat = extrapolate([series.r[j - k].double().numpy() for k in (1, 2, 3)])
        scores["learned prior"].add(p, ref, dV, None, D_ref)
        scores["learned prior + quadratic residual"].add(p + r_hat, ref, dV, extrapolate(Ds), D_ref)
        for name, it in gpaw.items():
            f = next(it)
            scores[name].add(f.nt_sR.sum(0).astype(np.float64), ref, dV,
                             None if f.D_asii is None else _D(f.D_asii), D_ref)
        with torch.no_grad():
            for h, name in ((3, "model, warm (3 past steps)"), (0, "model, cold (atoms only)")):
                b = series.batch(torch.tensor([j]), torch.tensor([h]), torch.tensor([False]), model.history)
                t0 = time.perf_counter()
                nt, D = model(b["p"], b["p_hist"], b["r_hist"], b["h"], b["frac"], species, b["D_hist"], band)
                if h == 3:
                    seconds.append(time.perf_counter() - t0)
                D = D[0]
                D = model.layout.unpad(unpack_D(D.double(), model.ni).numpy(), species.numpy())
                scores[name].add(nt[0].double().numpy(), ref, dV, _flat(D), D_ref)
        positions = ds.array("positions", t, t + 1)[0]
        nt_a, D_a = auto.predict(positions, numbers, cell, ds.grid)
        auto_score = scores[f"model, autoregressive (h={args.auto_history})"]
        auto_score.add(nt_a, ref, dV, _flat(D_a), D_ref)
        auto_err[i + 1] = auto_score.rows[-1][0]
        auto.observe(positions, nt_a, D_a, numbers, cell)
    out = {"model": args.model, "data": args.data, "frames": [args.start, stop],
           "model_seconds_per_step": float(np.median(seconds)), "torch_threads": torch.get_num_threads(),
           "autoregressive_rel_l1": {n: auto_err[n] for n in (1, 10, 50, len(auto_err)) if n in auto_err},
           "methods": {k: v.summary() for k, v in scores.items() if v.rows}}
    print(f"{'method':40s} {'rel L1 nt':>10s} {'max':>9s} {'int|dn| e':>10s} {'D rel':>9s} {'D max':>9s}")
    for k, s in out["methods"].items():
        print(f"{k:40s} {100 * s['rel_l1_mean']:9.4f}% {100 * s['rel_l1_max']:8.4f}% {s['int_abs_dn_e']:10.5f} "
              f"{100 * s['D_rel_fro']:8.4f}% {s['D_max_abs']:9.2e}")
    auto = {n: f"{100 * e:.4f}%" for n, e in out["autoregressive_rel_l1"].items()}
    print("autoregressive rel. L1 after n steps:", auto)
    print(f"model time per step: {out['model_seconds_per_step'] * 1000:.0f} ms ({out['torch_threads']} threads)")
    if args.output:
        with open(args.output, "w") as fd:
            json.dump(out, fd, indent=1)


if __name__ == "__main__":
    main()
