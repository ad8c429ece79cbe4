"""Pointwise errors (ase_ldm.analysis.errors)."""

from __future__ import annotations

import numpy as np
import pytest

from ase_ldm.analysis.errors import integrated_abs_error, pointwise_errors, rel_l1, rel_l2


def test_relative_errors_hand_made():
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.0, 2.5, 3.0, 3.0])
    assert rel_l1(pred, ref) == pytest.approx(1.5 / 10)
    assert rel_l2(pred, ref) == pytest.approx(np.sqrt(0.25 + 1.0) / np.sqrt(30))
    assert integrated_abs_error(pred, ref, dV=0.5) == pytest.approx(0.75)
    e = pointwise_errors(pred, ref, dV=0.5)
    assert e["abs_error_per_electron"] == pytest.approx(0.75 / 5.0)
    assert e["abs_error_per_electron"] == pytest.approx(e["rel_l1"])  # equal for a positive reference
    assert rel_l1(ref, ref) == 0 and rel_l2(ref, ref) == 0
    with pytest.raises(ValueError, match="different grids"):
        rel_l1(pred[:3], ref)
