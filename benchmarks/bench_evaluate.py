"""Time `evaluate` on a 1000-frame, 30^3 trajectory against its persistence baseline.

The 1000 frames are the 750 reference Li16 frames followed by their first 250 again, on a
continuing time axis (real GPAW densities; the evaluation cost does not depend on their order).

    python benchmarks/bench_evaluate.py [--npz ../shared/data/li16_800K.npz] [--workdir bench-output]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ase_ldm.analysis.baselines import baseline_frames
from ase_ldm.analysis.evaluate import evaluate
from ase_ldm.data import frames_from_npz, open_dataset, write_frames


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--npz", default=str(Path(__file__).resolve().parents[2] / "shared/data/li16_800K.npz"))
    p.add_argument("--workdir", default="bench-output")
    p.add_argument("--frames", type=int, default=1000)
    args = p.parse_args()
    work = Path(args.workdir)
    work.mkdir(exist_ok=True)
    ref = work / f"li16_{args.frames}.h5"
    if not ref.exists():
        frames, attrs = frames_from_npz(args.npz)
        frames = list(frames)
        dt = attrs["timestep_fs"]
        seq = [frames[i % len(frames)] for i in range(args.frames)]
        seq = [f.__class__(**{**f.__dict__, "time_fs": i * dt}) for i, f in enumerate(seq)]
        write_frames(ref, seq, attrs)
    pred = work / f"persistence_{args.frames}.h5"
    if not pred.exists():
        with open_dataset(ref) as r:
            write_frames(pred, baseline_frames(r, "persistence"), {"timestep_fs": r.timestep_fs})
    t0 = time.perf_counter()
    m = evaluate(pred, ref, work / "report", plots=False)
    t_metrics = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate(pred, ref, work / "report", plots=True)
    t_all = time.perf_counter() - t0
    result = {"frames_pred": m["frames_pred"], "frames_ref": m["frames_ref"], "grid": [30, 30, 30],
              "seconds_metrics_only": round(t_metrics, 2), "seconds_with_plots": round(t_all, 2),
              "rel_l1_mean_persistence": m["rel_l1_mean"], "jsd_histogram": m["jsd_histogram"],
              "sk_rel_error": m["sk_rel_error"]}
    print(json.dumps(result, indent=1))
    (work / "bench_evaluate.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
