"""The grid-latent diffusion family (ase_ldm.gldm): equivariance, diffusion, training, serving."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_gldm_config

from ase_ldm.data import open_dataset


def _tiny_model():
    from ase_ldm.gldm.model import GridLDM

    torch.manual_seed(0)
    model = GridLDM(tiny_gldm_config().model).eval()
    for p in model.parameters():  # the zero-initialised output layers would hide the test
        torch.nn.init.normal_(p, std=0.1)
    return model


def test_latent_follows_whole_patch_shifts():
    model = _tiny_model()
    x = torch.randn(2, 1, 12, 12, 9)
    z = model.autoencoder.encode(x)
    assert z.shape == (2, 8, 4, 4, 3)
    shifted = torch.roll(x, (3, -6, 3), (2, 3, 4))
    assert torch.allclose(model.autoencoder.encode(shifted), torch.roll(z, (1, -2, 1), (2, 3, 4)), atol=1e-5)
    assert torch.allclose(model.autoencoder(shifted), torch.roll(model.autoencoder(x), (3, -6, 3), (2, 3, 4)),
                          atol=1e-5)
    # the denoiser moves with its inputs too
    C, H = 8, model.history
    z_k, past, atoms = torch.randn(1, C, 4, 4, 4), torch.randn(1, H * C, 4, 4, 4), torch.randn(1, (H + 1) * C, 4, 4, 4)
    flags, k = torch.ones(1, H + 1), torch.tensor([5])
    out = model.denoiser(z_k, k, past, atoms, flags)
    roll = lambda t: torch.roll(t, (1, 2), (2, 4))  # noqa: E731
    assert torch.allclose(model.denoiser(roll(z_k), k, roll(past), roll(atoms), flags), roll(out), atol=1e-5)
    assert out.abs().max() > 1e-3
    # the full-resolution refinement after the voxel shuffle keeps it
    from ase_ldm.gldm.config import GridAutoencoderConfig
    from ase_ldm.gldm.nets import GridAutoencoder

    ae = GridAutoencoder(GridAutoencoderConfig(channels=8, blocks=1, latent_channels=4, refine_channels=4)).eval()
    for p in ae.parameters():
        torch.nn.init.normal_(p, std=0.1)
    assert torch.allclose(ae(shifted), torch.roll(ae(x), (3, -6, 3), (2, 3, 4)), atol=1e-5)
    refine, ae.refine = ae.refine, None
    plain = ae(x)
    ae.refine = refine
    assert not torch.allclose(ae(x), plain, atol=1e-3)


def test_grids_the_patch_does_not_divide_are_refused():
    from ase_ldm.errors import InvalidInput
    from ase_ldm.gldm.nets import latent_grid

    assert latent_grid((30, 30, 45), 3) == (10, 10, 15)
    with pytest.raises(InvalidInput, match="multiple of 3"):
        latent_grid((30, 31, 30), 3)


def test_samplers_recover_a_known_latent():
    """With a denoiser that knows z_0 exactly, every sampler returns it; the mean level sees zeros."""
    from ase_ldm.gldm.diffusion import CosineSchedule, ddim_sample, ddpm_sample, mean_estimate

    sched = CosineSchedule(30)
    assert sched.alpha_bar[0] == 1 and 0 < sched.alpha_bar[-1] < 1e-3
    assert torch.all(sched.alpha_bar[1:] < sched.alpha_bar[:-1])
    target = torch.randn(2, 3, 4, 4, 4)
    seen = []

    def oracle(z, k):
        seen.append((z.clone(), k.clone()))
        return target

    gen = torch.Generator().manual_seed(0)
    assert torch.allclose(ddpm_sample(oracle, sched, target.shape, generator=gen), target, atol=1e-4)
    assert len(seen) == 30
    assert torch.allclose(ddim_sample(oracle, sched, target.shape, 5, eta=1.0, generator=gen), target)
    seen.clear()
    assert torch.equal(mean_estimate(oracle, target.shape, 31, torch.device("cpu")), target)
    assert seen[0][1].tolist() == [31, 31] and seen[0][0].abs().max() == 0
    a = ddim_sample(lambda z, k: z * 0.5, sched, target.shape, 4, eta=0.0, generator=torch.Generator().manual_seed(3))
    b = ddim_sample(lambda z, k: z * 0.5, sched, target.shape, 4, eta=0.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_training_learns_and_resumes(recorded_long, tmp_path, trained_gldm):
    from ase_ldm.gldm.training import train_gldm

    run, history = trained_gldm
    ae = [r for r in history if r["stage"] == "autoencoder"]
    den = [r for r in history if r["stage"] == "denoiser"]
    assert len(ae) == 20 and len(den) == 3 and den[-1]["steps"] == 12
    # the autoencoder learned: on the validation frames it beats a uniform density by 2x
    with open_dataset(recorded_long) as ds:
        nt = ds.nt_range(0, len(ds))[:, 0].astype(np.float64)
    val = json.loads((run / "model.json").read_text())["val_frames"]
    err_flat = np.mean([np.abs(nt[i].mean() - nt[i]).sum() / nt[i].sum() for i in range(*val)])
    assert ae[-1]["val_reconstruction"] < 0.5 * err_flat < 0.5 * ae[0]["val_reconstruction"] * 1.2
    assert set(json.loads((run / "model.json").read_text())["spread_scale"]) == {"0", "1", "2"}
    # an interrupted run resumes to the same weights as the uninterrupted one
    part = tmp_path / "part"
    train_gldm(recorded_long, part, tiny_gldm_config(), progress=False, stop_after=4)
    assert json.loads((part / "model.json").read_text())["epoch"] == 4  # in the autoencoder stage
    out = train_gldm(recorded_long, part, None, resume=True, progress=False)
    assert [r["epoch"] for r in out["history"]] == [r["epoch"] for r in history]
    assert out["history"][-1]["val_one_step"] == pytest.approx(history[-1]["val_one_step"], rel=1e-4)
    from safetensors.torch import load_file

    a = load_file(str(next(run.glob("weights-*.safetensors"))))
    b = load_file(str(next(part.glob("weights-*.safetensors"))))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_predictor_modes(trained_gldm, recorded_long):
    from ase_ldm.core.registry import load
    from ase_ldm.errors import InvalidInput, ModelMismatch
    from ase_ldm.gldm.predictor import GridLDMPredictor

    run, _ = trained_gldm
    model = load(run, device="cpu")
    assert isinstance(model, GridLDMPredictor) and model.min_history == 0 and not model.predicts_D
    with open_dataset(recorded_long) as ds:
        f = [ds.frame(i) for i in range(len(ds))]
        grid, cell, Z = ds.grid, ds.cell(0), ds.numbers
    assert model.grid_for(cell) == grid
    dV = abs(np.linalg.det(cell)) / np.prod(grid)
    electrons = f[12].electron_count()
    nt, D = model.predict(f[12].positions, Z, cell, grid)
    assert D is None and nt.shape == grid and np.all(nt > 0)
    assert nt.sum() * dV == pytest.approx(electrons, rel=1e-3)
    # the mean mode is deterministic; samples are seedable and spread around it
    assert np.array_equal(model.predict(f[12].positions, Z, cell, grid)[0], nt)
    s1 = model.predict_samples(f[12].positions, Z, cell, grid, 3, seed=4)
    s2 = model.predict_samples(f[12].positions, Z, cell, grid, 3, seed=4)
    assert np.array_equal(s1.samples, s2.samples) and s1.samples.shape == (3, *grid)
    assert s1.spread > 0 and s1.std_R.shape == grid and np.array_equal(s1.nt_R, nt)
    assert not np.array_equal(s1.samples[0], s1.samples[1])
    # the history changes the prediction
    model.observe(f[11].positions, f[11].nt_sR[0], None, Z, cell)
    warm, _ = model.predict(f[12].positions, Z, cell, grid)
    assert not np.allclose(warm, nt)
    with pytest.raises(ModelMismatch, match="grid spacing"):
        model.predict(f[12].positions, Z, cell, tuple(2 * n for n in grid))
    with pytest.raises(ModelMismatch, match="atomic numbers"):
        model.predict(f[12].positions, np.array([3, 11]), cell, grid)
    with pytest.raises(InvalidInput, match="at least 2 samples"):
        model.predict_samples(f[12].positions, Z, cell, grid, 1)
    # the autonomous rollout: chains of densities with the right electron count
    chains = list(model.rollout(f[10].nt_sR[0], f[11].nt_sR[0], 3, samples=2, sampler="ddim", n_steps=4, seed=0))
    assert len(chains) == 3 and chains[0].shape == (2, *grid)
    assert np.allclose(chains[-1].sum((1, 2, 3)) * dV, model.electrons_per_atom * len(Z), rtol=1e-4)


def test_predict_cli_writes_the_spread(trained_gldm, trained_sync, recorded_long, synthetic_long, tmp_path):
    from ase_ldm.cli.main import main

    run, _ = trained_gldm
    out = tmp_path / "pred.h5"
    assert main(["predict", str(run), "--data", str(recorded_long), "--start", "11", "--samples", "3",
                 "--history", "0", "-o", str(out), "--no-progress"]) == 0
    with open_dataset(out) as ds:
        spread = ds.array("nt_spread")
        assert len(ds) == 3 and spread.shape == (3,) and np.all(spread > 0)
        assert ds.frame(0).nt_spread == pytest.approx(spread[0])
    # a deterministic model has no spread to write
    assert main(["predict", str(trained_sync[0]), "--data", str(synthetic_long), "--samples", "3",
                 "-o", str(tmp_path / "x.h5"), "--no-progress"]) == 2
    assert not (tmp_path / "x.h5").exists()


def test_calculator_serves_the_mean_and_its_uncertainty(trained_gldm, trained_sync, recorded_long):
    from ase.calculators.calculator import CalculatorSetupError, PropertyNotImplementedError

    from ase_ldm.calculator import DensityCalculator

    run, _ = trained_gldm
    with open_dataset(recorded_long) as ds:
        atoms = ds.atoms(12)
    calc = DensityCalculator(str(run), samples=3, device="cpu")
    atoms.calc = calc
    n = calc.get_property("pseudo_density", atoms)
    std = calc.get_property("pseudo_density_std", atoms)
    u = calc.get_density_uncertainty()
    assert std.shape == n.shape and u > 0
    assert u == pytest.approx(np.abs(std).sum() / np.abs(n).sum())
    plain = DensityCalculator(str(run), device="cpu")
    atoms.calc = plain
    assert np.allclose(plain.get_property("pseudo_density", atoms), n)
    with pytest.raises(PropertyNotImplementedError, match="samples=K"):
        plain.get_density_uncertainty()
    with pytest.raises(CalculatorSetupError, match="deterministic"):
        DensityCalculator(str(trained_sync[0]), samples=3, device="cpu")


def test_damaged_checkpoint_is_refused(trained_gldm, tmp_path):
    import shutil

    from ase_ldm.core.registry import load
    from ase_ldm.errors import CheckpointError

    run, _ = trained_gldm
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    meta = json.loads((bad / "model.json").read_text())
    meta["gldm_config"]["denoiser"]["steps"] = -3
    (bad / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="impossible|invalid"):
        load(bad, device="cpu")


def test_bad_settings_are_refused_before_training(recorded_long, tmp_path):
    import dataclasses

    from ase_ldm.errors import InvalidInput
    from ase_ldm.gldm.config import GridDenoiserConfig
    from ase_ldm.gldm.training import train_gldm

    cfg = tiny_gldm_config()
    odd = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, denoiser=GridDenoiserConfig(embedding_dim=33)))
    with pytest.raises(InvalidInput, match="embedding_dim must be even"):
        train_gldm(recorded_long, tmp_path / "a", odd, progress=False)
    with pytest.raises(InvalidInput, match="drop_atoms"):
        train_gldm(recorded_long, tmp_path / "b", dataclasses.replace(cfg, drop_atoms=1.0), progress=False)
    assert not (tmp_path / "a" / "model.json").exists()


def test_modes_without_information_are_refused(trained_gldm, recorded_long):
    from ase_ldm.core.registry import load
    from ase_ldm.errors import InvalidInput

    model = load(trained_gldm[0], device="cpu")
    with open_dataset(recorded_long) as ds:
        f, grid = ds.frame(5), ds.grid
    with pytest.raises(InvalidInput, match="spin-summed"):
        model.observe(f.positions, f.nt_sR, None, f.numbers, f.cell)
    model.observe(f.positions, f.nt_sR[0], None, f.numbers, f.cell)
    model.max_history = 0  # neither atoms nor history: nothing to condition on
    with pytest.raises(InvalidInput, match="observed step"):
        model.predict_samples(None, f.numbers, f.cell, grid, 2)
    model.max_history = 1
    assert model.predict_samples(None, f.numbers, f.cell, grid, 2, seed=0).spread > 0
    with pytest.raises(InvalidInput, match="samples must be a positive integer"):
        model.rollout(f.nt_sR[0], f.nt_sR[0], 2, samples=0)


def test_a_denoiser_on_another_runs_autoencoder(recorded_long, trained_gldm, tmp_path):
    """init_autoencoder: the second run keeps the first one's autoencoder and trains only the denoiser."""
    import dataclasses

    from safetensors.torch import load_file

    from ase_ldm.errors import InvalidInput
    from ase_ldm.gldm.config import GridDenoiserConfig
    from ase_ldm.gldm.training import train_gldm

    run, _ = trained_gldm
    cfg = tiny_gldm_config()
    prev = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, denoiser=dataclasses.replace(cfg.model.denoiser, base="previous")))
    out = train_gldm(recorded_long, tmp_path / "b", prev, progress=False, init_autoencoder=run)
    assert [r["stage"] for r in out["history"]] == ["denoiser"] * 3
    a = load_file(str(next(run.glob("weights-*.safetensors"))))
    b = load_file(str(next((tmp_path / "b").glob("weights-*.safetensors"))))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("autoencoder."))
    assert not torch.equal(a["denoiser.out.weight"], b["denoiser.out.weight"])
    other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, denoiser=GridDenoiserConfig(base="cubic")))
    with pytest.raises(InvalidInput, match="denoiser.base"):
        train_gldm(recorded_long, tmp_path / "c", other, progress=False, init_autoencoder=run)


def test_symmetry_average_and_spread_calibration(trained_gldm, recorded_long, tmp_path):
    import shutil

    from ase_ldm.core.registry import load
    from ase_ldm.errors import ModelMismatch
    from ase_ldm.gldm.calibration import calibrate_spread

    run = tmp_path / "run"
    shutil.copytree(trained_gldm[0], run)
    with open_dataset(recorded_long) as ds:
        f, grid = ds.frame(12), ds.grid
    plain = load(run, device="cpu", max_history=0).predict(f.positions, f.numbers, f.cell, grid)[0]
    avg = load(run, device="cpu", max_history=0, symmetry_average=4).predict(f.positions, f.numbers, f.cell, grid)[0]
    assert not np.allclose(avg, plain) and np.abs(avg - plain).sum() / plain.sum() < 0.5
    with pytest.raises(ModelMismatch, match="symmetry operations"):
        load(run, device="cpu", symmetry_average=1000).predict(f.positions, f.numbers, f.cell, grid)
    out = calibrate_spread(run, recorded_long, samples=3, write=True)
    meta = json.loads((run / "model.json").read_text())
    assert meta["spread_scale"] == out["spread_scale"] and set(out["spread_scale"]) == {"0", "1", "2"}
    assert all(v > 0 for v in out["spread_scale"].values())
