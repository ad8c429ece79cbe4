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
    with pytest.raises(InvalidInput, match="rollout_calibration_steps"):
        train_gldm(recorded_long, tmp_path / "b", dataclasses.replace(cfg, rollout_calibration_steps=2), progress=False)
    assert not (tmp_path / "a" / "model.json").exists()


def test_training_on_few_frames_ends_with_every_calibration(recorded_long, tmp_path):
    """A split with few training frames still ends with the rollout gain (in fewer blocks) or
    without it, and always with the spread."""
    from ase_ldm.gldm.training import train_gldm

    for fraction in (0.55, 0.65):  # 5 and 4 training frames
        run = tmp_path / str(fraction)
        train_gldm(recorded_long, run, tiny_gldm_config(test_fraction=fraction, denoiser_steps=4), progress=False)
        meta = json.loads((run / "model.json").read_text())
        assert "spread_scale" in meta and "latent_speed" in meta
        frames = meta["train_frames"][1] - meta["train_frames"][0]
        if "rollout" in meta["spectral_gain"]:
            assert meta["spectral_gain"]["rollout_fit"]["blocks"] <= frames // 2


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


def test_spectral_gain_recovers_a_known_filter(recorded_long):
    """The shell gains undo a known radial blur of real GPAW densities: Wiener and amplitude gain
    are both 1/h inside the band, 1 outside, and the filter interpolates them in |G| on any cell."""
    from ase_ldm.core.fourier import band_mask, reciprocal_grid
    from ase_ldm.errors import CheckpointError, InvalidInput
    from ase_ldm.gldm.spectrum import fit_spectral_gain, spectral_filter

    with open_dataset(recorded_long) as ds:
        xs, cell, grid = [ds.nt(t).sum(0).astype(np.float64) for t in range(0, 12, 3)], ds.cell(0), ds.grid
    kabs = np.linalg.norm(reciprocal_grid(cell, grid), axis=-1)
    h = 1 / (1 + (kabs / 8.0) ** 2)  # the "decoder": a radial blur, at most 2x at |G| = 8 1/A
    pairs = [(x, np.fft.irfftn(np.fft.rfftn(x) * h, s=grid, axes=(0, 1, 2))) for x in xs]
    limit = 0.8 * kabs.max()
    gain = fit_spectral_gain(pairs, cell, limit, frames=[0, 3, 6, 9])
    w = gain["shell_width"]
    knots = np.arange(len(gain["mean"])) * w
    inside = (knots > 0) & (knots < limit) & (1 + (knots / 8.0) ** 2 < 2)
    want = 1 + (knots / 8.0) ** 2
    assert inside.sum() >= 3
    # a shell holds |G| within w / 2 of its knot, so 1/h is averaged over the shell: within 15 %
    np.testing.assert_allclose(np.array(gain["mean"])[inside], want[inside], rtol=0.15)
    np.testing.assert_allclose(np.array(gain["sample"])[inside], want[inside], rtol=0.15)
    # every shell with plane waves of the band is fitted (the edge shell too); beyond, the edge's gain
    edge = int(np.rint(kabs[kabs < limit].max() / w))
    assert all(g == gain["mean"][edge] for g in gain["mean"][edge:]) and gain["frames"] == [0, 3, 6, 9]
    assert gain["mean"][edge] == pytest.approx(min(2.0, 1 + (kabs[kabs < limit].max() / 8.0) ** 2), rel=0.3)
    # the filter: the band mask times the gain interpolated in |G|, on this cell and on a supercell
    f = spectral_filter(gain, "mean", cell, grid, limit)
    assert np.array_equal(f == 0, ~band_mask(cell, grid, limit))
    on_knot = np.isclose(kabs / w, np.rint(kabs / w)) & (kabs < limit)
    np.testing.assert_allclose(f[on_knot], np.array(gain["mean"])[np.rint(kabs[on_knot] / w).astype(int)])
    big = spectral_filter(gain, "mean", 2 * cell, tuple(2 * n for n in grid), limit)
    k2 = np.linalg.norm(reciprocal_grid(2 * cell, tuple(2 * n for n in grid)), axis=-1)
    sel = (k2 < limit) & (k2 > 0)
    np.testing.assert_allclose(big[sel], np.interp(k2[sel] / w, np.arange(len(gain["mean"])), gain["mean"]))
    assert np.array_equal(spectral_filter(None, "sample", cell, grid, limit), band_mask(cell, grid, limit))
    with pytest.raises(InvalidInput, match="spectral gain"):
        spectral_filter(gain, "median", cell, grid, limit)
    with pytest.raises(CheckpointError, match="spectral_gain is damaged"):
        spectral_filter({"shell_width": w, "mean": [1.0, float("nan")]}, "mean", cell, grid, limit)
    with pytest.raises(InvalidInput, match="no frames"):
        fit_spectral_gain([], cell, limit)


def test_rollout_gain_recovers_a_known_filter(recorded_long):
    """Generated densities that are the reference divided by a known knot filter t: the rollout
    knots recover t exactly from the first stable shell to the band's edge shell, whatever
    fraction of that shell the band covers, stay 1 below it and hold the edge's value above it."""
    from ase_ldm.core.fourier import reciprocal_grid
    from ase_ldm.errors import InvalidInput
    from ase_ldm.gldm.spectrum import UnstableSpectrum, fit_rollout_gain, fit_spectral_gain

    with open_dataset(recorded_long) as ds:
        xs, cell, grid = [ds.nt(t).sum(0).astype(np.float64) for t in range(len(ds))], ds.cell(0), ds.grid
    kabs = np.linalg.norm(reciprocal_grid(cell, grid), axis=-1)
    blocks = [xs[i::3] for i in range(3)]
    for edge_fraction in (0.2, 0.8):  # the band's last shell covered below or above its knot
        gain = fit_spectral_gain(zip(xs, xs), cell, 0.8 * kabs.max())
        w = gain["shell_width"]
        limit = (int(0.7 * kabs.max() / w) + edge_fraction) * w
        probe = fit_rollout_gain(blocks, xs, cell, limit, gain, max_block_spread=10.0)
        spread = np.array(probe["block_spread"])
        threshold = 0.999 * spread[1]  # shell 1 unstable: the fit starts higher
        first = 1 + int(np.argmax((spread[1:] < threshold) & (spread[1:] > 0)))
        assert 1 < first
        last = int(np.rint(kabs[kabs < limit].max() / w))
        truth = np.ones(len(gain["mean"]))
        truth[first:] = 1 + 0.3 * np.sin(np.arange(first, len(truth)))
        truth[last + 1:] = truth[last]
        filt = np.interp(kabs / w, np.arange(len(truth)), truth, right=truth[-1])
        generated = [np.fft.irfftn(np.fft.rfftn(x) / filt, s=grid, axes=(0, 1, 2)) for x in xs]
        fit = fit_rollout_gain(blocks, generated, cell, limit, gain, max_block_spread=threshold)
        knots, spread = np.array(fit["knots"]), np.array(fit["block_spread"])
        assert fit["from_shell"] == first and spread[first] < threshold and np.all(spread[1:first] >= threshold)
        assert np.all(knots[:first] == 1.0) and np.all(knots[last:] == knots[last])
        np.testing.assert_allclose(knots[first:last + 1], truth[first:last + 1], rtol=1e-4)
    with pytest.raises(InvalidInput, match="at least 2 blocks"):
        fit_rollout_gain([xs], generated, cell, limit, gain)
    with pytest.raises(UnstableSpectrum, match="stable"):
        fit_rollout_gain(blocks, generated, cell, limit, gain, max_block_spread=1e-9)
    with pytest.raises(InvalidInput, match="grid"):
        fit_rollout_gain(blocks, [x[:, :, :-1] for x in generated], cell, limit, gain)
    with pytest.raises(InvalidInput, match="non-finite"):
        fit_rollout_gain(blocks, [np.full(grid, np.nan)], cell, limit, gain)
    for bad in ({"band_limit": -1.0}, {"band_limit": float("nan")}, {"max_block_spread": 0.0}, {"cell": np.eye(2)}):
        with pytest.raises(InvalidInput, match="band_limit|max_block_spread|cell"):
            fit_rollout_gain(blocks, generated, **{"cell": cell, "band_limit": limit, "gain": gain, **bad})


def test_served_means_and_rollouts_take_their_own_gain(trained_gldm, recorded_long, tmp_path):
    """Training fits the gains on its training frames; the mean (and so the spread) is served
    through the 'mean' gain, a sampled rollout through the 'sample' gain."""
    import shutil

    from ase_ldm.core.registry import load

    run = tmp_path / "run"
    shutil.copytree(trained_gldm[0], run)
    meta = json.loads((run / "model.json").read_text())
    gain = meta["spectral_gain"]
    assert set(gain["frames"]) <= set(range(*meta["train_frames"])) and len(gain["mean"]) == len(gain["sample"])
    # a 'mean' gain that keeps only G = 0 must serve the uniform density; the rollout is untouched
    gain["mean"] = [1.0] + [0.0] * (len(gain["mean"]) - 1)
    (run / "model.json").write_text(json.dumps(meta))
    model = load(run, device="cpu", max_history=0)
    with open_dataset(recorded_long) as ds:
        f, grid, n0, n1 = ds.frame(12), ds.grid, ds.nt(10).sum(0), ds.nt(11).sum(0)
    nt = model.predict(f.positions, f.numbers, f.cell, grid)[0]
    assert np.ptp(nt) < 1e-4 * nt.mean()
    assert np.ptp(model.predict_samples(f.positions, f.numbers, f.cell, grid, 2, seed=0).nt_R) < 1e-4 * nt.mean()
    (roll,) = list(model.rollout(n0, n1, 1, seed=0, mode="sample"))
    assert np.ptp(roll[0]) > 0.1 * roll[0].mean()
    (roll_mean,) = list(model.rollout(n0, n1, 1, seed=0, mode="mean"))
    assert np.ptp(roll_mean[0]) < 1e-4 * roll_mean[0].mean()


def test_rollout_gain_corrects_what_rollouts_serve(trained_gldm, recorded_long, tmp_path):
    """Training fits the rollout gain on its own rollouts; with it, the calibration rollouts serve
    the training frames' Fourier amplitudes per shell more closely than without it (in sample: the
    fit on its own chains; BENCHMARKS.md measures held-out rollouts), while the chain itself (what it
    re-encodes) is unchanged; refitting the spectrum or the latent speed drops it."""
    import shutil

    from ase_ldm.core.fourier import reciprocal_grid
    from ase_ldm.core.registry import load
    from ase_ldm.errors import InvalidInput
    from ase_ldm.gldm.calibration import calibrate_latent_speed, calibrate_rollout_spectrum, calibrate_spectrum
    from ase_ldm.gldm.spectrum import spectral_filter

    run = tmp_path / "run"
    shutil.copytree(trained_gldm[0], run)
    meta = json.loads((run / "model.json").read_text())
    gain = meta["spectral_gain"]
    assert len(gain["rollout"]) == len(gain["mean"]) and gain["rollout_fit"]["starts"]
    fit = calibrate_rollout_spectrum(run, recorded_long, chains=2, steps=16, burn_in=2, blocks=3, write=True)
    gain = fit["spectral_gain"]
    first = gain["rollout_fit"]["from_shell"]
    assert first >= 1 and gain["rollout"][:first] == [1.0] * first
    assert json.loads((run / "model.json").read_text())["spectral_gain"] == gain
    model = load(run, device="cpu")
    lo, hi = meta["train_frames"]
    with open_dataset(recorded_long) as ds:
        cell, grid = ds.cell(0), ds.grid
        ref = np.mean([np.abs(np.fft.rfftn(ds.nt(t).sum(0))) for t in range(lo, hi)], 0)
        starts = gain["rollout_fit"]["starts"]
        pairs = [(ds.nt(t - 1).sum(0), ds.nt(t).sum(0)) for t in starts]
    kabs = np.linalg.norm(reciprocal_grid(cell, grid), axis=-1)
    shell = np.rint(kabs / gain["shell_width"]).astype(int)
    inside = (kabs < meta["band_limit"]) & (shell > 0)
    fitted = inside & (shell >= first)

    def served(use_gain):
        out = [f[0] for i, (a, b) in enumerate(pairs)
               for f in list(model.rollout(a, b, 16, sampler="ddim", n_steps=10, seed=i, rollout_gain=use_gain,
                                           hold=False))[2:]]
        return np.mean([np.abs(np.fft.rfftn(x)) for x in out], 0)

    def shell_error(amp):
        d = np.bincount(shell[fitted], amp[fitted]) - np.bincount(shell[fitted], ref[fitted])
        return np.abs(d).sum() / ref[fitted].sum()

    assert shell_error(served(True)) < 0.7 * shell_error(served(False))
    # the same chain: what it yields differs only by the rollout knots (while the positivity clamp
    # is idle: this tiny model's unscaled chains reach it after a few steps)
    a, b = pairs[0]
    x, y = (list(model.rollout(a, b, 3, sampler="ddim", n_steps=10, seed=0, rollout_gain=u, hold=False))[-1][0]
            for u in (True, False))
    assert y.min() > 1e-5 and x.min() > 1e-5 and not np.allclose(x, y, rtol=1e-3)
    g = spectral_filter(gain, "rollout", cell, grid, meta["band_limit"])
    s = spectral_filter(gain, "sample", cell, grid, meta["band_limit"])
    sel = inside & (s > 0.05)
    np.testing.assert_allclose((np.fft.rfftn(x) / np.fft.rfftn(y))[sel], g[sel] / s[sel], rtol=0.01, atol=0.01)
    # mean-mode rollouts never take it
    m = list(model.rollout(a, b, 2, mode="mean"))
    np.testing.assert_array_equal(m[-1], list(model.rollout(a, b, 2, mode="mean", rollout_gain=False))[-1])
    for bad in ({"steps": 0}, {"steps": 4, "burn_in": 4}, {"chains": True}, {"max_frames": 0}, {"blocks": 1},
                {"max_frames": 3, "blocks": 4}, {"seed": -1}, {"max_block_spread": 0}):
        with pytest.raises(InvalidInput, match="steps|burn_in|chains|max_frames|blocks|seed|max_block_spread"):
            calibrate_rollout_spectrum(run, recorded_long, **bad)
    with pytest.raises(InvalidInput, match="rollout_gain"):
        model.rollout(a, b, 2, rollout_gain="yes")
    from ase_ldm.ldm.rollout import rollout_to_datasets

    for mode, served in (("sample", True), ("mean", False)):  # the file records what was served
        (path,) = rollout_to_datasets(run, recorded_long, 10, 2, tmp_path / f"{mode}.h5", n_steps=4, device="cpu",
                                      options={"mode": mode})
        with open_dataset(path) as ds:
            assert bool(ds.attrs["rollout_rollout_gain"]) is served
    # refitting the decoder's gains or the thermostat's target drops the rollout gain fitted on top
    assert load(run, device="cpu").has_rollout_gain
    calibrate_latent_speed(run, recorded_long, write=True)
    assert not load(run, device="cpu").has_rollout_gain
    calibrate_rollout_spectrum(run, recorded_long, chains=2, steps=16, burn_in=2, blocks=3, write=True)
    calibrate_spectrum(run, recorded_long, write=True)
    assert "rollout" not in json.loads((run / "model.json").read_text())["spectral_gain"]
    with pytest.raises(InvalidInput, match="no rollout gain"):
        spectral_filter(json.loads((run / "model.json").read_text())["spectral_gain"], "rollout", cell, grid, 5.0)


def test_hold_keeps_each_chain_at_the_training_spectrum(trained_gldm, recorded_long, tmp_path):
    """The shell-amplitude hold: an exponential moving average per chain and shell, and a
    factor target / average on the held shells only; the target is what it measures on the
    training frames; in a rollout it changes what the chain yields by one factor per shell, never
    the chain, with the given relaxation time (tau = 1 pins every frame at the target)."""
    import shutil

    import torch

    from ase_ldm.core.fourier import reciprocal_grid
    from ase_ldm.core.registry import load
    from ase_ldm.errors import CheckpointError, InvalidInput
    from ase_ldm.gldm.hold import AmplitudeHold, has_hold
    from ase_ldm.gldm.spectrum import check_spectral_gain

    run = tmp_path / "run"
    shutil.copytree(trained_gldm[0], run)
    meta = json.loads((run / "model.json").read_text())
    gain, limit = meta["spectral_gain"], meta["band_limit"]
    assert has_hold(gain) and gain["rollout_fit"]["hold_steps"] >= 1
    first, target = gain["rollout_fit"]["from_shell"], np.asarray(gain["rollout_fit"]["target"])
    with open_dataset(recorded_long) as ds:
        cell, grid = ds.cell(0), ds.grid
        xs = np.stack([ds.nt(t).sum(0) for t in (3, 7, 12)]).astype(np.float64)
    kabs = np.linalg.norm(reciprocal_grid(cell, grid), axis=-1)
    shell = np.rint(kabs / gain["shell_width"]).astype(int)
    controlled = (shell >= first) & (shell < first + len(target))

    assert grid[2] % 2 == 0

    def amplitudes(X):  # relative mean amplitude per shell of one spectrum (numpy, band weights)
        w = np.broadcast_to(np.r_[1.0, np.full(grid[2] // 2 - 1, 2.0), 1.0], X.shape) * (kabs < limit)
        return np.bincount(shell.ravel(), (w * np.abs(X)).ravel()) / np.maximum(
            np.bincount(shell.ravel(), w.ravel()), 1e-300) / abs(X.flat[0])

    X = torch.fft.rfftn(torch.as_tensor(xs[:2]), dim=(-3, -2, -1))
    fb = AmplitudeHold(gain, cell, grid, limit, tau=3.0)
    np.testing.assert_allclose(fb.shell_amplitudes(X)[0].numpy(), amplitudes(X[0].numpy()), rtol=1e-10)
    Y = fb(X).numpy()
    a0 = np.stack([amplitudes(x) for x in X.numpy()])
    for b in range(2):  # the first step: the average is the chain's own amplitude, each chain its own factor
        np.testing.assert_allclose(amplitudes(Y[b])[first:first + len(target)], target, rtol=1e-9)
        np.testing.assert_array_equal(Y[b][~controlled], X[b].numpy()[~controlled])
    X2 = torch.fft.rfftn(torch.as_tensor(xs[1:]), dim=(-3, -2, -1))
    Y2 = fb(X2).numpy()
    m = a0 + (np.stack([amplitudes(x) for x in X2.numpy()]) - a0) / 3.0
    sel = slice(first, first + len(target))
    for b in range(2):  # the second: the factor is target / (moving average), shell by shell
        np.testing.assert_allclose(amplitudes(Y2[b])[sel], amplitudes(X2[b].numpy())[sel] * target / m[b][sel],
                                   rtol=1e-9)

    # the target is what the hold measures on the training frames the calibration read
    lo, hi = meta["train_frames"]
    with open_dataset(recorded_long) as ds:
        ref = [ds.nt(int(t)).sum(0) for t in np.unique(np.linspace(lo, hi - 1, min(180, hi - lo)).round())]
    assert len(ref) == gain["rollout_fit"]["reference_frames"]
    measured = fb.shell_amplitudes(torch.fft.rfftn(torch.as_tensor(np.stack(ref), dtype=torch.float64),
                                                   dim=(-3, -2, -1))).mean(0).numpy()
    np.testing.assert_allclose(measured[sel], target, rtol=1e-5)

    # in a rollout: the same chain, one factor per held shell, the moving average with the given tau
    model = load(run, device="cpu")
    assert model.hold_steps == gain["rollout_fit"]["hold_steps"]
    with open_dataset(recorded_long) as ds:
        a, b = ds.nt(9).sum(0), ds.nt(10).sum(0)
    off = list(model.rollout(a, b, 3, sampler="ddim", n_steps=10, seed=0, hold=False))
    a_off = np.stack([amplitudes(np.fft.rfftn(y[0].astype(np.float64)))[sel] for y in off])
    # this tiny model's chains lack short-wavelength amplitude (the factor would sit at its cap of
    # 4): give it a target within reach, 1.5x its first frame's
    held = dict(meta, spectral_gain={**gain, "rollout_fit": {**gain["rollout_fit"],
                                                             "target": (1.5 * a_off[0]).tolist()}})
    (run / "model.json").write_text(json.dumps(held))
    model = load(run, device="cpu")
    r = 1.5 * a_off[0]
    outs = {tau: list(model.rollout(a, b, 3, sampler="ddim", n_steps=10, seed=0, hold=tau))
            for tau in (True, 1.0, 3.0)}
    m = a_off[0]
    for t, y in enumerate(off):
        m = m + (a_off[t] - m) / 3.0 if t else m
        Fy = np.fft.rfftn(y[0].astype(np.float64))
        for tau, want in ((1.0, np.minimum(r, 4 * a_off[t])), (3.0, a_off[t] * np.minimum(r / m, 4))):
            x = outs[tau][t][0]
            assert min(x.min(), y.min()) > 1e-5  # the positivity clamp is idle
            Fx = np.fft.rfftn(x.astype(np.float64))
            np.testing.assert_allclose(Fx[~controlled & (kabs < limit)], Fy[~controlled & (kabs < limit)],
                                       rtol=1e-4, atol=1e-6 * abs(Fy.flat[0]))
            ratio, checked = np.abs(Fx / Fy), 0
            for s_ in range(first, first + len(target)):  # one factor per shell (where float32 resolves it)
                sel_s = controlled & (shell == s_) & (np.abs(Fy) > 1e-5 * abs(Fy.flat[0]))
                if sel_s.any():
                    assert np.ptp(ratio[sel_s]) < 1e-2 * ratio[sel_s].mean()
                    checked += 1
            assert checked >= 1
            np.testing.assert_allclose(amplitudes(Fx)[sel], want, rtol=1e-4, atol=1e-8)  # float32 storage
    np.testing.assert_array_equal(outs[True][0], outs[3.0][0])  # tau acts from the second step on
    assert not np.allclose(outs[True][2], outs[3.0][2], rtol=1e-5)
    assert not np.allclose(outs[True][2], off[2], rtol=1e-3)
    with pytest.raises(InvalidInput, match="another grid"):
        AmplitudeHold(held["spectral_gain"], 2 * cell, grid, limit, 3.0)
    for bad in ({"rollout_fit": "target"}, {"rollout_fit": {**gain["rollout_fit"], "target": ["x"]}},
                {"rollout_fit": {**gain["rollout_fit"], "from_shell": 0}}):
        with pytest.raises(CheckpointError):
            AmplitudeHold({**gain, **bad}, cell, grid, limit, 3.0)
    # only with the rollout gain; bad relaxation times and damaged targets are refused
    np.testing.assert_array_equal(list(model.rollout(a, b, 2, seed=0, rollout_gain=False))[-1],
                                  list(model.rollout(a, b, 2, seed=0, rollout_gain=False, hold=False))[-1])
    with pytest.raises(InvalidInput, match="rollout gain"):
        model.rollout(a, b, 2, rollout_gain=False, hold=5.0)
    for bad in (0.5, "10", float("nan")):
        with pytest.raises(InvalidInput, match="hold"):
            model.rollout(a, b, 2, hold=bad)
    for fit in ({"target": [1.0, -2.0]}, {"target": []}, {"hold_steps": 0}, {"hold_steps": None},
                {"target": [0.1] * 99}, {"target": [1.5] * len(target)}):
        with pytest.raises(CheckpointError, match="calibrate_rollout_spectrum"):
            check_spectral_gain({**gain, "rollout_fit": {**gain["rollout_fit"], **fit}})
    from ase_ldm.ldm.rollout import rollout_to_datasets

    for options, served in (({}, model.hold_steps), ({"hold": 4.0}, 4.0), ({"hold": False}, "none"),
                            ({"rollout_gain": False}, "none")):  # the file records what was served
        (path,) = rollout_to_datasets(run, recorded_long, 10, 1, tmp_path / "fb.h5", n_steps=4, device="cpu",
                                      options=options, overwrite=True)
        with open_dataset(path) as ds:
            assert ds.attrs["rollout_hold"] == served
    # a model.json written before the hold (no target) rolls out without it
    old = {**gain, "rollout_fit": {k: v for k, v in gain["rollout_fit"].items()
                                   if k not in ("target", "hold_steps")}}
    (run / "model.json").write_text(json.dumps({**meta, "spectral_gain": old}))
    model = load(run, device="cpu")
    assert model.hold_steps is None
    np.testing.assert_array_equal(list(model.rollout(a, b, 2, n_steps=10, seed=0))[-1], off[1])
    # and so does one without a band limit (the hold acts inside the band)
    (run / "model.json").write_text(json.dumps({**held, "band_limit": None}))
    assert load(run, device="cpu").hold_steps is None
    with pytest.raises(InvalidInput, match="no amplitude-hold target"):
        model.rollout(a, b, 2, hold=5.0)


def meta_src_gain(run):
    """The spectral gain in the model.json of run."""
    return json.loads((run / "model.json").read_text())["spectral_gain"]


def test_finetune_with_self_rollout(recorded_long, trained_gldm, tmp_path, monkeypatch):
    """finetune: the new run starts from the source's whole model (latent statistics included) and
    trains only the denoiser; with self_rollout, part of each batch's newest history is replaced
    by the model's own served, re-encoded prediction of that step."""
    import dataclasses
    import hashlib
    import shutil

    from safetensors.torch import load_file, save_file

    import ase_ldm.gldm.training as training
    from ase_ldm.errors import InvalidInput

    src, _ = trained_gldm
    run = tmp_path / "src"
    shutil.copytree(src, run)
    # distinct latent statistics in the source: a fine-tune must keep them, not recompute them
    wfile = next(run.glob("weights-*.safetensors"))
    w = load_file(str(wfile))
    w["z_mean"], w["z_std"] = w["z_mean"] + 0.25, w["z_std"] * 1.5
    save_file(w, str(wfile))
    meta = json.loads((run / "model.json").read_text())
    meta["files"]["weights_sha256"] = hashlib.sha256(wfile.read_bytes()).hexdigest()
    (run / "model.json").write_text(json.dumps(meta))
    replaced = []
    original = training._push_forward

    def spy(model, data, u, prior, g, b, *args):
        before = b["past"].clone()
        original(model, data, u, prior, g, b, *args)
        changed = (b["past"] != before).flatten(2).any(-1)  # (B, H)
        assert not changed[:, 1:].any()  # only the newest entry is the model's own
        replaced.append(int(changed[:, 0].sum()))

    monkeypatch.setattr(training, "_push_forward", spy)
    cfg = tiny_gldm_config(denoiser_steps=4, self_rollout=0.9, drop_history=0.0, rollout_calibration_steps=0)
    out = training.train_gldm(recorded_long, tmp_path / "ft", cfg, progress=False, finetune=run)
    assert [r["stage"] for r in out["history"]] == ["denoiser"] and sum(replaced) > 0
    meta = json.loads((tmp_path / "ft" / "model.json").read_text())
    assert meta["finetuned_from"] == str(run) and "spectral_gain" in meta and "spread_scale" in meta
    # the source's rollout gain was fitted on the source's chains: the fine-tune does not inherit it
    assert "rollout" in meta_src_gain(run) and "rollout" not in meta["spectral_gain"]
    a = load_file(str(next(run.glob("weights-*.safetensors"))))
    b = load_file(str(next((tmp_path / "ft").glob("weights-*.safetensors"))))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("autoencoder.") or k in ("z_mean", "z_std"))
    assert not torch.equal(a["denoiser.out.weight"], b["denoiser.out.weight"])
    other = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, denoiser=dataclasses.replace(cfg.model.denoiser, base="previous")))
    with pytest.raises(InvalidInput, match="fine-tune keeps the model"):
        training.train_gldm(recorded_long, tmp_path / "x", other, progress=False, finetune=run)
    with pytest.raises(InvalidInput, match="not both"):
        training.train_gldm(recorded_long, tmp_path / "y", cfg, progress=False, finetune=run, init_autoencoder=run)
    with pytest.raises(InvalidInput, match="self_rollout"):
        training.train_gldm(recorded_long, tmp_path / "z", tiny_gldm_config(self_rollout=1.0), progress=False)
    with pytest.raises(InvalidInput, match="another split"):  # the source's validation frames would leak
        training.train_gldm(recorded_long, tmp_path / "s", tiny_gldm_config(test_fraction=0.4), progress=False,
                            finetune=run)
    with pytest.raises(InvalidInput, match="no denoiser yet"):
        ae_only = tmp_path / "ae_only"
        training.train_gldm(recorded_long, ae_only, tiny_gldm_config(), progress=False, stop_after=20)
        training.train_gldm(recorded_long, tmp_path / "t", cfg, progress=False, finetune=ae_only)


def test_latent_thermostat(trained_gldm, recorded_long, tmp_path):
    """The rollout's thermostat: Berendsen rescaling of each step's latent change toward the
    training data's RMS latent speed, which training calibrates; refused without a calibration."""
    import shutil

    from ase_ldm.core.registry import load
    from ase_ldm.errors import InvalidInput
    from ase_ldm.gldm.calibration import calibrate_latent_speed
    from ase_ldm.gldm.predictor import thermostatted

    torch.manual_seed(0)
    last, v = torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4)
    v[1] *= 5
    rms = lambda x: x.pow(2).mean(dim=(1, 2, 3, 4)).sqrt()  # noqa: E731
    torch.testing.assert_close(rms(thermostatted(last + v, last, 0.3, 1.0) - last), torch.full((2,), 0.3))
    slow = rms(thermostatted(last + v, last, 0.3, 4.0) - last)  # tau 4: a quarter of the way (in s^2)
    torch.testing.assert_close(slow ** 2, rms(v) ** 2 + (0.3 ** 2 - rms(v) ** 2) / 4)

    run = tmp_path / "run"
    shutil.copytree(trained_gldm[0], run)
    meta = json.loads((run / "model.json").read_text())
    model = load(run, device="cpu")
    with open_dataset(recorded_long) as ds:
        lo, hi = meta["train_frames"]
        with torch.no_grad():
            u = model.model.encode(torch.as_tensor(ds.nt_range(lo, hi).sum(1), dtype=torch.float32))
        n0, n1 = ds.nt(10).sum(0), ds.nt(11).sum(0)
    assert meta["latent_speed"] == pytest.approx(float(rms(u[1:] - u[:-1]).mean()), rel=1e-5)
    assert calibrate_latent_speed(run, recorded_long)["latent_speed"] == pytest.approx(meta["latent_speed"])
    on = np.concatenate(list(model.rollout(n0, n1, 3, seed=0)))
    off = np.concatenate(list(model.rollout(n0, n1, 3, seed=0, thermostat=None)))
    assert on.shape == off.shape == (3, *n0.shape) and not np.allclose(on, off)
    for bad in (0.5, True, "fast"):
        with pytest.raises(InvalidInput, match="thermostat"):
            model.rollout(n0, n1, 3, thermostat=bad)
    del meta["latent_speed"]
    (run / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InvalidInput, match="latent_speed"):
        load(run, device="cpu").rollout(n0, n1, 3)
    assert len(list(load(run, device="cpu").rollout(n0, n1, 2, thermostat=None))) == 2


def test_rollout_cli_thermostat(trained_gldm, recorded_long, tmp_path):
    """ase-ldm rollout of a grid-latent model: thermostatted and served through the rollout gain and
    its amplitude hold by default; --thermostat TAU, --no-thermostat, --no-rollout-gain, --no-hold
    and --hold-steps change what it writes, and the choice is stored with the output."""
    from ase_ldm.cli.main import main

    run, _ = trained_gldm
    tau_hold = json.loads((run / "model.json").read_text())["spectral_gain"]["rollout_fit"]["hold_steps"]
    outs = {}
    for name, extra in (("default", []), ("tau2", ["--thermostat", "2"]), ("off", ["--no-thermostat"]),
                        ("plain", ["--no-rollout-gain"]), ("nofb", ["--no-hold"]),
                        ("fb3", ["--hold-steps", "3"])):
        out = tmp_path / f"{name}.h5"
        assert main(["rollout", str(run), "--init", str(recorded_long), "--frame", "10", "--steps", "3",
                     "--sampler-steps", "4", "-o", str(out), *extra]) == 0
        with open_dataset(out) as ds:
            outs[name] = np.stack([ds.nt(i) for i in range(len(ds))])
            want = {"tau2": 2.0, "off": "none"}.get(name, 1.0)
            assert ds.attrs["rollout_thermostat"] == want
            assert bool(ds.attrs["rollout_rollout_gain"]) == (name != "plain")
            want = {"plain": "none", "nofb": "none", "fb3": 3.0}.get(name, tau_hold)
            assert ds.attrs["rollout_hold"] == want
    assert outs["default"].shape == (3, 1, *outs["off"].shape[2:])
    for other in ("off", "tau2", "plain", "nofb"):
        assert not np.allclose(outs["default"], outs[other]), other
    # (here the tiny model's factor sits at its cap of 4 whatever the relaxation time; the relaxation
    # time's effect is checked in test_hold_keeps_each_chain_at_the_training_spectrum)
    for bad in (["--thermostat", "0.5"], ["--hold-steps", "0.5"], ["--no-rollout-gain", "--hold-steps", "3"]):
        assert main(["rollout", str(run), "--init", str(recorded_long), "--frame", "10", "--steps", "1",
                     *bad, "-o", str(tmp_path / "bad.h5")]) == 2
        assert not (tmp_path / "bad.h5").exists()


def test_damaged_calibrations_and_sources_are_refused(trained_gldm, recorded_long, recorded, tmp_path):
    """Damaged spectral_gain or latent_speed are refused at load time; calibrations refuse another
    dataset and empty frame counts; a fine-tune refuses a source whose weights do not match its
    model.json before it writes anything; a rollout needs whole, positive steps."""
    import shutil

    from ase_ldm.core.registry import load
    from ase_ldm.errors import CheckpointError, InvalidInput
    from ase_ldm.gldm.calibration import (
        calibrate_latent_speed,
        calibrate_rollout_spectrum,
        calibrate_spectrum,
        calibrate_spread,
    )
    from ase_ldm.gldm.training import train_gldm

    src, _ = trained_gldm
    meta0 = json.loads((src / "model.json").read_text())
    gain = meta0["spectral_gain"]
    n = len(gain["mean"])
    damaged = [("latent_speed", float("inf")), ("latent_speed", True), ("latent_speed", 1e308), ("latent_speed", -1.0),
               ("latent_speed", "fast"), ("spectral_gain", {**gain, "sample": [-1.0] * n}),
               ("spectral_gain", {**gain, "mean": gain["mean"][:-1]}), ("spectral_gain", {**gain, "shell_width": True}),
               ("spectral_gain", {**gain, "rollout": [-1.0] * n}),
               ("spectral_gain", {**gain, "rollout": gain["mean"][:-1]}),
               ("spectral_gain", {**gain, "rollout": [1e300] * n}),
               ("spectral_gain", {k: v for k, v in gain.items() if k != "rollout"}),  # a fit without knots
               ("spectral_gain", [1.0, 2.0])]
    for i, (key, value) in enumerate(damaged):
        run = tmp_path / f"d{i}"
        shutil.copytree(src, run)
        (run / "model.json").write_text(json.dumps({**meta0, key: value}))
        with pytest.raises(CheckpointError, match=key):
            load(run, device="cpu")
    # a damaged rollout gain is refitted by the calibration its error names
    run = tmp_path / "repair"
    shutil.copytree(src, run)
    (run / "model.json").write_text(json.dumps({**meta0, "spectral_gain": {**gain, "rollout": [float("nan")] * n}}))
    with pytest.raises(CheckpointError, match="calibrate_rollout_spectrum"):
        load(run, device="cpu")
    calibrate_rollout_spectrum(run, recorded_long, chains=np.int64(2), steps=np.int64(8), burn_in=2, blocks=3,
                               write=True)
    assert load(run, device="cpu").has_rollout_gain
    with pytest.raises(InvalidInput, match="chains"):
        calibrate_rollout_spectrum(run, recorded_long, chains=10 ** 6, write=True)
    run = tmp_path / "ok"
    shutil.copytree(src, run)
    before = (run / "model.json").read_text()
    for fit in (calibrate_spectrum, calibrate_latent_speed, calibrate_spread):
        with pytest.raises(InvalidInput, match="is not the dataset"):
            fit(run, recorded, write=True)
    for fit in (calibrate_spectrum, calibrate_spread):
        with pytest.raises(InvalidInput, match="max_frames"):
            fit(run, recorded_long, max_frames=0, write=True)
    assert (run / "model.json").read_text() == before
    with open_dataset(recorded_long) as ds:
        n0, n1 = ds.nt(10).sum(0), ds.nt(11).sum(0)
    for steps in (0, -1, 2.5, True):
        with pytest.raises(InvalidInput, match="steps"):
            load(run, device="cpu").rollout(n0, n1, steps)
    # a source whose weights were changed after its model.json was written
    wfile = next(run.glob("weights-*.safetensors"))
    blob = bytearray(wfile.read_bytes())
    blob[-8:] = bytes(8)
    wfile.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError):
        train_gldm(recorded_long, tmp_path / "ft", tiny_gldm_config(denoiser_steps=4), progress=False, finetune=run)
    assert not (tmp_path / "ft").exists()
