"""Which shells should the rollout gain correct? (issue: the latent diffusion surrogate, the
paper's statistics)

The rollout gain (``ase_ldm.gldm.spectrum.fit_rollout_gain``) multiplies only what a sampled
rollout yields; the chain re-encodes the density of the decoder's sample gain, so its latents do
not change. Rollouts written without it (``--no-rollout-gain``) can therefore be served through any
rollout gain afterwards. This gives the densities the model would have served with it, up to
float32 storage and the positivity clamp, which acts on the filtered density as written rather than
on the decoded one.

For each stationarity threshold (``max_block_spread``), the gain is fitted on a copy of the model
(``calibrate_rollout_spectrum``: 4 chains of 250 steps from training frames), applied to each
given rollout, and the result evaluated against the test segment (histogram JSD, S(k) error
overall and per band), beside the rollout as written.

    for s in 0 1 2; do ase-ldm rollout li16-800K --init li16.h5 --frame 600 --steps 1000 \\
        --sampler-steps 10 --seed $s --no-rollout-gain -o plain_$s.h5; done
    OMP_NUM_THREADS=1 python benchmarks/bench_rollout_gain.py li16-800K --data li16.h5 \\
        --rollouts plain_0.h5 plain_1.h5 plain_2.h5 --thresholds 1.0 0.05 0.02
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    import torch

    from ase_ldm.analysis.evaluate import evaluate
    from ase_ldm.core.fourier import band_mask, reciprocal_grid
    from ase_ldm.core.registry import model_dir
    from ase_ldm.data import Frame, open_dataset, write_frames
    from ase_ldm.gldm.calibration import calibrate_rollout_spectrum
    from ase_ldm.gldm.model import served_density

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True, help="the dataset the model trained on")
    ap.add_argument("--rollouts", nargs="+", required=True, help="rollouts written with --no-rollout-gain")
    ap.add_argument("--start", type=int, default=600, help="first test frame (the rollouts' start)")
    ap.add_argument("--stop", type=int, default=750)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[1.0, 0.05, 0.02])
    ap.add_argument("--out", default="bench-output/rollout_gain")
    ap.add_argument("--json", default="bench-output/rollout_gain.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    test = out / "test_segment.h5"
    with open_dataset(args.data) as ds:
        write_frames(test, (ds.frame(i) for i in range(args.start, args.stop)), {"timestep_fs": ds.timestep_fs})

    def scores(path: Path) -> dict:
        m = evaluate(path, test, None, plots=False)
        return {"jsd_histogram": m["jsd_histogram"], "sk_rel_error": m["sk_rel_error"],
                "sk_rel_error_bands": m["sk_rel_error_bands"]}

    res: dict = {"model": args.model, "as_written": {r: scores(Path(r)) for r in args.rollouts}, "gains": {}}
    print("as written", json.dumps(res["as_written"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "model"
        shutil.copytree(model_dir(args.model), copy)
        for threshold in args.thresholds:
            gain = calibrate_rollout_spectrum(copy, args.data, max_block_spread=threshold)["spectral_gain"]
            row = {"from_shell": gain["rollout_fit"]["from_shell"], "knots": gain["rollout"], "rollouts": {}}
            meta = json.loads((copy / "model.json").read_text())
            for r in args.rollouts:
                with open_dataset(r) as ro:
                    cell, grid = ro.cell(0), ro.grid
                    # the rollout knots inside the band; outside it the written density is kept as it is
                    kabs = np.linalg.norm(reciprocal_grid(cell, grid), axis=-1)
                    knots = np.asarray(gain["rollout"])
                    extra = np.where(band_mask(cell, grid, meta["band_limit"]),
                                     np.interp(kabs / gain["shell_width"], np.arange(len(knots)), knots), 1.0)

                    weights = torch.as_tensor(extra)
                    dV = abs(float(np.linalg.det(cell))) / float(np.prod(grid))

                    def served(ro=ro, weights=weights, dV=dV):
                        for t in range(len(ro)):
                            f = ro.frame(t)
                            x = torch.as_tensor(f.nt_sR.sum(0)[None], dtype=torch.float64)
                            y = served_density(x, weights, float(x.sum()) * dV, dV)[0].numpy()
                            yield Frame(nt_sR=y[None].astype(np.float32), positions=f.positions, cell=f.cell,
                                        numbers=f.numbers, time_fs=f.time_fs)

                    path = out / f"{Path(r).stem}_spread{threshold}.h5"
                    path.unlink(missing_ok=True)
                    write_frames(path, served(), {"timestep_fs": ro.timestep_fs})
                row["rollouts"][r] = scores(path)
            res["gains"][str(threshold)] = row
            print(threshold, json.dumps(row), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
