"""Serving the synchronised model (ase_ldm.sync.predictor): checks, predictions, symmetry averaging."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import li_prior, tiny_sync_net

from ase_ldm.data import open_dataset

LI = li_prior()


def test_predictor_checks_and_predicts(trained_sync, synthetic_long):
    from ase_ldm.data import open_dataset
    from ase_ldm.errors import CheckpointError
    from ase_ldm.ldm.surrogate import DensitySurrogate
    from ase_ldm.sync.predictor import SyncPredictor

    run, _ = trained_sync
    pred = SyncPredictor.load(run, device="cpu")
    with pytest.raises(CheckpointError, match="not a DensitySurrogate"):
        DensitySurrogate.load(run)
    with open_dataset(synthetic_long) as ds:
        f = [ds.frame(i) for i in range(4)]
        D = [np.stack([d[0] for d in ds.D_asii(i)]) for i in range(4)]
        grid, cell, Z = ds.grid, ds.cell(0), ds.numbers
    with pytest.raises(ValueError, match="grid spacing"):
        pred.predict(f[0].positions, Z, cell, tuple(2 * n for n in grid))
    with pytest.raises(ValueError, match="atomic numbers"):
        pred.predict(f[0].positions, np.array([3, 11]), cell, grid)
    sheared = np.array(cell, float)
    sheared[1] += 0.2 * sheared[0]  # other angles, same grid: the convolutions would see other neighbours
    with pytest.raises(ValueError, match="cell vectors point other ways"):
        pred.predict(f[0].positions, Z, sheared, grid)
    c, sn = np.cos(0.5), np.sin(0.5)  # the training cell's shape, rotated: D would be in other axes
    rotated = np.asarray(cell, float) @ np.array([[c, sn, 0], [-sn, c, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="cell vectors point other ways"):
        pred.predict(f[0].positions, Z, rotated, grid)
    with pytest.raises(ValueError, match="finite"):
        pred.observe(f[0].positions, np.full(grid, np.nan), D[0], Z, cell)
    cold, D_cold = pred.predict(f[3].positions, Z, cell, grid)
    for i in range(3):
        pred.observe(f[i].positions, f[i].nt_sR[0], D[i], Z, cell)
    warm, D_warm = pred.predict(f[3].positions, Z, cell, grid)
    ref = f[3].nt_sR[0]
    assert warm.shape == grid and np.shape(D_warm) == (2, 5, 5)
    assert np.all(warm > 0)
    # with history the guess is far closer than from the atoms alone
    assert np.abs(warm - ref).sum() < 0.5 * np.abs(cold - ref).sum()
    np.testing.assert_allclose(D_warm, np.swapaxes(np.stack(D_warm), 1, 2))


def test_symmetry_average_makes_the_predictor_equivariant():
    """Averaged over all 48 operations of a cubic cell, a prediction from the atoms alone turns
    with the atoms (density on the grid, D with its p block); the network alone does not."""
    from ase_ldm.sync.predictor import SyncPredictor
    from ase_ldm.sync.symmetry import SymmetryOp, transform_D

    cell, grid = np.eye(3) * 4.0, (12, 12, 12)
    rng = np.random.default_rng(3)
    pos, Z = rng.random((3, 3)) * 4.0, np.array([3, 3, 3])
    op = SymmetryOp((1, 2, 0), (-1, 1, -1))
    meta = {"grid_spacing": [4.0 / 12] * 3, "l_i": [0, 1, 1, 1, 0], "name": "random"}

    def mismatch(k):
        pred = SyncPredictor(tiny_sync_net().float(), LI, meta, torch.device("cpu"), symmetry_average=k)
        nt, D = pred.predict(pos, Z, cell, grid)
        nt2, D2 = pred.predict((pos @ op.R.T) % 4.0, Z, cell, grid)
        expect = op.grid(torch.as_tensor(nt)).numpy()
        return (np.abs(nt2 - expect).sum() / np.abs(expect).sum(),
                np.abs(np.stack(D2) - transform_D(np.stack(D), op, meta["l_i"])).max())

    single, averaged = mismatch(1), mismatch(48)
    assert averaged[0] < 1e-5 and averaged[1] < 1e-5  # float32 round-off
    assert single[0] > 1e-3 and single[1] > 1e-3
    with pytest.raises(ValueError, match="symmetry_average"):
        SyncPredictor(tiny_sync_net().float(), LI, meta, torch.device("cpu"), symmetry_average=0)


def test_observe_refuses_densities_in_wrong_units_or_compensated(trained_sync, synthetic_long):
    from ase_ldm.errors import InvalidInput
    from ase_ldm.sync.predictor import SyncPredictor

    pred = SyncPredictor.load(trained_sync[0], device="cpu")
    with open_dataset(synthetic_long) as ds:
        f = ds.frame(0)
        D = np.stack([d[0] for d in f.D_asii])
    nt = f.nt_sR[0]
    for bad, match in [(nt * 1000 + 2000, "e/Angstrom\\^3"), (nt - 0.5, "compensated"),
                       (np.full_like(nt, np.nan), "finite")]:
        with pytest.raises(InvalidInput, match=match):
            pred.observe(f.positions, bad, D, f.numbers, f.cell)
    pos = f.positions.copy()
    pos[1, 2] = np.nan
    with pytest.raises(InvalidInput, match="positions must be a finite"):
        pred.observe(pos, nt, D, f.numbers, f.cell)
    with pytest.raises(InvalidInput, match="positions must be a finite"):
        pred.predict(pos, f.numbers, f.cell, nt.shape)
