"""Compare a predicted density trajectory with a reference: metrics.json plus PNG plots.

Statistical metrics (log-density histogram JSD, structure factor |S(k)|, electron count,
frame-to-frame change, autocorrelation, mean/variance drift) always apply; pointwise errors
(relative L1/L2, integral of |dn|) only where frames correspond (same time and atoms).

Example: ase-ldm evaluate rollout.h5 --reference li16.h5 -o report/
"""

from __future__ import annotations

import argparse


class CLICommand:
    __doc__ = __doc__

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("prediction", help="predicted trajectory (dataset)")
        p.add_argument("--reference", required=True, help="reference trajectory (dataset)")
        p.add_argument("-o", "--output", required=True, help="output folder (metrics.json, *.png)")
        p.add_argument("--frames", type=int, nargs="*", help="prediction frames to show as slices")
        p.add_argument("--max-lag", type=int, default=50, help="largest autocorrelation lag in frames")
        p.add_argument("--no-plots", action="store_true", help="write metrics.json only")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..analysis.evaluate import evaluate

        m = evaluate(args.prediction, args.reference, args.output, slice_frames=args.frames,
                     max_lag=args.max_lag, plots=not args.no_plots, progress=True)
        print(f"histogram JSD      {m['jsd_histogram']:.4g} bits")
        print(f"S(k) rel. error    {m['sk_rel_error']:.4g}  (low {m['sk_rel_error_bands']['low']:.3g}, "
              f"mid {m['sk_rel_error_bands']['mid']:.3g}, high {m['sk_rel_error_bands']['high']:.3g})")
        if m["computed"]["pointwise"]:
            print(f"rel. L1 / L2       {m['rel_l1_mean']:.4g} / {m['rel_l2_mean']:.4g}  "
                  f"(mean over {m['computed']['pointwise_frames']} corresponding frames)")
        else:
            print("pointwise          skipped: " + m["computed"]["pointwise_note"])
        print(f"electron count     {m['electron_count_range_pred'][0]:.5f} .. {m['electron_count_range_pred'][1]:.5f}"
              f"  (reference {m['electron_count_range_ref'][0]:.5f} .. {m['electron_count_range_ref'][1]:.5f}),"
              f" drift {m['electron_count_drift']:+.2e}")
        print(f"wrote {args.output}/metrics.json and plots")
        return 0
