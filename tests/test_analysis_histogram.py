"""Log-density histograms and the Jensen-Shannon divergence."""

from __future__ import annotations

import numpy as np
import pytest

from ase_ldm.analysis.histogram import LogHistogram, jensen_shannon


def lognormal_field(seed, shape=(20, 20, 20)):
    return np.exp(np.random.default_rng(seed).normal(-3, 0.4, size=shape))


def test_jsd_zero_symmetric_bounded():
    rng = np.random.default_rng(1)
    p, q = rng.random(50), rng.random(50)
    assert jensen_shannon(p, p) == pytest.approx(0, abs=1e-15)
    assert jensen_shannon(p, q) == pytest.approx(jensen_shannon(q, p))
    assert 0 < jensen_shannon(p, q) < 1
    disjoint_a, disjoint_b = np.r_[np.ones(5), np.zeros(5)], np.r_[np.zeros(5), np.ones(5)]
    assert jensen_shannon(disjoint_a, disjoint_b) == pytest.approx(1.0)  # the bound, in bits
    # hand-made: P = (1, 0), Q = (1/2, 1/2): JSD = 1/2 KL(P||M) + 1/2 KL(Q||M), M = (3/4, 1/4)
    expect = 0.5 * np.log2(1 / 0.75) + 0.5 * (0.5 * np.log2(0.5 / 0.75) + 0.5 * np.log2(0.5 / 0.25))
    assert jensen_shannon([1, 0], [0.5, 0.5]) == pytest.approx(expect)
    with pytest.raises(ValueError, match="shape"):
        jensen_shannon(p, q[:-1])


def test_histogram_is_translation_invariant_and_counts():
    n = lognormal_field(0)
    a, b = LogHistogram(), LogHistogram()
    a.add(n)
    b.add(np.roll(n, (3, 4, 5), axis=(0, 1, 2)))
    np.testing.assert_array_equal(a.counts, b.counts)
    assert a.counts.sum() == n.size
    # the mode sits at log10(exp(-3)) = -1.30
    assert a.centers[np.argmax(np.convolve(a.counts, np.ones(25), "same"))] == pytest.approx(-3 / np.log(10), abs=0.05)


def test_histogram_counts_nonpositive_and_nan_apart():
    h = LogHistogram()
    h.add(np.array([0.1, -0.2, 0.0, np.nan, 1.0]))
    assert h.counts.sum() == 2 and h.nonpositive == 3


def test_jsd_grows_with_distribution_shift():
    ref = LogHistogram()
    ref.add(lognormal_field(0))
    values = []
    for scale in (1.0, 1.05, 1.5):
        h = LogHistogram()
        h.add(lognormal_field(1) * scale)
        values.append(jensen_shannon(h.counts, ref.counts))
    assert values[0] < values[1] < values[2]
