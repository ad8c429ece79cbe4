"""Which relaxation time should the shell-amplitude hold take? (issue: the latent diffusion
surrogate, the paper's statistics)

The amplitude hold (``ase_ldm.gldm.hold``) scales what a sampled rollout yields, shell by shell,
toward the training frames' mean amplitude; the chain itself does not change. Rollouts written
with ``--no-hold`` (the rollout gain on) can therefore be served through it afterwards, for
any relaxation time tau, up to float32 storage and the positivity clamp (which acts on the served
density as written rather than on the decoded one).

For each tau and rollout: histogram JSD, S(k) error overall and per band against the test
segment, the change per step, and the controlled shells' summed relative amplitude: its time
mean against the target and its frame-to-frame relative spread beside the AIMD's (a frozen
spectrum would show a spread near 0).

    for s in 0 1 2; do ase-ldm rollout li16-800K --init li16.h5 --frame 600 --steps 1000 \\
        --sampler-steps 10 --seed $s --no-hold -o nohold_$s.h5; done
    OMP_NUM_THREADS=1 python benchmarks/bench_hold.py li16-800K --data li16.h5 \\
        --rollouts nohold_0.h5 nohold_1.h5 nohold_2.h5 --taus 1 3 10 30 100
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def main() -> None:
    import torch
    from reserve import parser, serve, test_segment

    from ase_ldm.analysis.evaluate import evaluate
    from ase_ldm.core.fourier import band_mask
    from ase_ldm.core.registry import load
    from ase_ldm.data import open_dataset
    from ase_ldm.gldm.hold import AmplitudeHold

    ap = parser(__doc__, "--no-hold", "hold")
    ap.add_argument("--taus", type=float, nargs="+", default=[1, 3, 10, 30, 100])
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    model = load(args.model, device="cpu")
    gain, limit = model.meta["spectral_gain"], float(model.meta["band_limit"])
    target = float(np.sum(gain["rollout_fit"]["target"]))
    test = test_segment(args.data, args.start, args.stop, out)

    def scores(path: Path) -> dict:
        m = evaluate(path, test, None, plots=False)
        with open_dataset(path) as ds:
            probe = AmplitudeHold(gain, ds.cell(0), ds.grid, limit, 1.0)
            spectra = (torch.fft.rfftn(torch.as_tensor(ds.nt(t).sum(0), dtype=torch.float64))[None]
                       for t in range(len(ds)))
            a = np.array([float(probe.shell_amplitudes(X)[0][probe.controlled].sum()) for X in spectra])
        return {"jsd_histogram": m["jsd_histogram"], "sk_rel_error": m["sk_rel_error"],
                "sk_rel_error_bands": m["sk_rel_error_bands"],
                "change_per_step": m["dynamics_pred"]["frame_change_rel_l1_stats"],
                "amplitude_vs_target": float(a.mean() / target), "amplitude_rel_std": float(a.std() / a.mean())}

    res: dict = {"model": args.model, "aimd_test_segment": scores(test),
                 "as_written": {r: scores(Path(r)) for r in args.rollouts}, "taus": {}}
    print("AIMD", json.dumps(res["aimd_test_segment"]), flush=True)
    print("as written", json.dumps(res["as_written"]), flush=True)
    for tau in args.taus:
        row = {}
        for r in args.rollouts:
            with open_dataset(r) as ro:
                cell, grid = ro.cell(0), ro.grid
            hold = AmplitudeHold(gain, cell, grid, limit, tau)
            row[r] = scores(serve(r, out / f"{Path(r).stem}_tau{tau:g}.h5", band_mask(cell, grid, limit), hold))
        res["taus"][f"{tau:g}"] = row
        print(f"tau {tau:g}", json.dumps(row), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
