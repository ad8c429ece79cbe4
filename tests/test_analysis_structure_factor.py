"""|S(k)| against analytic fields, its invariances, and the curve error."""

from __future__ import annotations

import numpy as np
import pytest

from ase_ldm.analysis.structure_factor import StructureFactor, relative_curve_error, structure_factor

L, N = 7.27, 30


def grid_coords(n=N, cell=None):
    cell = np.eye(3) * L if cell is None else cell
    f = np.stack(np.meshgrid(*[np.arange(n) / n] * 3, indexing="ij"), axis=-1)
    return f @ cell


def periodic_gaussian(center, sigma, cell=None, n=N):
    """Normalised Gaussian (one electron) on the periodic grid, nearest images summed."""
    cell = np.eye(3) * L if cell is None else cell
    r = grid_coords(n, cell) - center
    frac = r @ np.linalg.inv(cell)
    out = np.zeros(r.shape[:3])
    for shift in np.ndindex(3, 3, 3):
        d = (frac - np.rint(frac) + np.array(shift) - 1) @ cell
        out += np.exp(-(d**2).sum(-1) / (2 * sigma**2))
    return out / (2 * np.pi * sigma**2) ** 1.5


def test_plane_wave_matches_analytic_amplitude():
    X = grid_coords()[..., 0]
    n = 0.05 + 0.01 * np.cos(2 * np.pi * 3 * X / L)
    sf = StructureFactor((N, N, N), np.eye(3) * L, shell_width=1e-3)  # shells of exactly one |k|
    s = sf(n)
    k0 = 2 * np.pi * 3 / L
    # The cosine puts amplitude 0.01/2 * V at +-k0; 30 grid vectors share |m|^2 = 9:
    # the 6 of type (3,0,0) and the 24 of type (2,2,1).
    i = np.argmin(np.abs(sf.k - k0))
    assert sf.k[i] == pytest.approx(k0)
    assert s[i] == pytest.approx(2 * 0.005 * L**3 / 30, rel=1e-10)
    s[i] = 0
    assert np.abs(s).max() < 1e-10  # nothing else, and k = 0 (the mean) removed
    assert sf.k.min() > 0


def test_gaussian_matches_its_fourier_transform():
    sigma = 0.35
    n = periodic_gaussian(np.array([1.0, 2.0, 3.0]), sigma)
    k, s = structure_factor(n, np.eye(3) * L, shell_width=1e-3)
    analytic = np.exp(-(k**2) * sigma**2 / 2)  # |FT| of a normalised Gaussian, electrons
    sel = k < 8  # well below the grid's Nyquist wave vector (aliasing)
    np.testing.assert_allclose(s[sel], analytic[sel], rtol=1e-6, atol=1e-9)


def test_translation_invariance():
    rng = np.random.default_rng(0)
    centers = rng.random((4, 3)) * L
    n = sum(periodic_gaussian(c, 0.5) for c in centers)
    sf = StructureFactor((N, N, N), np.eye(3) * L)
    rolled = np.roll(n, (5, -7, 11), axis=(0, 1, 2))  # exact grid translation
    np.testing.assert_allclose(sf(rolled), sf(n), rtol=1e-12, atol=1e-14)
    shift = np.array([0.123, 0.456, 0.789])  # off-grid translation of the analytic field
    moved = sum(periodic_gaussian(c + shift, 0.5) for c in centers)
    np.testing.assert_allclose(sf(moved)[sf.k < 6], sf(n)[sf.k < 6], rtol=1e-5, atol=1e-9)


def test_non_orthogonal_cell_and_units():
    cell = np.array([[6.0, 0, 0], [3.0, 5.196, 0], [0, 0, 7.0]])
    n = periodic_gaussian(np.array([2.0, 2.0, 2.0]), 0.5, cell=cell, n=24)
    k, s = structure_factor(n, cell, shell_width=1e-3)
    np.testing.assert_allclose(s[k < 5], np.exp(-(k[k < 5] ** 2) * 0.25 / 2), rtol=1e-5)


def test_wrong_grid_is_refused():
    sf = StructureFactor((N, N, N), np.eye(3) * L)
    with pytest.raises(ValueError, match="does not match the grid"):
        sf(np.ones((N, N, N - 1)))


def test_relative_curve_error():
    k = np.linspace(1, 9, 9)
    ref = np.ones(9)
    pred = ref.copy()
    pred[-1] = 1.3  # 30 % off in the highest shell only
    err = relative_curve_error(pred, ref, k)
    assert err["overall"] == pytest.approx(0.3 / 9)
    assert err["low"] == 0 and err["mid"] == 0
    assert err["high"] == pytest.approx(0.3 / 4)  # bands are thirds of [0, k_max]: k = 6..9 is "high"
    assert relative_curve_error(ref, ref, k)["overall"] == 0
