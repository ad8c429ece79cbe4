"""Benchmarks of the paper's model on the Li16 800 K reference data.

1. With and without sJSD (the paper's Figures 3-4): roll each model out from the first
   held-out frame for the length of the test segment and compare the histogram JSD and the
   S(k) error against the test segment; overlay plots of both.
2. Long rollout: 10x the test segment from the same start; NaN check, electron count against
   the AIMD range, drift of mean and variance, frame-to-frame change against the reference's.
3. Cost per generated frame (DDIM-20 and DDPM-1000, single and batched) next to GPAW's seconds
   per MD step for the same system, measured in the same run on the same machine.
4. Training time and frames/s, from the runs' histories.

    python benchmarks/bench_ldm.py --data bench-output/li16_800K.h5 --sjsd RUN --nosjsd RUN \\
        [--long-factor 10] [--gpaw-steps 3] --out bench-output/ldm
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ase_ldm import load_model
from ase_ldm.analysis.evaluate import evaluate
from ase_ldm.analysis.plots import plot_histograms, plot_structure_factor
from ase_ldm.data import open_dataset
from ase_ldm.ldm.rollout import rollout_to_datasets


def held_out(data: Path, run: Path) -> tuple[int, int]:
    meta = json.loads((run / "model.json").read_text())
    return tuple(meta["test_frames"])  # type: ignore[return-value]


def write_reference_segment(data: Path, start: int, stop: int, out: Path) -> Path:
    from ase_ldm.data import write_frames

    if not out.exists():
        with open_dataset(data) as ds:
            write_frames(out, (ds.frame(i) for i in range(start, stop)), {"timestep_fs": ds.timestep_fs})
    return out


def compare_sjsd(args, out: Path) -> dict:
    start, stop = held_out(args.data, args.sjsd)
    test = write_reference_segment(args.data, start, stop, out / "test_segment.h5")
    steps = stop - start - 1
    res, curves_h, curves_s = {}, {}, {}
    for label, run in (("with sJSD", args.sjsd), ("without sJSD", args.nosjsd)):
        path = out / f"rollout_{label.replace(' ', '_')}.h5"
        rollout_to_datasets(run, args.data, start, steps, path, seed=args.seed, overwrite=True, device="cpu")
        m = evaluate(path, test, out / f"report_{label.replace(' ', '_')}", plots=True)
        res[label] = {"jsd_histogram": m["jsd_histogram"], "sk_rel_error": m["sk_rel_error"],
                      "sk_rel_error_bands": m["sk_rel_error_bands"], "steps": steps}
        curves_h[label] = np.array(m["histogram_pred"])
        curves_s[label] = np.array(m["sk_pred"])
        ref_h, ref_s = np.array(m["histogram_ref"]), np.array(m["sk_ref"])
        centers, k = m["histogram_log10_centers"], m["sk_k"]
    plot_histograms(out / "fig4_histograms.png", np.array(centers), {**curves_h, "AIMD test segment": ref_h},
                    title="log-density histograms, rollout vs held-out AIMD")
    plot_structure_factor(out / "fig4_structure_factor.png", np.array(k), {**curves_s, "AIMD test segment": ref_s},
                          title="|S(k)|, rollout vs held-out AIMD")
    return res


def long_rollout(args, out: Path) -> dict:
    start, stop = held_out(args.data, args.sjsd)
    steps = args.long_factor * (stop - start)
    path = out / "long_rollout.h5"
    t0 = time.perf_counter()
    rollout_to_datasets(args.sjsd, args.data, start, steps, path, seed=args.seed, overwrite=True, device="cpu")
    seconds = time.perf_counter() - t0
    m = evaluate(path, args.data, out / "report_long", plots=True, max_lag=100)
    dp, dr = m["dynamics_pred"], m["dynamics_ref"]
    with open_dataset(path) as ds:
        finite = all(np.isfinite(ds.nt(i)).all() for i in range(len(ds)))
    ref_change = dr["frame_change_rel_l1_stats"]
    pred_change = dp["frame_change_rel_l1_stats"]
    return {
        "steps": steps, "test_segment_frames": stop - start, "seconds": round(seconds, 1), "all_finite": bool(finite),
        "electron_count_range_pred": m["electron_count_range_pred"],
        "electron_count_range_aimd": m["electron_count_range_ref"],
        "mean_drift_relative": dp["mean_drift"]["relative_change"],
        "std_drift_relative": dp["std_drift"]["relative_change"],
        "aimd_mean_drift_relative": dr["mean_drift"]["relative_change"],
        "aimd_std_drift_relative": dr["std_drift"]["relative_change"],
        "std_first_last_pred": [dp["std_e_per_A3"][0], dp["std_e_per_A3"][-1]],
        "std_range_aimd": [min(dr["std_e_per_A3"]), max(dr["std_e_per_A3"])],
        "frame_change_pred": pred_change, "frame_change_aimd": ref_change,
        "jsd_histogram_vs_full_aimd": m["jsd_histogram"], "sk_rel_error_vs_full_aimd": m["sk_rel_error"],
    }


def cost(args) -> dict:
    sur = load_model(args.sjsd, device="cpu")
    with open_dataset(args.data) as ds:
        n_prev, n = ds.nt(100).sum(0), ds.nt(101).sum(0)
    res = {}
    for sampler, n_steps, batches in (("ddim", 20, (1, 16)), ("ddpm", 1000, (1, 16))):
        for b in batches:
            z = sur.encode(n_prev, n).repeat(b, 1)
            gen = torch.Generator().manual_seed(0)
            reps = 5 if sampler == "ddim" else 2
            sur.decode(sur.predict_next(z, sampler, n_steps, gen))  # warm-up
            t0 = time.perf_counter()
            for _ in range(reps):
                z = sur.predict_next(z, sampler, n_steps, gen)
                sur.decode(z)
            per_call = (time.perf_counter() - t0) / reps
            res[f"{sampler}{n_steps}_batch{b}_ms_per_frame"] = round(1000 * per_call / b, 2)
    res["gpaw_seconds_per_md_step"] = gpaw_md_step_seconds(args)
    gpaw_ms = res["gpaw_seconds_per_md_step"] * 1000
    res["speedup_ddim20_single_vs_gpaw"] = round(gpaw_ms / res["ddim20_batch1_ms_per_frame"], 1)
    res["torch_threads"] = torch.get_num_threads()
    return res


def gpaw_md_step_seconds(args) -> float:
    """Seconds per GPAW MD step (wave functions reused) of the reference system, measured here."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from ase_ldm.data.aimd import AIMDSettings, make_gpaw

    with open_dataset(args.data) as ds:
        atoms = ds.atoms(100)
        ecut = float(ds.attrs.get("ecut_eV", 300.0))
    atoms.calc = make_gpaw(AIMDSettings(ecut=ecut))
    atoms.get_forces()  # cold start, not timed
    dyn = VelocityVerlet(atoms, 2.0 * units.fs)
    t0 = time.perf_counter()
    dyn.run(args.gpaw_steps)
    return round((time.perf_counter() - t0) / args.gpaw_steps, 2)


def training(args) -> dict:
    out = {}
    for label, run in (("with sJSD", args.sjsd), ("without sJSD", args.nosjsd)):
        meta = json.loads((run / "model.json").read_text())
        h = meta["history"]
        out[label] = {"epochs": len(h), "seconds_total": round(sum(r["seconds"] for r in h), 1),
                      "frames_per_second": round(float(np.mean([r["frames_per_second"] for r in h])), 2),
                      "final_losses": {k: h[-1][k] for k in ("ae", "ldm", "sjsd", "total") if k in h[-1]},
                      "test_recon_rel_l1": h[-1].get("test_recon_rel_l1"), "device": "cpu",
                      "train_frames": meta["train_frames"], "test_frames": meta["test_frames"]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--sjsd", type=Path, required=True, help="run dir trained with sJSD")
    p.add_argument("--nosjsd", type=Path, required=True, help="run dir trained without sJSD")
    p.add_argument("--out", type=Path, default=Path("bench-output/ldm"))
    p.add_argument("--long-factor", type=int, default=10)
    p.add_argument("--gpaw-steps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", default=["training", "sjsd", "long", "cost"])
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, fn in (("training", lambda: training(args)), ("sjsd", lambda: compare_sjsd(args, args.out)),
                     ("long", lambda: long_rollout(args, args.out)), ("cost", lambda: cost(args))):
        if name in args.only:
            results[name] = fn()
            print(name, json.dumps(results[name], indent=1))
    (args.out / "bench_ldm.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
