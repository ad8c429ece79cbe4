"""Matplotlib figures for density trajectories (Agg backend; files only, no windows)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

__all__ = ["plot_slices"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_slices(
    path: str | os.PathLike,
    fields: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    axis: int = 2,
    index: int | None = None,
    extent_A: Sequence[float] | None = None,
    shared_scale: Sequence[bool] | None = None,
    suptitle: str | None = None,
) -> None:
    """Save a row of 2D slices through 3D fields (e.g. prediction, reference, difference).

    Parameters
    ----------
    fields : sequence of (N1, N2, N3) arrays
        Densities in electrons/Angstrom^3.
    axis, index : int
        The slice is ``field.take(index, axis)``; ``index`` defaults to the middle plane.
    extent_A : (width, height), optional
        Size of the slice in Angstrom, for the axes labels.
    shared_scale : sequence of bool, optional
        Fields marked True share one colour scale (default: all but a last 'difference').
    """
    plt = _pyplot()
    n = len(fields)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), squeeze=False)
    idx = fields[0].shape[axis] // 2 if index is None else index
    planes = [np.take(f, idx, axis=axis) for f in fields]
    shared = list(shared_scale) if shared_scale is not None else [True] * n
    vals = [p for p, s in zip(planes, shared) if s]
    vmin, vmax = (min(p.min() for p in vals), max(p.max() for p in vals)) if vals else (None, None)
    ext = None if extent_A is None else [0, extent_A[0], 0, extent_A[1]]
    for ax, plane, title, s in zip(axes[0], planes, titles, shared):
        if s:
            im = ax.imshow(plane.T, origin="lower", extent=ext, vmin=vmin, vmax=vmax, cmap="viridis")
        else:
            m = float(np.abs(plane).max()) or 1.0
            im = ax.imshow(plane.T, origin="lower", extent=ext, vmin=-m, vmax=m, cmap="RdBu_r")
        ax.set_title(title)
        ax.set_xlabel("Angstrom" if ext else "grid index")
        fig.colorbar(im, ax=ax, shrink=0.85, label="e/Angstrom$^3$")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _save(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def plot_histograms(path, centers: np.ndarray, curves: dict[str, np.ndarray], title: str = "") -> None:
    """Overlay of log10-density histograms (probability per 0.01-decade bin)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    nz = np.nonzero(sum(curves.values()))[0]
    lo, hi = (nz.min(), nz.max() + 1) if len(nz) else (0, len(centers))
    for label, p in curves.items():
        ax.plot(10 ** centers[lo:hi], p[lo:hi], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("n (e/Angstrom$^3$)")
    ax.set_ylabel("probability per bin")
    ax.set_title(title)
    ax.legend()
    _save(fig, path)


def plot_structure_factor(path, k: np.ndarray, curves: dict[str, np.ndarray], title: str = "") -> None:
    """Overlay of shell-averaged |S(k)| curves on a log scale."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, s in curves.items():
        ax.semilogy(k, s, label=label)
    ax.set_xlabel("k (1/Angstrom)")
    ax.set_ylabel("|S(k)| (electrons)")
    ax.set_title(title)
    ax.legend()
    _save(fig, path)


def plot_time_series(path, panels: list[tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]],
                     xlabel: str = "time (fs)") -> None:
    """Stacked panels of curves y(t): ``[(ylabel, {label: (t, y)}), ...]``."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(6, 2.6 * len(panels)), squeeze=False, sharex=True)
    for ax, (ylabel, curves) in zip(axes[:, 0], panels):
        for label, (t, y) in curves.items():
            ax.plot(t, y, label=label, marker="." if len(t) < 60 else None)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel(xlabel)
    _save(fig, path)


def write_plots(out, metrics: dict, pred, ref, slice_frames: Sequence[int], pairs: dict[int, int]) -> list[str]:
    """The evaluation report's PNGs in ``out``; returns their file names."""
    from pathlib import Path

    out = Path(out)
    names = []
    centers = np.array(metrics["histogram_log10_centers"])
    plot_histograms(out / "histogram.png", centers,
                    {"prediction": np.array(metrics["histogram_pred"]),
                     "reference": np.array(metrics["histogram_ref"])},
                    title=f"JSD = {metrics['jsd_histogram']:.3g} bits")
    plot_structure_factor(out / "structure_factor.png", np.array(metrics["sk_k"]),
                          {"prediction": np.array(metrics["sk_pred"]), "reference": np.array(metrics["sk_ref"])},
                          title=f"relative error {metrics['sk_rel_error']:.3g}")
    names += ["histogram.png", "structure_factor.png"]
    dp, dr = metrics["dynamics_pred"], metrics["dynamics_ref"]
    panels = [("electrons (integral of nt)",
               {"prediction": (np.array(dp["time_fs"]), np.array(dp["electron_count"])),
                "reference": (np.array(dr["time_fs"]), np.array(dr["electron_count"]))}),
              ("frame-to-frame rel. L1",
               {"prediction": (np.array(dp["time_fs"][1:]), np.array(dp["frame_change_rel_l1"])),
                "reference": (np.array(dr["time_fs"][1:]), np.array(dr["frame_change_rel_l1"]))})]
    if metrics["computed"]["pointwise"]:
        panels.insert(0, ("error vs reference", {
            "rel. L1": (np.array(metrics["pointwise_time_fs"]), np.array(metrics["rel_l1_per_frame"])),
            "rel. L2": (np.array(metrics["pointwise_time_fs"]), np.array(metrics["rel_l2_per_frame"]))}))
    plot_time_series(out / "errors_vs_time.png", panels)
    plot_time_series(out / "autocorrelation.png", [("autocorrelation", {
        "prediction": (np.array(dp["autocorrelation_lag_fs"]), np.array(dp["autocorrelation"])),
        "reference": (np.array(dr["autocorrelation_lag_fs"]), np.array(dr["autocorrelation"]))})], xlabel="lag (fs)")
    names += ["errors_vs_time.png", "autocorrelation.png"]
    L = np.linalg.norm(ref.cell(0), axis=1)
    for i in slice_frames:
        i = i % len(pred)
        p = pred.nt(i).sum(0)
        j = pairs.get(i, min(i, len(ref) - 1))
        r = ref.nt(j).sum(0)
        name = f"slices_frame{i}.png"
        plot_slices(out / name, [p, r, p - r], ["prediction", "reference", "difference"],
                    extent_A=(L[0], L[1]), shared_scale=[True, True, False],
                    suptitle=f"prediction frame {i} (t = {pred.time_fs[i]:.1f} fs) vs reference frame {j}"
                    + ("" if i in pairs else " (not corresponding)"))
        names.append(name)
    return names
