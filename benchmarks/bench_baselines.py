"""One-step errors of the reference-only baselines on the held-out end of the Li16 data.

For each baseline, writes its predictions for the test frames (last 20 %) and evaluates them
against the reference with `ase_ldm.analysis.evaluate` (rel. L1/L2 of nt, JSD, S(k)).

    python benchmarks/bench_baselines.py [--npz ../shared/data/li16_800K.npz] [--workdir bench-output]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ase_ldm.analysis.baselines import baseline_frames
from ase_ldm.analysis.evaluate import evaluate
from ase_ldm.data import frames_from_npz, open_dataset, write_frames

KINDS = ("persistence", "linear", "quadratic", "sad", "sad-extrapolate")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--npz", default=str(Path(__file__).resolve().parents[2] / "shared/data/li16_800K.npz"))
    p.add_argument("--workdir", default="bench-output")
    p.add_argument("--kinds", nargs="*", default=list(KINDS))
    args = p.parse_args()
    work = Path(args.workdir)
    work.mkdir(exist_ok=True)
    ref = work / "li16_800K.h5"
    if not ref.exists():
        frames, attrs = frames_from_npz(args.npz)
        write_frames(ref, frames, attrs)
    with open_dataset(ref) as r:
        _, test = r.split(0.2)
        start, stop = test.start, test.stop
    results = {"reference": str(ref), "test_frames": [start, stop - 1]}
    for kind in args.kinds:
        out = work / f"baseline_{kind}.h5"
        t0 = time.perf_counter()
        with open_dataset(ref) as r:
            write_frames(out, baseline_frames(r, kind, start, stop), {"timestep_fs": r.timestep_fs}, overwrite=True)
        seconds = (time.perf_counter() - t0) / (stop - start)
        m = evaluate(out, ref, work / f"report_{kind}", plots=False)
        results[kind] = {"rel_l1_mean_percent": 100 * m["rel_l1_mean"], "rel_l2_mean_percent": 100 * m["rel_l2_mean"],
                         "abs_error_per_electron_mean": m["abs_error_per_electron_mean"],
                         "jsd_histogram": m["jsd_histogram"], "sk_rel_error": m["sk_rel_error"],
                         "seconds_per_frame": round(seconds, 4)}
        print(kind, json.dumps(results[kind]))
    (work / "bench_baselines.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
