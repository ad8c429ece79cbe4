"""Benchmarks of the grid-latent diffusion model (issue: the latent diffusion surrogate, made to follow the atoms).

Sections (each optional, all on held-out frames; one CPU thread for the model unless --threads):

- ``recon``: autoencoder reconstruction of the test frames against the time-mean density of the
  training frames (rel. L1 of nt).
- ``errors``: one-step (full history) and atoms-only mean-mode errors, next to the same modes of a
  synchronised model (``--sync``), frame by frame on the test frames.
- ``spread``: K samples per frame: per-frame spread against per-frame error (Spearman rank
  correlation, spread-skill ratio mean(spread) / mean(error)) on the test frames and on each
  ``--unseen`` recording (e.g. 1200 K), with and without history.
- ``rollout``: autonomous rollouts from the first test frame (no atoms), histogram JSD and S(k)
  error against the test segment, next to the AIMD-vs-AIMD floor (``--floor``: an independent
  trajectory of the same system against the same segment).
- ``short``: rollouts of the test segment's length (mean mode and DDIM samples), same statistics.
- ``speed``: seconds per mean-mode frame against seconds per GPAW MD step of the same system in
  the same run (GPAW as recorded, GPAW's own guess).

    python benchmarks/bench_gldm.py --model runs/gldm --data li16.h5 --sync li16-800K-sync-lite \\
        --unseen li16_1200K.h5 --floor li16_s31.h5 --rollout-steps 1000 --json bench-output/gldm.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def rel_l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).sum() / np.abs(b).sum())


def recon(model, ds, frames, train_stop: int) -> dict:
    mean = np.mean([ds.nt(i)[0] for i in range(0, train_stop, 5)], axis=0)
    errs, served, base = [], [], []
    model._prepare(ds.numbers, ds.cell(0), ds.grid)
    with torch.inference_mode():
        for t in frames:
            nt = ds.nt(t)[0]
            x = torch.as_tensor(nt, dtype=torch.float32)[None]
            u = model.model.encode(x)
            errs.append(rel_l1(model.model.decode(u)[0].double().numpy(), nt))
            # as served: band, the decoder's spectral gain for means, the electron count
            served.append(rel_l1(model._density(u)[0].double().numpy(), nt))
            base.append(rel_l1(mean, nt))
    return {"reconstruction_rel_l1": float(np.mean(errs)), "served_reconstruction_rel_l1": float(np.mean(served)),
            "time_mean_rel_l1": float(np.mean(base)), "ratio": float(np.mean(base) / np.mean(errs)),
            "frames": len(frames)}


def one_step(model, ds, frames, history: int) -> np.ndarray:
    """Mean-mode errors of ``frames`` predicted from ``history`` converged steps and the atoms."""
    model.max_history = history
    out = []
    for t in frames:
        model.reset()
        for k in range(t - history, t):
            f = ds.frame(k)
            D = [np.asarray(d)[0] for d in ds.D_asii(k)] if model.predicts_D and ds.has("D") else None
            model.observe(f.positions, f.nt_sR[0], D, f.numbers, f.cell)
        f = ds.frame(t)
        nt, _ = model.predict(f.positions, f.numbers, f.cell, ds.grid)
        out.append(rel_l1(nt, f.nt_sR[0]))
    return np.array(out)


def samples_at(model, ds, t: int, history: int, samples: int):
    """``predict_samples`` for frame t of ds from its atoms and ``history`` converged steps before it
    (seeded with t), and the frame itself."""
    model.max_history = history
    model.reset()
    for k in range(t - history, t):
        f = ds.frame(k)
        model.observe(f.positions, f.nt_sR[0], None, f.numbers, f.cell)
    f = ds.frame(t)
    return model.predict_samples(f.positions, f.numbers, f.cell, ds.grid, samples, seed=int(t)), f


def spread_skill(model, ds, frames, history: int, samples: int) -> dict:
    from scipy.stats import spearmanr

    spread, err = [], []
    for t in frames:
        s, f = samples_at(model, ds, t, history, samples)
        spread.append(s.spread)
        err.append(rel_l1(s.nt_R, f.nt_sR[0]))
    spread, err = np.array(spread), np.array(err)
    rho = spearmanr(spread, err).statistic if len(frames) > 2 else float("nan")
    return {"frames": len(frames), "history": history, "samples": samples, "mean_error": float(err.mean()),
            "mean_spread": float(spread.mean()), "spread_skill": float(spread.mean() / err.mean()),
            "spearman": float(rho), "spread": spread.tolist(), "error": err.tolist()}


def rollout(model_path: str, data: str, start: int, stop: int, steps: int, out: Path, floor: str | None,
            sampler_steps: int, seed: int, label: str = "rollout") -> dict:
    from ase_ldm.analysis.evaluate import evaluate
    from ase_ldm.data import open_dataset, write_frames
    from ase_ldm.ldm.rollout import rollout_to_datasets

    out.mkdir(parents=True, exist_ok=True)
    test = out / "test_segment.h5"
    if not test.exists():
        with open_dataset(data) as ds:
            write_frames(test, (ds.frame(i) for i in range(start, stop)), {"timestep_fs": ds.timestep_fs})
    res = {}
    if floor:
        m = evaluate(floor, test, None, plots=False)
        res["floor"] = {"jsd_histogram": m["jsd_histogram"], "sk_rel_error": m["sk_rel_error"],
                        "sk_rel_error_bands": m["sk_rel_error_bands"], "dynamics": m["dynamics_pred"]}
    path = out / f"{label}.h5"
    t0 = time.perf_counter()
    rollout_to_datasets(model_path, data, start, steps, path, sampler="ddim", n_steps=sampler_steps, seed=seed,
                        overwrite=True, device="cpu")
    seconds = time.perf_counter() - t0
    m = evaluate(path, test, out / f"report_{label}", plots=True, max_lag=50)
    dyn = m["dynamics_pred"]
    res[label] = {"steps": steps, "seconds": seconds, "jsd_histogram": m["jsd_histogram"],
                      "sk_rel_error": m["sk_rel_error"], "sk_rel_error_bands": m["sk_rel_error_bands"],
                      "electron_count_range": m["electron_count_range_pred"], "dynamics": dyn,
                      "dynamics_ref": m["dynamics_ref"]}
    return res


def short_rollouts(model, data: str, start: int, stop: int, out: Path, sampler_steps: int, seed: int) -> dict:
    """Rollouts of the test segment's length from its first frame: mean mode and DDIM samples."""
    from ase_ldm.analysis.evaluate import evaluate
    from ase_ldm.data import Frame, open_dataset, write_frames

    out.mkdir(parents=True, exist_ok=True)
    test = out / "test_segment.h5"
    res = {}
    with open_dataset(data) as ds:
        n_prev, n, first, dt = ds.nt(start - 1).sum(0), ds.nt(start).sum(0), ds.frame(start), ds.timestep_fs
        if not test.exists():
            write_frames(test, (ds.frame(i) for i in range(start, stop)), {"timestep_fs": dt})
    for label, mode in (("mean", "mean"), (f"ddim{sampler_steps}", "sample")):
        frames = [f[0] for f in model.rollout(n_prev, n, stop - start - 1, sampler="ddim", n_steps=sampler_steps,
                                              seed=seed, mode=mode)]
        path = out / f"short_{label}.h5"
        path.unlink(missing_ok=True)
        write_frames(path, (Frame(nt_sR=f[None].astype(np.float32), positions=first.positions, cell=first.cell,
                                  numbers=first.numbers, time_fs=first.time_fs + dt * (i + 1))
                            for i, f in enumerate(frames)), {"timestep_fs": dt})
        m = evaluate(path, test, None, plots=False)
        res[label] = {"steps": len(frames), "jsd_histogram": m["jsd_histogram"], "sk_rel_error": m["sk_rel_error"],
                      "sk_rel_error_bands": m["sk_rel_error_bands"],
                      "frame_change": m["dynamics_pred"]["frame_change_rel_l1_stats"]}
    return res


def speed(model, ds, frame: int, repeats: int, gpaw_steps: int) -> dict:
    f = ds.frame(frame)
    model.max_history = model.history
    model.reset()
    for k in range(frame - model.history, frame):
        g = ds.frame(k)
        model.observe(g.positions, g.nt_sR[0], None, g.numbers, g.cell)

    def per_frame() -> float:
        model.predict(f.positions, f.numbers, f.cell, ds.grid)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model.predict(f.positions, f.numbers, f.cell, ds.grid)
        return (time.perf_counter() - t0) / repeats

    # the same frame with PyTorch's own convolution kernels (core/conv.py's oneDNN path off)
    with torch.backends.mkldnn.flags(enabled=False):
        module_path = per_frame()
    res = {"mean_mode_s": per_frame(), "mean_mode_s_module_path": module_path, "torch_threads": torch.get_num_threads()}
    if gpaw_steps:
        from ase import units
        from ase.md.verlet import VelocityVerlet

        from ase_ldm.data.gpaw_io import calculator_from_provenance

        atoms = ds.atoms(frame)
        atoms.calc = calculator_from_provenance(ds.attrs, ds.grid)
        atoms.get_forces()
        dyn = VelocityVerlet(atoms, ds.timestep_fs * units.fs)
        t0 = time.perf_counter()
        dyn.run(gpaw_steps)
        res["gpaw_md_step_s"] = (time.perf_counter() - t0) / gpaw_steps
        res["ratio"] = res["gpaw_md_step_s"] / res["mean_mode_s"]
        res["ratio_module_path"] = res["gpaw_md_step_s"] / module_path
    return res


def main() -> None:
    from ase_ldm.core.registry import load
    from ase_ldm.data import open_dataset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="the main dataset (test frames: its last 20 %%)")
    ap.add_argument("--sync", help="a synchronised model for the side-by-side errors")
    ap.add_argument("--unseen", action="append", default=[], help="recordings no model saw (e.g. 1200 K)")
    ap.add_argument("--floor", help="an independent AIMD trajectory of the same system")
    ap.add_argument("--transfer", action="append", default=[],
                    help="a recording of a larger cell with the same grid spacing (e.g. Li54): one-step and "
                         "atoms-only errors on all its frames, beside --sync's")
    ap.add_argument("--paper", help="the paper's model, rolled out beside (e.g. li16-800K-paper)")
    ap.add_argument("--paper-sampler-steps", type=int, default=20)
    ap.add_argument("--sections", default="recon,errors,spread,rollout,speed")
    ap.add_argument("--every", type=int, default=1, help="every n-th test frame for errors")
    ap.add_argument("--spread-every", type=int, default=5)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--symmetry-average", type=int, default=8,
                    help="also the atoms-only error of the mean averaged over this many cell operations")
    ap.add_argument("--rollout-steps", type=int, default=1000)
    ap.add_argument("--sampler-steps", type=int, default=10)
    ap.add_argument("--gpaw-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench-output/gldm")
    ap.add_argument("--json", default="bench-output/gldm.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sections = set(args.sections.split(","))
    model = load(args.model, device="cpu")
    res: dict = {"model": args.model, "threads": args.threads}
    path = Path(args.json)
    if path.exists():
        res = {**json.loads(path.read_text()), **res}
    with open_dataset(args.data) as ds:
        n = len(ds)
        start = n - int(round(0.2 * n))
        test = list(range(start, n))
        if "recon" in sections:
            res["recon"] = recon(model, ds, test, start)
            print("recon", res["recon"])
        if "errors" in sections:
            frames = test[:: args.every]
            e = {"frames": len(frames)}
            for h in (model.history, 0):
                errs = one_step(model, ds, frames, h)
                e[f"history_{h}"] = float(errs.mean())
            if args.symmetry_average > 1:
                avg = load(args.model, device="cpu", symmetry_average=args.symmetry_average)
                e[f"history_0_symmetry_average_{args.symmetry_average}"] = float(one_step(avg, ds, frames, 0).mean())
            if args.sync:
                sync = load(args.sync, device="cpu")
                for h in (sync.history, 0):
                    e[f"sync_history_{h}"] = float(one_step(sync, ds, frames, h).mean())
            res["errors"] = e
            print("errors", e)
        if "spread" in sections:
            out = {}
            for h in (0, model.history):
                out[f"test_h{h}"] = spread_skill(model, ds, test[:: args.spread_every], h, args.samples)
                print("spread test", h, {k: v for k, v in out[f"test_h{h}"].items() if not isinstance(v, list)})
            for u in args.unseen:
                with open_dataset(u) as du:
                    frames = list(range(model.history, len(du), max(1, args.spread_every // 2)))
                    for h in (0, model.history):
                        key = f"{Path(u).stem}_h{h}"
                        out[key] = spread_skill(model, du, frames, h, args.samples)
                        print("spread", key, {k: v for k, v in out[key].items() if not isinstance(v, list)})
            from scipy.stats import spearmanr

            for h in (0, model.history):  # all sets together: does the spread follow the error across them?
                parts = [v for k, v in out.items() if k.endswith(f"_h{h}")]
                sp = np.concatenate([v["spread"] for v in parts])
                er = np.concatenate([v["error"] for v in parts])
                out[f"pooled_h{h}"] = {"frames": len(sp), "spearman": float(spearmanr(sp, er).statistic),
                                       "spread_skill": float(sp.mean() / er.mean())}
                print("spread pooled", h, out[f"pooled_h{h}"])
            res["spread"] = out
        if "transfer" in sections:
            out = {}
            for path_t in args.transfer:
                with open_dataset(path_t) as dt:
                    frames = list(range(model.history, len(dt)))
                    e = {"frames": len(frames), "grid": list(dt.grid)}
                    for h in (model.history, 0):
                        e[f"history_{h}"] = float(one_step(model, dt, frames, h).mean())
                    if args.sync:
                        sync = load(args.sync, device="cpu")
                        for h in (sync.history, 0):
                            fr = [t for t in frames if t >= h]
                            e[f"sync_history_{h}"] = float(one_step(sync, dt, fr, h).mean())
                out[Path(path_t).stem] = e
                print("transfer", Path(path_t).stem, e)
            res["transfer"] = out
        if "speed" in sections:
            res["speed"] = speed(model, ds, start, 20, args.gpaw_steps)
            print("speed", res["speed"])
    if "short" in sections:
        res["short"] = short_rollouts(model, args.data, start, n, Path(args.out), args.sampler_steps, args.seed)
        print("short", {k: {kk: vv for kk, vv in v.items() if kk != "frame_change"} for k, v in res["short"].items()})
    if "rollout" in sections:
        res["rollout"] = rollout(args.model, args.data, start, n, args.rollout_steps, Path(args.out), args.floor,
                                 args.sampler_steps, args.seed)
        if args.paper:
            res["rollout"].update(rollout(args.paper, args.data, start, n, args.rollout_steps, Path(args.out), None,
                                          args.paper_sampler_steps, args.seed, label="paper"))
        print("rollout", {k: {kk: vv for kk, vv in v.items() if "dynamics" not in kk}
                          for k, v in res["rollout"].items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
