r"""Streaming statistics of a density trajectory: conservation and dynamics.

Long generated rollouts fail in recognisable ways: they drift (the mean or spread of the
density wanders), collapse (fluctuations die out) or freeze (frames stop changing). The
quantities here catch each, frame by frame, without holding the trajectory in memory:

* the electron count :math:`N(t) = \int n\, dV` and its drift;
* the spatial mean and standard deviation of :math:`n` per frame, and their drift;
* the frame-to-frame change :math:`\epsilon_{\ell_1}(n_{t}, n_{t-1})`;
* the temporal autocorrelation of the fluctuation :math:`\delta n = n - \bar n` (time mean):

  .. math:: \rho(\tau) = \frac{C(\tau)}{C(0)}, \qquad
     C(\tau) = \frac{1}{T-\tau} \sum_{t=0}^{T-\tau-1} \delta n_t \cdot \delta n_{t+\tau}

  computed exactly in one pass from the lagged products, the running total and the first and
  last ``max_lag`` frames.
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["TrajectoryStatistics", "linear_drift"]


def linear_drift(t: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Least-squares line through ``y(t)``: slope per unit of t, and the change over the span relative to the mean."""
    t = np.asarray(t, np.float64)
    y = np.asarray(y, np.float64)
    if len(t) < 2:
        return {"slope": 0.0, "relative_change": 0.0}
    slope = float(np.polyfit(t, y, 1)[0])
    mean = float(np.mean(y))
    return {"slope": slope, "relative_change": slope * float(t[-1] - t[0]) / mean if mean else float("nan")}


class TrajectoryStatistics:
    """Accumulate conservation and dynamics statistics frame by frame.

    Parameters
    ----------
    dV : float
        Voxel volume, Angstrom^3 (for electron counts).
    max_lag : int
        Largest lag (in frames) of the autocorrelation.
    """

    def __init__(self, dV: float, max_lag: int = 50) -> None:
        self.dV = float(dV)
        self.max_lag = int(max_lag)
        self.time_fs: list[float] = []
        self.electron_count: list[float] = []
        self.mean: list[float] = []
        self.std: list[float] = []
        self.change_l1: list[float] = []  # frame t vs t-1, for t >= 1
        self._total: np.ndarray | None = None
        self._first: list[np.ndarray] = []
        self._recent: deque[np.ndarray] = deque(maxlen=self.max_lag)
        self._lagged = np.zeros(self.max_lag + 1)

    def add(self, n: np.ndarray, time_fs: float) -> None:
        """Add one frame (density in electrons/Angstrom^3, any shape; spins summed by the caller)."""
        x = np.asarray(n, np.float64).ravel()
        self.time_fs.append(float(time_fs))
        self.electron_count.append(float(x.sum() * self.dV))
        self.mean.append(float(x.mean()))
        self.std.append(float(x.std()))
        if self._recent:
            prev = self._recent[-1]
            self.change_l1.append(float(np.abs(x - prev).sum() / np.abs(prev).sum()))
        self._lagged[0] += x @ x
        for lag, old in enumerate(reversed(self._recent), start=1):
            self._lagged[lag] += x @ old
        self._total = x.copy() if self._total is None else self._total + x
        if len(self._first) < self.max_lag:
            self._first.append(x)
        self._recent.append(x)

    def __len__(self) -> int:
        return len(self.time_fs)

    def autocorrelation(self) -> tuple[np.ndarray, np.ndarray]:
        """Normalised autocorrelation :math:`\\rho(\\tau)` for lags 0..min(max_lag, T-1) (frames)."""
        T = len(self)
        if T < 2:
            return np.zeros(1, int), np.ones(1)
        m = self._total / T
        mm = m @ m
        lags = np.arange(min(self.max_lag, T - 1) + 1)
        first = np.cumsum(np.array(self._first), axis=0)  # sums of the first tau frames: first[tau-1]
        last = np.cumsum(np.array(self._recent)[::-1], axis=0)  # sums of the last tau frames
        C = np.empty(len(lags))
        for tau in lags:
            A = self._total - (last[tau - 1] if tau else 0.0)  # x_0 .. x_{T-tau-1}
            B = self._total - (first[tau - 1] if tau else 0.0)  # x_tau .. x_{T-1}
            C[tau] = (self._lagged[tau] - m @ (A + B) + (T - tau) * mm) / (T - tau)
        return lags, C / C[0] if C[0] > 0 else np.ones_like(C)

    def summary(self) -> dict:
        """Everything as JSON-ready numbers and lists (units in the key names)."""
        t = np.array(self.time_fs)
        N = np.array(self.electron_count)
        ch = np.array(self.change_l1) if self.change_l1 else np.zeros(1)
        lags, rho = self.autocorrelation()
        dt = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
        below = np.nonzero(rho < np.exp(-1))[0]
        return {
            "frames": len(self),
            "time_fs": t.tolist(),
            "electron_count": N.tolist(),
            "electron_count_min": float(N.min()),
            "electron_count_max": float(N.max()),
            "electron_count_drift": float(N[-1] - N[0]) if len(N) else 0.0,
            "electron_count_drift_relative": float((N[-1] - N[0]) / N[0]) if len(N) else 0.0,
            "mean_e_per_A3": self.mean,
            "std_e_per_A3": self.std,
            "mean_drift": linear_drift(t, self.mean),
            "std_drift": linear_drift(t, self.std),
            "frame_change_rel_l1": list(self.change_l1),
            "frame_change_rel_l1_stats": {"mean": float(ch.mean()), "std": float(ch.std()),
                                          "min": float(ch.min()), "max": float(ch.max())},
            "autocorrelation_lag_fs": (lags * dt).tolist(),
            "autocorrelation": rho.tolist(),
            "autocorrelation_time_fs": float(below[0] * dt) if len(below) else None,
        }
