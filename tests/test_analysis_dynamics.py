"""Dynamics statistics (ase_ldm.analysis.dynamics)."""

from __future__ import annotations

import numpy as np
import pytest

from ase_ldm.analysis.dynamics import TrajectoryStatistics, linear_drift


def brute_autocorrelation(X, max_lag):
    dX = X - X.mean(0)
    C = np.array([np.mean(np.sum(dX[: len(X) - t] * dX[t:], axis=1)) for t in range(max_lag + 1)])
    return C / C[0]


@pytest.mark.parametrize("T,max_lag", [(30, 10), (12, 20), (5, 4)])
def test_streaming_autocorrelation_is_exact(T, max_lag):
    rng = np.random.default_rng(T)
    X = np.cumsum(rng.normal(size=(T, 64)), axis=0) + 5.0
    st = TrajectoryStatistics(dV=0.1, max_lag=max_lag)
    for t, x in enumerate(X):
        st.add(x, time_fs=2.0 * t)
    lags, rho = st.autocorrelation()
    assert len(lags) == min(max_lag, T - 1) + 1
    np.testing.assert_allclose(rho, brute_autocorrelation(X, lags[-1]), rtol=1e-9, atol=1e-12)
    s = st.summary()
    assert s["autocorrelation_lag_fs"][1] == 2.0
    np.testing.assert_allclose(s["electron_count"], X.sum(1) * 0.1)
    np.testing.assert_allclose(s["frame_change_rel_l1"], np.abs(np.diff(X, axis=0)).sum(1) / np.abs(X[:-1]).sum(1))
    assert s["electron_count_drift"] == pytest.approx((X[-1].sum() - X[0].sum()) * 0.1)


def test_drift_detects_a_trend_and_not_noise():
    t = np.arange(100.0)
    assert linear_drift(t, 1 + 0.001 * t)["relative_change"] == pytest.approx(0.099 / 1.0495, rel=1e-6)
    flat = linear_drift(t, 1 + 0.01 * np.sin(t))
    assert abs(flat["relative_change"]) < 0.01
