"""The atom-synchronised model: prior, network symmetries, training, predictor, CLI, GPAW hook."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_sync_config

from ase_ldm.sync.config import SyncConfig
from ase_ldm.sync.net import SyncNet, pack_D, sample_at_atoms, unpack_D
from ase_ldm.sync.prior import RadialPrior, fit_radial_prior

LI = RadialPrior(numbers=(3,), dg=0.5, profiles=(tuple(1.15 * np.exp(-0.5 * (0.5 * np.arange(40)) ** 2 / 4)),))


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


def test_sample_at_atoms_is_periodic_trilinear():
    feat = torch.arange(4 * 5 * 6, dtype=torch.float64).reshape(1, 1, 4, 5, 6)
    frac = torch.tensor([[[1 / 4, 2 / 5, 3 / 6], [1.0 + 1 / 4, -3 / 5, 3 / 6], [1 / 8, 2 / 5, 3 / 6]]],
                        dtype=torch.float64)
    out = sample_at_atoms(feat, frac)[0, :, 0]
    assert float(out[0]) == pytest.approx(float(feat[0, 0, 1, 2, 3]), abs=1e-9)
    assert float(out[1]) == pytest.approx(float(feat[0, 0, 1, 2, 3]), abs=1e-9)  # wrapped into the cell
    assert float(out[2]) == pytest.approx(0.5 * float(feat[0, 0, 0, 2, 3] + feat[0, 0, 1, 2, 3]), abs=1e-9)


def test_pack_D_roundtrip():
    A = torch.randn(3, 5, 5, dtype=torch.float64)
    D = A + A.transpose(-1, -2)
    assert torch.equal(unpack_D(pack_D(D), 5), D)


def _random_inputs(N, Na, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = 0.05 + 0.01 * torch.rand(1, *N, generator=g)
    return dict(p=p, p_hist=p[:, None].repeat(1, 3, 1, 1, 1) + 1e-3 * torch.rand(1, 3, *N, generator=g),
                r_hist=1e-3 * torch.rand(1, 3, *N, generator=g), h=torch.tensor([3]),
                frac=torch.rand(1, Na, 3, generator=g), species=torch.zeros(Na, dtype=torch.long),
                D_hist=torch.rand(1, 3, Na, 15, generator=g))


def _net():
    torch.manual_seed(0)
    net = SyncNet(SyncConfig(channels=4, dilations=(1, 2), d_hidden=8), 1, 5).double()
    for m in (net.head, net.d_head[-1]):  # zero-initialised: give them weights so the test sees the CNN
        torch.nn.init.normal_(m.weight, std=0.1)
    return net.eval()


def test_network_is_periodic_translation_equivariant():
    net = _net()
    x = {k: v.double() if v.is_floating_point() else v for k, v in _random_inputs((8, 10, 12), 3).items()}
    nt, D = net(**x)
    s = (3, 1, 5)
    y = dict(x)
    for k in ("p", "p_hist", "r_hist"):
        y[k] = torch.roll(x[k], s, dims=(-3, -2, -1))
    y["frac"] = x["frac"] + torch.tensor(s, dtype=torch.float64) / torch.tensor([8.0, 10.0, 12.0])
    nt2, D2 = net(**y)
    torch.testing.assert_close(nt2, torch.roll(nt, s, dims=(-3, -2, -1)))
    torch.testing.assert_close(D2, D)


def test_network_runs_on_a_supercell_and_gives_the_tiled_answer():
    """A 2x1x1 supercell with the atoms repeated gets the tiled density and the same D per atom."""
    net = _net()
    x = {k: v.double() if v.is_floating_point() else v for k, v in _random_inputs((10, 8, 8), 2).items()}
    nt, D = net(**x)
    y = dict(x)
    for k in ("p", "p_hist", "r_hist"):
        y[k] = torch.cat([x[k], x[k]], dim=-3)
    f = x["frac"].clone()
    f[..., 0] = f[..., 0] / 2
    f2 = f.clone()
    f2[..., 0] += 0.5
    y["frac"] = torch.cat([f, f2], dim=1)
    y["species"] = torch.zeros(4, dtype=torch.long)
    y["D_hist"] = torch.cat([x["D_hist"], x["D_hist"]], dim=2)
    nt2, D2 = net(**y)
    torch.testing.assert_close(nt2, torch.cat([nt, nt], dim=-3))
    torch.testing.assert_close(D2, torch.cat([D, D], dim=1))


def test_cold_start_ignores_history():
    net = _net()
    x = {k: v.double() if v.is_floating_point() else v for k, v in _random_inputs((8, 8, 8), 2).items()}
    x["h"] = torch.tensor([0])
    nt, D = net(**x)
    x["r_hist"] = x["r_hist"] * 7
    x["D_hist"] = x["D_hist"] + 3
    nt2, D2 = net(**x)
    torch.testing.assert_close(nt, nt2)
    torch.testing.assert_close(D, D2)


# -- training, checkpoints, predictor ------------------------------------------------------------

def test_training_improves_and_checkpoints(trained_sync):
    run, history = trained_sync
    assert history[-1]["loss_nt"] < history[0]["loss_nt"]
    meta = json.loads((run / "model.json").read_text())
    assert meta["kind"] == "sync" and meta["epoch"] == 6
    assert meta["augmentation_ops"] == 48  # cubic Li2 cell
    for key in ("val_rel_l1", "val_rel_l1_baseline", "val_cold_rel_l1", "val_D_rel"):
        assert np.isfinite(history[-1][key])


def test_resume_reproduces_uninterrupted_training(synthetic_long, trained_sync, tmp_path):
    from safetensors.torch import load_file

    from ase_ldm.sync.training import train_sync

    run = tmp_path / "r"
    train_sync(synthetic_long, run, tiny_sync_config(), n_train=11, progress=False, stop_after=4)
    assert json.loads((run / "model.json").read_text())["epoch"] == 4
    with pytest.raises(ValueError, match="differs"):
        train_sync(synthetic_long, run, tiny_sync_config(epochs=4), resume=True, progress=False)
    train_sync(synthetic_long, run, None, resume=True, progress=False)
    ref_run, _ = trained_sync
    a = load_file(str(run / json.loads((run / "model.json").read_text())["files"]["weights"]))
    b = load_file(str(ref_run / json.loads((ref_run / "model.json").read_text())["files"]["weights"]))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_predictor_checks_and_predicts(trained_sync, synthetic_long):
    from ase_ldm.data import open_dataset
    from ase_ldm.errors import CheckpointError
    from ase_ldm.ldm.surrogate import DensitySurrogate
    from ase_ldm.sync.predictor import SyncPredictor

    run, _ = trained_sync
    pred = SyncPredictor.load(run, device="cpu")
    with pytest.raises(CheckpointError, match="not a latent diffusion model"):
        DensitySurrogate.load(run)
    with open_dataset(synthetic_long) as ds:
        f = [ds.frame(i) for i in range(4)]
        D = [np.stack([d[0] for d in ds.D_asii(i)]) for i in range(4)]
        grid, cell, Z = ds.grid, ds.cell(0), ds.numbers
    with pytest.raises(ValueError, match="grid spacing"):
        pred.predict(f[0].positions, Z, cell, tuple(2 * n for n in grid))
    with pytest.raises(ValueError, match="atomic numbers"):
        pred.predict(f[0].positions, np.array([3, 11]), cell, grid)
    with pytest.raises(ValueError, match="finite"):
        pred.observe(f[0].positions, np.full(grid, np.nan), D[0], Z, cell)
    cold, D_cold = pred.predict(f[3].positions, Z, cell, grid)
    for i in range(3):
        pred.observe(f[i].positions, f[i].nt_sR[0], D[i], Z, cell)
    warm, D_warm = pred.predict(f[3].positions, Z, cell, grid)
    ref = f[3].nt_sR[0]
    assert warm.shape == grid and D_warm.shape == (2, 5, 5)
    assert np.all(warm > 0)
    # with history the guess is far closer than from the atoms alone
    assert np.abs(warm - ref).sum() < 0.5 * np.abs(cold - ref).sum()
    np.testing.assert_allclose(D_warm, np.swapaxes(D_warm, 1, 2))


def test_pack_roundtrip(trained_sync, synthetic_long, tmp_path):
    from ase_ldm.data import open_dataset
    from ase_ldm.sync.predictor import SyncPredictor
    from ase_ldm.sync.series import load_pack, save_pack, series_from_dataset

    prior = SyncPredictor.load(trained_sync[0], device="cpu").prior
    with open_dataset(synthetic_long) as ds:
        series = series_from_dataset(ds, prior)
    save_pack(tmp_path / "p.npz", series, prior, {"timestep_fs": 2.0})
    back, prior2, attrs = load_pack(tmp_path / "p.npz")
    assert prior2 == prior and attrs["timestep_fs"] == 2.0 and back.l_i == [0, 1, 1, 1, 0]
    nt = (series.p + series.r).double()
    err = ((back.p + back.r).double() - nt).abs().sum() / nt.abs().sum()
    assert err < 1e-5
    (tmp_path / "bad.npz").write_bytes((tmp_path / "p.npz").read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable sync pack"):
        load_pack(tmp_path / "bad.npz")


def test_predict_cli_writes_scored_dataset(trained_sync, synthetic_long, tmp_path):
    from ase_ldm.cli.main import main
    from ase_ldm.data import open_dataset

    run, _ = trained_sync
    out = tmp_path / "pred.h5"
    assert main(["predict", str(run), "--data", str(synthetic_long), "-o", str(out), "--no-progress"]) == 0
    with open_dataset(synthetic_long) as ref, open_dataset(out) as pred:
        assert len(pred) == len(ref) - 1
        np.testing.assert_allclose(pred.array("positions", 0, 1)[0], ref.array("positions", 1, 2)[0])
        assert pred.time_fs[0] == ref.time_fs[1] and pred.has("D")
        rel = np.abs(pred.nt(5) - ref.nt(6)).sum() / ref.nt(6).sum()
        assert rel < 0.05
    # resuming a complete output adds nothing; another model's output is refused
    assert main(["predict", str(run), "--data", str(synthetic_long), "-o", str(out), "--resume",
                 "--no-progress"]) == 0
    with open_dataset(out) as pred:
        assert len(pred) == len(open_dataset(synthetic_long)) - 1
    assert main(["predict", "li16-800K-sync", "--data", str(synthetic_long), "-o", str(out), "--resume",
                 "--no-progress"]) == 2
    assert main(["evaluate", str(out), "--reference", str(synthetic_long), "-o", str(tmp_path / "ev"),
                 "--no-plots"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert "rel_l1" in json.dumps(metrics)


def test_pretrained_sync_model_loads():
    from ase_ldm.core.registry import pretrained_names
    from ase_ldm.scf.providers import ModelProvider, make_provider

    assert "li16-800K-sync" in pretrained_names()
    prov = make_provider("li16-800K-sync")
    assert isinstance(prov, ModelProvider) and prov.cold_start


@pytest.mark.gpaw
def test_guided_gpaw_with_sync_model_keeps_gpaw_answer(trained_sync, recorded_long):
    """MD guided by the model (cold start included) converges to GPAW's own energies and forces."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from ase_ldm.data import open_dataset
    from ase_ldm.data.gpaw_io import calculator_from_provenance
    from ase_ldm.scf.hook import guided_gpaw

    with open_dataset(recorded_long) as ds:
        attrs, grid = ds.attrs, ds.grid
        atoms0 = ds.atoms(11)
    results = {}
    for name in ("gpaw", str(trained_sync[0])):
        atoms = atoms0.copy()
        atoms.set_velocities(atoms0.get_velocities())
        calc = guided_gpaw(calculator_from_provenance(attrs, grid), name)
        atoms.calc = calc
        e, f = [atoms.get_potential_energy()], [atoms.get_forces()]
        dyn = VelocityVerlet(atoms, 2.0 * units.fs)
        for _ in range(2):
            dyn.run(1)
            e.append(atoms.get_potential_energy())
            f.append(atoms.get_forces())
        results[name] = (np.array(e), np.array(f), list(calc.guess_seconds))
    (e0, f0, _), (e1, f1, guesses) = results["gpaw"], results[str(trained_sync[0])]
    assert len(guesses) == 3  # the cold start and both MD steps were guessed by the model
    np.testing.assert_allclose(e1, e0, atol=2e-3)
    np.testing.assert_allclose(f1, f0, atol=2e-2)


def test_density_calculator_with_sync_model(trained_sync, synthetic_long):
    """Any force calculator + the synchronised model: a density per MD step from the atoms alone."""
    from ase import Atoms, units
    from ase.calculators.lj import LennardJones
    from ase.md.verlet import VelocityVerlet

    from ase_ldm.calculator import DensityCalculator
    from ase_ldm.data import open_dataset
    from ase_ldm.errors import ModelMismatch
    from ase_ldm.sync.predictor import SyncPredictor

    run, _ = trained_sync
    with open_dataset(synthetic_long) as ds:
        atoms = ds.atoms(5)
        grid = ds.grid
    atoms.calc = DensityCalculator(str(run), calc=LennardJones(sigma=2.5, epsilon=0.05, rc=3.5), device="cpu")
    atoms.get_potential_energy()
    dens = [atoms.calc.get_pseudo_density()]
    expect, _ = SyncPredictor.load(run, device="cpu", max_history=0).predict(atoms.positions, atoms.numbers,
                                                                                atoms.cell[:], grid)
    np.testing.assert_allclose(dens[0], expect, rtol=1e-6)
    dyn = VelocityVerlet(atoms, 2.0 * units.fs)
    dyn.attach(lambda: dens.append(atoms.calc.get_pseudo_density()))
    dyn.run(2)
    assert dens[0].shape == grid and all(np.all(d > 0) for d in dens)
    assert np.abs(dens[-1] - dens[0]).sum() > 0  # the density follows the moving atoms
    bad = Atoms("Li2", positions=atoms.positions, cell=atoms.cell[:] * 1.04, pbc=True)
    bad.calc = DensityCalculator(str(run), device="cpu")
    with pytest.raises(ModelMismatch, match="grid spacing"):
        bad.calc.get_property("pseudo_density", bad)
    na = Atoms("LiNa", positions=atoms.positions, cell=atoms.cell[:], pbc=True)
    na.calc = DensityCalculator(str(run), device="cpu")
    with pytest.raises(ModelMismatch, match="atomic numbers"):
        na.calc.get_property("pseudo_density", na)


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
    net = _net()
    x = {k: v.double() if v.is_floating_point() else v for k, v in _random_inputs(grid, 2).items()}
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


def test_train_sync_cli(synthetic_long, tmp_path):
    from ase_ldm.cli.main import main

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": {"channels": 4, "dilations": [1], "d_hidden": 8}, "val_frames": 3,
                               "batch_size": 4, "device": "cpu"}))
    run = tmp_path / "run"
    assert main(["train-sync", str(synthetic_long), "--train", "11", "--config", str(cfg), "--epochs", "1",
                 "-o", str(run), "--no-progress"]) == 0
    assert json.loads((run / "model.json").read_text())["epoch"] == 1
    # a second start into the same directory, and a resume that changes settings, are refused
    assert main(["train-sync", str(synthetic_long), "--train", "11", "--config", str(cfg), "-o", str(run),
                 "--no-progress"]) == 2
    assert main(["train-sync", str(synthetic_long), "--epochs", "3", "--resume", "-o", str(run), "--no-progress"]) == 2
    assert main(["train-sync", str(synthetic_long), "--resume", "-o", str(run), "--no-progress"]) == 0


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
        pred = SyncPredictor(_net().float(), LI, meta, torch.device("cpu"), symmetry_average=k)
        nt, D = pred.predict(pos, Z, cell, grid)
        nt2, D2 = pred.predict((pos @ op.R.T) % 4.0, Z, cell, grid)
        expect = op.grid(torch.as_tensor(nt)).numpy()
        return (np.abs(nt2 - expect).sum() / np.abs(expect).sum(),
                np.abs(D2 - transform_D(D, op, meta["l_i"])).max())

    single, averaged = mismatch(1), mismatch(48)
    assert averaged[0] < 1e-5 and averaged[1] < 1e-5  # float32 round-off
    assert single[0] > 1e-3 and single[1] > 1e-3
    with pytest.raises(ValueError, match="symmetry_average"):
        SyncPredictor(_net().float(), LI, meta, torch.device("cpu"), symmetry_average=0)


def test_predict_refuses_another_timestep_and_serves_the_paper_model(trained_sync, trained, recorded,
                                                                       synthetic_long, tmp_path):
    from ase_ldm.cli.main import main
    from ase_ldm.data import open_dataset

    out = tmp_path / "p.h5"
    # recorded: 1 fs steps; the model's history was 2 fs steps
    assert main(["predict", str(trained_sync[0]), "--data", str(recorded), "-o", str(out), "--no-progress"]) == 2
    assert not out.exists()
    assert main(["predict", str(trained_sync[0]), "--data", str(recorded), "--history", "0", "-o", str(out),
                 "--no-progress"]) == 0
    # the paper's latent model predicts from the two previous frames, without D
    ldm_out = tmp_path / "ldm.h5"
    assert main(["predict", str(trained[0]), "--data", str(synthetic_long), "-o", str(ldm_out), "--no-progress"]) == 0
    with open_dataset(ldm_out) as pred, open_dataset(synthetic_long) as ref:
        assert len(pred) == len(ref) - 1 and not pred.has("D")
