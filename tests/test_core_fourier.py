"""Fourier helpers (ase_ldm.core.fourier): coarse grids and band-limited resampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ase_ldm.core.fourier import coarse_grid, fourier_interpolate, fourier_resample


def _plane_waves(N: tuple[int, int, int], modes: list[tuple[int, int, int, float]]) -> torch.Tensor:
    """A real sum of cosines cos(2 pi m.x + phase) sampled on grid N, float64."""
    x = np.stack(np.meshgrid(*[np.arange(n) / n for n in N], indexing="ij"), -1)
    f = 0.3 + sum(np.cos(2 * np.pi * x @ np.array(m[:3]) + m[3]) for m in modes)
    return torch.as_tensor(f)


MODES = [(1, 0, 0, 0.3), (2, -3, 1, 1.1), (0, 4, -2, -0.4), (-5, 1, 3, 2.0)]


def test_coarse_grid_rounds_up():
    assert coarse_grid((30, 45, 7), 2) == (15, 23, 4)
    assert coarse_grid((30, 30, 30), 1) == (30, 30, 30)


@pytest.mark.parametrize("N,M", [((30, 30, 30), (15, 15, 15)), ((30, 28, 31), (12, 13, 17)),
                                 ((12, 12, 12), (30, 24, 25))])
def test_resample_is_exact_for_band_limited_functions(N, M):
    """Plane waves that both grids resolve are carried over exactly, in both directions."""
    fine = _plane_waves(N, MODES)
    torch.testing.assert_close(fourier_resample(fine, M), _plane_waves(M, MODES))


def test_resample_drops_what_the_coarse_grid_cannot_hold():
    fine = _plane_waves((30, 30, 30), MODES + [(9, 0, 0, 0.0), (0, 0, 8, 0.5)])
    torch.testing.assert_close(fourier_resample(fine, (15, 15, 15)), _plane_waves((15, 15, 15), MODES))
    # down and back up: the projection onto the coarse band, a projection (idempotent)
    up = fourier_resample(fourier_resample(fine, (15, 15, 15)), (30, 30, 30))
    torch.testing.assert_close(up, _plane_waves((30, 30, 30), MODES))
    torch.testing.assert_close(fourier_resample(fourier_resample(up, (15, 15, 15)), (30, 30, 30)), up)


def test_interpolation_keeps_the_points_and_a_mask_removes_plane_waves():
    g = torch.Generator().manual_seed(1)
    coarse = torch.rand(2, 7, 7, 7, generator=g, dtype=torch.float64)
    for n in [c.numpy() for c in coarse] + [np.random.default_rng(2).random((6, 7, 8))]:  # odd and even grids
        np.testing.assert_allclose(fourier_interpolate(n, 2)[::2, ::2, ::2], n, atol=1e-12)
    mask = torch.zeros(14, 14, 8, dtype=torch.bool)
    mask[0, 0, 0] = True  # keep the mean only
    out = fourier_resample(coarse, (14, 14, 14), mask)
    torch.testing.assert_close(out, coarse.mean((1, 2, 3))[:, None, None, None].expand(-1, 14, 14, 14))


def test_resample_removes_what_a_coarse_grid_cannot_hold_not_by_subsampling():
    """Content above the coarse band does not reach the coarse grid (strided subsampling would alias it)."""
    low = _plane_waves((12, 12, 12), [(1, 2, 0, 0.2)])
    high = _plane_waves((12, 12, 12), [(4, 0, 0, 0.0)]) - 0.3  # cos(8 pi x): aliases to a constant on a 6-grid
    torch.testing.assert_close(fourier_resample(low + high, (6, 6, 6)), fourier_resample(low, (6, 6, 6)))


def test_resample_is_differentiable():
    x = torch.rand(10, 10, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y: fourier_resample(y, (5, 6, 7)), (x,), eps=1e-6, atol=1e-8,
                                    fast_mode=True)
