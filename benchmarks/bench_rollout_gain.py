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

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    import torch
    from reserve import parser, serve, test_segment

    from ase_ldm.analysis.evaluate import evaluate
    from ase_ldm.core.fourier import band_mask, reciprocal_grid
    from ase_ldm.core.registry import model_dir
    from ase_ldm.data import open_dataset
    from ase_ldm.gldm.calibration import calibrate_rollout_spectrum

    ap = parser(__doc__, "--no-rollout-gain", "rollout_gain")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[1.0, 0.05, 0.02])
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    test = test_segment(args.data, args.start, args.stop, out)

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
                path = serve(r, out / f"{Path(r).stem}_spread{threshold}.h5", extra)
                row["rollouts"][r] = scores(path)
            res["gains"][str(threshold)] = row
            print(threshold, json.dumps(row), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
