"""Compare a predicted density trajectory with a reference one, streaming frame by frame.

Statistical metrics (histogram JSD, structure factor, conservation, dynamics) always apply,
whatever the two lengths. Pointwise metrics apply only to frames that correspond: same time
(within 1e-6 fs) and the same atoms at the same positions (within 1e-3 Angstrom). The result
says which were computed and for how many frames.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.atomic import atomic_output, unwritable
from ..data.schema import DatasetError
from ..data.store import DensityDataset, open_dataset
from .dynamics import TrajectoryStatistics
from .errors import pointwise_errors
from .histogram import LogHistogram, jensen_shannon
from .structure_factor import StructureFactor, relative_curve_error

__all__ = ["TrajectorySummary", "summarize", "corresponding_frames", "evaluate", "UNITS"]

BLOCK = 32  # frames read per HDF5 call
POSITION_TOLERANCE = 1e-3  # Angstrom
TIME_TOLERANCE = 1e-6  # fs

#: Units of the metrics written to metrics.json.
UNITS = {
    "jsd_histogram": "bits (base-2 Jensen-Shannon divergence of log10-density histograms, 0..1)",
    "sk_k": "1/Angstrom",
    "sk_pred": "electrons (|S(k)|, shell-averaged, trajectory mean)",
    "sk_ref": "electrons",
    "sk_rel_error": "dimensionless, sum_k |dS| / sum_k S_ref",
    "sk_rel_error_bands": "dimensionless, per third of the k range",
    "rel_l1_mean": "dimensionless (fraction, not %)",
    "rel_l2_mean": "dimensionless",
    "abs_error_e_mean": "electrons (integral of |dn| per frame)",
    "abs_error_per_electron_mean": "dimensionless",
    "electron_count": "electrons (integral of nt per frame)",
    "electron_count_drift": "electrons (last frame minus first)",
    "frame_change_rel_l1": "dimensionless, rel. L1 between consecutive frames",
    "autocorrelation": "dimensionless, normalised; lags in fs",
    "mean_e_per_A3": "electrons/Angstrom^3",
    "std_e_per_A3": "electrons/Angstrom^3",
}


class TrajectorySummary:
    """Streaming statistics of one trajectory: log histogram, mean |S(k)|, dynamics."""

    def __init__(self, ds: DensityDataset, max_lag: int = 50, hist: LogHistogram | None = None) -> None:
        self.sf = StructureFactor(ds.grid, ds.cell(0))
        self.hist = hist or LogHistogram()
        self.stats = TrajectoryStatistics(ds.volume_element(0), max_lag=max_lag)
        self.sk_sum = np.zeros_like(self.sf.k)
        self.frames = 0

    def add(self, n_R: np.ndarray, time_fs: float) -> None:
        self.hist.add(n_R)
        self.sk_sum += self.sf(n_R)
        self.stats.add(n_R, time_fs)
        self.frames += 1

    @property
    def sk_mean(self) -> np.ndarray:
        return self.sk_sum / max(self.frames, 1)


def _blocks(ds: DensityDataset, start: int = 0, stop: int | None = None):
    """Yield (index, spin-summed density, time) per frame, BLOCK frames per read; refuse non-finite frames."""
    stop = len(ds) if stop is None else stop
    t = ds.time_fs
    for b0 in range(start, stop, BLOCK):
        b1 = min(b0 + BLOCK, stop)
        nt = ds.nt_range(b0, b1)
        _check_finite(ds, nt, b0)
        for i in range(b1 - b0):
            yield b0 + i, nt[i].sum(0, dtype=np.float64), float(t[b0 + i])


def _check_finite(ds: DensityDataset, nt: np.ndarray, b0: int) -> None:
    """Raise a :class:`DatasetError` naming the first frame of the block ``nt`` (frames b0, ...) with NaN or inf."""
    if np.isfinite(nt).all():
        return
    bad = int(np.argmin(np.isfinite(nt).reshape(len(nt), -1).all(axis=1)))
    raise DatasetError(f"{ds.path}: frame {b0 + bad} holds NaN or infinite density values, so every metric would "
                       "be NaN; re-create that dataset (in a prediction it means the model or rollout diverged)")


def summarize(ds: DensityDataset, max_lag: int = 50, progress: Any = None) -> TrajectorySummary:
    """Stream every frame of ``ds`` into a :class:`TrajectorySummary` (spins summed)."""
    summary = TrajectorySummary(ds, max_lag)
    for _, n_R, t in _blocks(ds):
        summary.add(n_R, t)
        if progress is not None:
            progress.update(1)
    return summary


def corresponding_frames(pred: DensityDataset, ref: DensityDataset) -> list[tuple[int, int]]:
    """Pairs (i_pred, i_ref) with the same time and the same atoms at the same positions."""
    if pred.natoms != ref.natoms or np.any(pred.numbers != ref.numbers) or pred.grid != ref.grid:
        return []
    t_ref = ref.time_fs
    pairs = []
    pos_pred, pos_ref = pred.array("positions"), ref.array("positions")
    for i, t in enumerate(pred.time_fs):
        j = int(np.searchsorted(t_ref, t - TIME_TOLERANCE))
        if j < len(t_ref) and abs(t_ref[j] - t) <= TIME_TOLERANCE:
            if np.abs(pos_pred[i] - pos_ref[j]).max() <= POSITION_TOLERANCE:
                pairs.append((i, j))
    return pairs


def _check_comparable(pred: DensityDataset, ref: DensityDataset) -> None:
    if pred.grid != ref.grid:
        raise DatasetError(f"prediction grid {pred.grid} differs from the reference grid {ref.grid}; "
                           "S(k) and histograms are compared on one grid")
    if np.abs(pred.cell(0) - ref.cell(0)).max() > 1e-6:
        raise DatasetError("prediction and reference cells differ; compare trajectories of the same cell")


def evaluate(
    pred_path: str | os.PathLike,
    ref_path: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    slice_frames: list[int] | None = None,
    max_lag: int = 50,
    plots: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Compute every metric of PRED against REF; with ``out_dir``, write metrics.json and PNG plots.

    Parameters
    ----------
    slice_frames : list of int, optional
        Prediction frame indices to show as side-by-side slices (default: first and last
        corresponding frame, or first and last frame).
    max_lag : int
        Largest autocorrelation lag, frames.

    Returns
    -------
    dict
        The metrics, as written to ``metrics.json``.
    """
    with open_dataset(pred_path) as pred, open_dataset(ref_path) as ref:
        _check_comparable(pred, ref)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pred) + len(ref), desc="evaluate", unit="frame")
        s_pred = summarize(pred, max_lag, bar)
        s_ref = summarize(ref, max_lag, bar)
        if bar is not None:
            bar.close()
        pairs = corresponding_frames(pred, ref)
        pointwise: list[dict[str, float]] = []
        dV = ref.volume_element(0)
        for i, j in pairs:
            pointwise.append(pointwise_errors(pred.nt(i).sum(0), ref.nt(j).sum(0), dV))

        k = s_ref.sf.k
        sk_err = relative_curve_error(s_pred.sk_mean, s_ref.sk_mean, k)
        dyn_pred, dyn_ref = s_pred.stats.summary(), s_ref.stats.summary()
        metrics: dict[str, Any] = {
            "prediction": str(pred_path),
            "reference": str(ref_path),
            "frames_pred": len(pred),
            "frames_ref": len(ref),
            "computed": {"statistical": True, "pointwise": bool(pairs),
                         "pointwise_frames": len(pairs),
                         "pointwise_note": "frames with equal time and atom positions" if pairs else
                         "no frames correspond (different times or atoms): pointwise metrics skipped"},
            "jsd_histogram": jensen_shannon(s_pred.hist.counts, s_ref.hist.counts),
            "histogram_log10_centers": s_ref.hist.centers.tolist(),
            "histogram_pred": s_pred.hist.probabilities().tolist(),
            "histogram_ref": s_ref.hist.probabilities().tolist(),
            "nonpositive_values_pred": s_pred.hist.nonpositive,
            "sk_k": k.tolist(),
            "sk_pred": s_pred.sk_mean.tolist(),
            "sk_ref": s_ref.sk_mean.tolist(),
            "sk_rel_error": sk_err["overall"],
            "sk_rel_error_bands": {b: sk_err[b] for b in ("low", "mid", "high")},
            "electron_count_drift": dyn_pred["electron_count_drift"],
            "electron_count_range_pred": [dyn_pred["electron_count_min"], dyn_pred["electron_count_max"]],
            "electron_count_range_ref": [dyn_ref["electron_count_min"], dyn_ref["electron_count_max"]],
            "dynamics_pred": dyn_pred,
            "dynamics_ref": dyn_ref,
            "units": UNITS,
        }
        if pairs:
            for key in ("rel_l1", "rel_l2", "abs_error_e", "abs_error_per_electron"):
                vals = np.array([p[key] for p in pointwise])
                metrics[f"{key}_mean"] = float(vals.mean())
                metrics[f"{key}_max"] = float(vals.max())
            metrics["pointwise_time_fs"] = [float(pred.time_fs[i]) for i, _ in pairs]
            metrics["rel_l1_per_frame"] = [p["rel_l1"] for p in pointwise]
            metrics["rel_l2_per_frame"] = [p["rel_l2"] for p in pointwise]

        if out_dir is not None:
            out = Path(out_dir)
            try:
                out.mkdir(parents=True, exist_ok=True)
                with atomic_output(out / "metrics.json", overwrite=True) as tmp:
                    tmp.write_text(json.dumps(metrics, indent=1))
            except OSError as err:
                raise unwritable(out / "metrics.json", err) from None
            if plots:
                from .plots import write_plots

                if slice_frames is None:
                    slice_frames = [pairs[0][0], pairs[-1][0]] if pairs else [0, len(pred) - 1]
                write_plots(out, metrics, pred, ref, slice_frames, dict(pairs))
    return metrics
