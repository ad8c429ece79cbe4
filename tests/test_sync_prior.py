"""The learned radial prior and the band limit of the synchronised model (ase_ldm.sync.prior)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import li_prior, random_sync_inputs, tiny_sync_net

from ase_ldm.sync.prior import fit_radial_prior

LI = li_prior()


def test_prior_integrates_to_the_atoms_charge_and_follows_them():
    cell = np.eye(3) * 4.0
    grid = (16, 16, 16)
    pos = np.array([[0.3, 0.7, 1.1], [2.2, 2.5, 3.0]])
    p = LI.density(pos, np.array([3, 3]), cell, grid)
    dV = 64.0 / 16**3
    assert p.sum() * dV == pytest.approx(2 * 1.15, rel=1e-10)
    # shifting the atoms by whole grid steps rolls the density exactly
    shifted = LI.density(pos + np.array([1, 0, 2]) * 4.0 / 16, np.array([3, 3]), cell, grid)
    np.testing.assert_allclose(shifted, np.roll(p, (1, 0, 2), axis=(0, 1, 2)), atol=1e-12)


def test_prior_refuses_unknown_species():
    with pytest.raises(ValueError, match="not \\[1\\]"):
        LI.density(np.zeros((1, 3)), np.array([1]), np.eye(3) * 4, (8, 8, 8))


def test_fit_recovers_a_superposition():
    """Densities made by a known prior are fitted back (to the accuracy of the knots)."""
    cell = np.eye(3) * 4.0
    grid = (12, 12, 12)
    rng = np.random.default_rng(0)
    frames = [(rng.random((2, 3)) * 4.0, None) for _ in range(6)]
    frames = [(pos, LI.density(pos, np.array([3, 3]), cell, grid)) for pos, _ in frames]
    fitted = fit_radial_prior(frames, np.array([3, 3]), cell, dg=0.5, smoothness=1e-8)
    test_pos = rng.random((2, 3)) * 4.0
    a = LI.density(test_pos, np.array([3, 3]), cell, grid)
    b = fitted.density(test_pos, np.array([3, 3]), cell, grid)
    assert np.abs(a - b).sum() / np.abs(a).sum() < 1e-4


def test_band_limit_of_gpaw_densities_and_projection(recorded_long):
    """GPAW's densities stop at a |G| below the grid's corners; the model's correction is projected there."""
    from ase_ldm.core.fourier import band_mask, reciprocal_grid
    from ase_ldm.data import open_dataset
    from ase_ldm.sync.prior import band_limit

    with open_dataset(recorded_long) as ds:
        cell, grid = ds.cell(0), ds.grid
        g_max = band_limit((ds.nt(i)[0] for i in range(len(ds))), cell)
    g = np.linalg.norm(reciprocal_grid(cell, grid), axis=-1)
    assert 0.3 * g.max() < g_max < g.max()
    net = tiny_sync_net()
    x = {k: v.double() if v.is_floating_point() else v for k, v in random_sync_inputs(grid, 2).items()}
    mask = torch.as_tensor(band_mask(cell, grid, g_max))
    nt, _ = net(**x, band=mask)
    w = net.coef[x["h"]].double()
    delta = nt - x["p"] - torch.einsum("bk,bk...->b...", w, x["r_hist"])
    spec = torch.fft.rfftn(delta, dim=(-3, -2, -1))[0]
    assert spec[~mask].abs().max() < 1e-12 * spec[mask].abs().max()
    assert spec[mask].abs().max() > 0


def test_trained_model_records_band_limit(trained_sync):
    meta = json.loads((trained_sync[0] / "model.json").read_text())
    assert 0 < meta["band_limit"] < 50
