r"""Density histograms in log space and the Jensen-Shannon divergence between them.

The paper (Figure 4, left) compares the distributions of density values of generated and
reference trajectories; GPAW pseudo-densities are close to log-normal, so values are binned in
:math:`\log_{10} n` (n in electrons/Angstrom^3) on fixed, shared bins: every trajectory is
histogrammed on the same edges and can be streamed frame by frame.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInput

__all__ = ["LogHistogram", "jensen_shannon"]


class LogHistogram:
    r"""A streaming histogram of :math:`\log_{10} n` on fixed bins.

    Parameters
    ----------
    log10_range : (lo, hi)
        Range of :math:`\log_{10}(n / \text{e/Angstrom}^3)`; values outside are counted in the
        end bins. Default (-6, 2) covers GPAW pseudo-densities of condensed matter.
    bins : int
        Number of bins (default 800: 0.01 decade each).

    Attributes
    ----------
    counts : (bins,) int64
        Counts of positive values per bin.
    nonpositive : int
        Values <= 0 (or NaN), which have no logarithm; a generated density may produce them.
    """

    def __init__(self, log10_range: tuple[float, float] = (-6.0, 2.0), bins: int = 800) -> None:
        self.edges = np.linspace(log10_range[0], log10_range[1], bins + 1)
        self.counts = np.zeros(bins, np.int64)
        self.nonpositive = 0

    @property
    def centers(self) -> np.ndarray:
        """Bin centres in :math:`\\log_{10} n`."""
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    def add(self, n: np.ndarray) -> None:
        """Count the values of one field (any shape), electrons/Angstrom^3."""
        v = np.asarray(n, np.float64).ravel()
        good = v > 0  # False for NaN too
        self.nonpositive += int(v.size - good.sum())
        lo, hi = self.edges[0], self.edges[-1]
        idx = ((np.log10(v[good]) - lo) / (hi - lo) * (len(self.edges) - 1)).astype(np.int64)
        np.clip(idx, 0, len(self.counts) - 1, out=idx)
        self.counts += np.bincount(idx, minlength=len(self.counts))

    def probabilities(self) -> np.ndarray:
        """Counts normalised to sum to 1 (a probability mass per bin)."""
        total = self.counts.sum()
        return self.counts / total if total else self.counts.astype(float)


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    r"""Jensen-Shannon divergence of two histograms, in bits (base-2 logs).

    .. math::
        \mathrm{JSD}(P, Q) = \tfrac12 \mathrm{KL}(P \| M) + \tfrac12 \mathrm{KL}(Q \| M),
        \quad M = \tfrac12 (P + Q)

    Zero for identical distributions, symmetric, and bounded by 1 (disjoint supports).
    ``p`` and ``q`` are normalised here, so raw counts may be passed.
    """
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    if p.shape != q.shape:
        raise InvalidInput(f"histograms differ in shape: {p.shape} vs {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0:
        raise InvalidInput("a histogram is empty")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        s = a > 0
        return float(np.sum(a[s] * np.log2(a[s] / m[s])))

    return max(0.0, 0.5 * kl(p) + 0.5 * kl(q))
