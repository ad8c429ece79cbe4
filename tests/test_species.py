"""Several species with different projector counts, with real GPAW on a LiSi cell (Li: 5 projectors,
s and p; Si: 13, with d): recording, the padded PAW layout, symmetry operations on d blocks,
training, prediction and guided MD."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("gpaw")
pytestmark = pytest.mark.gpaw

from ase import Atoms  # noqa: E402
from conftest import guided_md, tiny_settings, tiny_sync_config  # noqa: E402

from ase_ldm.errors import InvalidInput  # noqa: E402
from ase_ldm.sync.symmetry import SymmetryOp  # noqa: E402

A = 3.1  # Angstrom: a CsCl-like LiSi cell, 12^3 grid at PW(200)


def lisi(rattle: float = 0.05, seed: int = 1) -> Atoms:
    atoms = Atoms("LiSi", scaled_positions=[[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]], cell=[A, A, A], pbc=True)
    atoms.rattle(rattle, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def recorded_lisi(tmp_path_factory):
    """A 12-frame NVT GPAW trajectory of LiSi."""
    from ase_ldm.data.aimd import run_aimd

    path = tmp_path_factory.mktemp("lisi") / "lisi.h5"
    run_aimd(lisi(), path, tiny_settings(steps=11, ensemble="nvt", timestep_fs=2.0, temperature_K=1200.0),
             progress=False)
    return path


@pytest.fixture(scope="module")
def trained_lisi(recorded_lisi, tmp_path_factory):
    from ase_ldm.sync.training import train_sync

    run = tmp_path_factory.mktemp("lisi-sync") / "model"
    train_sync(recorded_lisi, run, tiny_sync_config(epochs=3), n_train=9, progress=False)
    return run


def test_recording_keeps_each_species_projectors_and_the_series_pads_them(recorded_lisi, tmp_path):
    from ase_ldm.data import open_dataset
    from ase_ldm.sync.layout import unpack_D
    from ase_ldm.sync.prior import fit_radial_prior
    from ase_ldm.sync.series import load_pack, save_pack, series_from_dataset

    with open_dataset(recorded_lisi) as ds:
        assert [D.shape for D in ds.D_asii(0)] == [(1, 5, 5), (1, 13, 13)]
        prior = fit_radial_prior(((ds.array("positions", i, i + 1)[0], ds.nt(i).sum(0)) for i in range(6)),
                                 ds.numbers, ds.cell(0))
        series = series_from_dataset(ds, prior, 0, 6)
        D_ref = ds.D_asii(4)
    layout = series.layout
    assert layout.numbers == (3, 14) and layout.ni == (5, 13) and layout.nD == 91
    assert layout.l_i == ((0, 1, 1, 1, 0), (0, 1, 1, 1, 0, 1, 1, 1, 2, 2, 2, 2, 2))
    D = unpack_D(series.D[4].double(), 13).numpy()
    np.testing.assert_allclose(D[0, :5, :5], D_ref[0][0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(D[1], D_ref[1][0], rtol=1e-6, atol=1e-7)
    assert np.all(D[0, 5:] == 0) and np.all(D[0, :, 5:] == 0)  # Li's padding
    save_pack(tmp_path / "p.npz", series, prior, {})
    back, _, _ = load_pack(tmp_path / "p.npz")
    assert back.layout == layout


def test_rotated_d_blocks_match_gpaw():
    """A symmetry operation on the atoms rotates GPAW's PAW matrices as the layout says, d projectors
    included (Si)."""
    from gpaw import GPAW, PW

    from ase_ldm.data.gpaw_io import D_asii_from_gpaw
    from ase_ldm.sync.layout import PAWLayout, pack_D, unpack_D

    def run(atoms):
        atoms.calc = GPAW(mode=PW(200), xc="PBE", occupations={"name": "fermi-dirac", "width": 0.1},
                          symmetry="off", txt=None, convergence={"density": 1e-7, "eigenstates": 1e-10})
        atoms.get_potential_energy()
        return [D[0] for D in D_asii_from_gpaw(atoms.calc)]

    import torch

    layout = PAWLayout((3, 14), (5, 13), ((0, 1, 1, 1, 0), (0, 1, 1, 1, 0, 1, 1, 1, 2, 2, 2, 2, 2)))
    species = np.array([0, 1])
    atoms = lisi(rattle=0.15, seed=4)
    D = run(atoms.copy())
    op = SymmetryOp((2, 0, 1), (-1, 1, -1))
    moved = atoms.copy()
    moved.positions = (atoms.positions @ op.R.T) % A
    D2 = run(moved)
    packed = pack_D(torch.as_tensor(layout.pad(D, species)))
    expect = layout.unpad(unpack_D(layout.transform(packed, op, species), 13).numpy(), species)
    for a in range(2):
        np.testing.assert_allclose(D2[a], expect[a], atol=3e-5)
    # Si's d block does change, and the rotation accounts for that change (a wrong harmonic order
    # would leave it unexplained); its entries are small (1e-4), so compare with the change
    d = slice(8, 13)
    change = np.abs(expect[1][d, d] - D[1][d, d]).max()
    miss = np.abs(D2[1][d, d] - expect[1][d, d]).max()
    assert change > 1e-4 and miss < 0.05 * change


def test_two_species_model_trains_predicts_per_species_and_keeps_gpaw_answer(trained_lisi, recorded_lisi):
    from ase_ldm.data import open_dataset
    from ase_ldm.sync.predictor import SyncPredictor

    meta = json.loads((trained_lisi / "model.json").read_text())
    assert meta["ni"] == {"3": 5, "14": 13}
    pred = SyncPredictor.load(trained_lisi, device="cpu")
    with open_dataset(recorded_lisi) as ds:
        frames = [ds.frame(i) for i in range(7, 11)]
        attrs, grid = ds.attrs, ds.grid
        atoms0 = ds.atoms(10)
    for f in frames[:3]:
        pred.observe(f.positions, f.nt_sR.sum(0), [D[0] for D in f.D_asii], f.numbers, f.cell)
    nt, D = pred.predict(frames[3].positions, frames[3].numbers, frames[3].cell, grid)
    assert [d.shape for d in D] == [(5, 5), (13, 13)]
    assert all(np.all(np.isfinite(d)) and np.allclose(d, d.T) for d in D)
    ref = [d[0] for d in frames[3].D_asii]
    for d, r in zip(D, ref):  # a guess near the converged matrices (the extrapolation of 3 close steps)
        assert np.linalg.norm(d - r) < 0.2 * np.linalg.norm(r)
    with pytest.raises(InvalidInput, match=r"atom 1 \(Z = 14\).*expected \(13, 13\)"):
        pred.observe(frames[0].positions, frames[0].nt_sR.sum(0), [np.eye(5), np.eye(5)], frames[0].numbers,
                     frames[0].cell)

    # averaged over the cell's 48 operations, the prediction is exactly equivariant, d blocks included
    sym = SyncPredictor.load(trained_lisi, device="cpu", symmetry_average=48)
    op = SymmetryOp((1, 2, 0), (1, -1, -1))
    f = frames[3]
    _, Da = sym.predict(f.positions, f.numbers, f.cell, grid)
    _, Db = sym.predict((f.positions @ op.R.T) % A, f.numbers, f.cell, grid)
    from ase_ldm.sync.symmetry import transform_D

    l_si = sym.model.layout.l_i[1]
    np.testing.assert_allclose(Db[1], transform_D(Da[1], op, list(l_si)), atol=1e-5)

    # guided MD with the two-species model converges to GPAW's own answer
    results = {name: guided_md(atoms0, attrs, grid, name) for name in ("gpaw", str(trained_lisi))}
    (e0, f0, _), (e1, f1, guesses) = results["gpaw"], results[str(trained_lisi)]
    assert guesses == 3  # the cold start and both MD steps were guessed by the model
    np.testing.assert_allclose(e1, e0, atol=2e-3)
    np.testing.assert_allclose(f1, f0, atol=2e-2)
