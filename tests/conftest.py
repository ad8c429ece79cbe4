"""Shared fixtures.

* tiny real GPAW systems (Li2, PW(200), Gamma point): ``gpaw_li2``, ``recorded``,
  ``recorded_long`` -- tests that use them are marked ``gpaw`` and skipped where GPAW is absent;
* ``synthetic`` / ``synthetic_long``: small datasets of Gaussian atomic densities that move with
  the atoms (Li2 on GPAW's 12^3 grid of the same cell, with PAW-matrix-shaped D), written
  without GPAW, so the data, model and analysis tests run on any machine (a GPU machine
  without GPAW included). They test the plumbing, not the physics;
* tiny models trained on ``synthetic_long``: ``trained`` (the paper's model) and
  ``trained_sync`` (the synchronised model).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "li16_800K.npz"


def tiny_settings(**kw):
    from ase_ldm.data.aimd import AIMDSettings

    base = dict(steps=3, timestep_fs=1.0, ecut=200.0, temperature_K=800.0, ensemble="nve",
                melt_steps=0, equil_steps=0, seed=3)
    base.update(kw)
    return AIMDSettings(**base)


def li2(rattle: float = 0.05, seed: int = 1):
    from ase_ldm.data.aimd import li_liquid

    atoms = li_liquid(2)
    atoms.rattle(rattle, seed=seed)
    return atoms


@pytest.fixture(scope="session")
def gpaw_li2():
    """A converged GPAW calculator on a rattled Li2 bcc cell."""
    pytest.importorskip("gpaw")
    from ase_ldm.data.aimd import make_gpaw

    atoms = li2()
    atoms.calc = make_gpaw(tiny_settings())
    atoms.get_forces()
    return atoms


@pytest.fixture(scope="session")
def recorded(tmp_path_factory):
    """A 4-frame NVE GPAW trajectory of Li2 (with D, velocities, energy, forces)."""
    pytest.importorskip("gpaw")
    from ase_ldm.data.aimd import run_aimd

    path = tmp_path_factory.mktemp("rec") / "li2.h5"
    run_aimd(li2(), path, tiny_settings(steps=3), progress=False)
    return path


@pytest.fixture
def recorded_copy(recorded, tmp_path):
    """A private copy of :func:`recorded` that a test may modify."""
    import shutil

    dst = tmp_path / "copy.h5"
    shutil.copy(recorded, dst)
    return dst


def file_digest(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def frame_with(frame, **changes):
    """A copy of a Frame with some fields replaced."""
    import dataclasses

    return dataclasses.replace(frame, **changes)


__all__ = ["tiny_settings", "li2", "file_digest", "frame_with", "np", "synthetic_frames", "write_synthetic", "li_prior",
           "random_sync_inputs", "tiny_sync_net"]

#: ase.units.fs (one femtosecond in ASE's time unit), here so that the synthetic data need no ASE
ASE_FS = 0.09822694788464063

#: fixtures that run GPAW: a test that uses one (directly or through another fixture) is marked ``gpaw``
GPAW_FIXTURES = {"gpaw_li2", "recorded", "recorded_long", "recorded_copy"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if GPAW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.gpaw)


def synthetic_frames(n_frames: int, natoms: int = 2, grid: tuple[int, int, int] = (12, 12, 12),
                     a: float = 3.635, dt_fs: float = 2.0, seed: int = 0):
    """Frames of Gaussian atomic densities (1 electron per atom, width 0.7 A, periodic) on a
    cubic cell, the atoms moving on smooth periodic paths, with smooth (1, 5, 5) PAW-shaped
    matrices, velocities, energies and forces. Yields :class:`ase_ldm.data.Frame`."""
    from ase_ldm.data import Frame

    rng = np.random.default_rng(seed)
    cell = np.eye(3) * a
    start = rng.random((natoms, 3)) * a
    amp, freq, phase = rng.normal(0, 0.25, (natoms, 3)), rng.uniform(0.02, 0.05, (natoms, 3)), rng.random((natoms, 3))
    base_D = rng.normal(0, 0.1, (5, 5))
    base_D = base_D + base_D.T + np.diag([1.0, 0.2, 0.2, 0.2, 0.5])
    axes = [np.arange(n) / n * a for n in grid]
    R = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # (N1, N2, N3, 3)
    sigma = 0.7
    for t in range(n_frames):
        arg = 2 * np.pi * (freq * t + phase)
        pos = start + amp * np.sin(arg)
        vel = amp * 2 * np.pi * freq * np.cos(arg) / (dt_fs * ASE_FS)  # Angstrom per ASE time unit
        n = np.full(grid, 1e-3)
        for p in pos:
            d = (R - p + a / 2) % a - a / 2  # minimum image
            n += np.exp(-(d**2).sum(-1) / (2 * sigma**2)) / (2 * np.pi * sigma**2) ** 1.5
        D = [(base_D * (1 + 0.05 * np.sin(2 * np.pi * p / a).sum()))[None] for p in pos]
        yield Frame(nt_sR=n[None].astype(np.float32), positions=pos, cell=cell, numbers=np.full(natoms, 3),
                    time_fs=t * dt_fs, D_asii=D, velocities=vel, energy=float(-1.9 * natoms + 0.01 * np.sin(t)),
                    forces=np.zeros((natoms, 3)))


def write_synthetic(path, n_frames: int, **kw) -> Path:
    """Write :func:`synthetic_frames` as a dataset (attributes as a recording at PW(200) would have)."""
    from ase_ldm.data import DensityWriter

    attrs = {"source": "synthetic test frames (Gaussian atoms, not DFT)", "timestep_fs": kw.get("dt_fs", 2.0),
             "xc": "LDA", "mode": "pw"}
    with DensityWriter(path, attrs=attrs) as w:
        for f in synthetic_frames(n_frames, **kw):
            w.append(f)
    return Path(path)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """A 4-frame synthetic dataset 1 fs apart, shaped like :func:`recorded` (no GPAW needed)."""
    return write_synthetic(tmp_path_factory.mktemp("syn") / "syn.h5", 4, dt_fs=1.0)


@pytest.fixture
def synthetic_copy(synthetic, tmp_path):
    """A private copy of :func:`synthetic` that a test may modify."""
    import shutil

    dst = tmp_path / "copy.h5"
    shutil.copy(synthetic, dst)
    return dst


@pytest.fixture(scope="session")
def synthetic_long(tmp_path_factory):
    """A 14-frame synthetic dataset (enough to train and test a tiny model; no GPAW needed)."""
    return write_synthetic(tmp_path_factory.mktemp("synlong") / "syn_long.h5", 14)


@pytest.fixture(scope="session")
def recorded_long(tmp_path_factory):
    """A 14-frame NVT GPAW trajectory of Li2 (enough frames to train and test a tiny model)."""
    pytest.importorskip("gpaw")
    from ase_ldm.data.aimd import run_aimd

    path = tmp_path_factory.mktemp("reclong") / "li2_long.h5"
    run_aimd(li2(), path, tiny_settings(steps=13, ensemble="nvt", timestep_fs=2.0, temperature_K=1200.0),
             progress=False)
    return path


def guided_md(atoms0, attrs: dict, grid, guess: str, steps: int = 2):
    """NVE MD from ``atoms0`` (its velocities) with GPAW as recorded (``attrs``, ``grid``), every SCF
    started by ``guess`` (a provider name or model path): energies (steps + 1,), forces and the
    number of SCFs that started from the provider's density."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from ase_ldm.data.gpaw_io import calculator_from_provenance
    from ase_ldm.scf.hook import guided_gpaw

    atoms = atoms0.copy()
    atoms.set_velocities(atoms0.get_velocities())
    calc = guided_gpaw(calculator_from_provenance(attrs, grid), guess)
    atoms.calc = calc
    e, f = [atoms.get_potential_energy()], [atoms.get_forces()]
    dyn = VelocityVerlet(atoms, 2.0 * units.fs)
    for _ in range(steps):
        dyn.run(1)
        e.append(atoms.get_potential_energy())
        f.append(atoms.get_forces())
    return np.array(e), np.array(f), calc.guessed_steps


def tiny_train_config(**kw):
    """A model small enough to train in seconds on CPU."""
    from ase_ldm.ldm.config import AutoencoderConfig, DiffusionConfig, LossConfig, ModelConfig, TrainConfig

    model = ModelConfig(autoencoder=AutoencoderConfig(channels=(4, 8, 16), latent_dim=16),
                        diffusion=DiffusionConfig(steps=50, hidden=32, layers=2, embedding_dim=16))
    base = dict(epochs=4, batch_size=4, lr=2e-3, test_fraction=0.25, seed=1, device="cpu", model=model,
                ldm_finetune_steps=50, ldm_finetune_batch=16,
                loss=LossConfig(sjsd_bins=32))
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def trained(synthetic_long, tmp_path_factory):
    """A tiny model trained for 4 epochs on :func:`synthetic_long`: (run_dir, history)."""
    from ase_ldm.ldm.training import train

    run = tmp_path_factory.mktemp("run") / "tiny"
    out = train(synthetic_long, run, tiny_train_config(epochs=4), progress=False)
    return run, out["history"]


def tiny_sync_config(**kw):
    """A synchronised model small enough to train in seconds on CPU."""
    from ase_ldm.sync.config import SyncConfig, SyncTrainConfig

    base = dict(epochs=6, batch_size=4, lr=2e-3, val_frames=3, seed=1, device="cpu", checkpoint_every=1,
                model=SyncConfig(channels=6, dilations=(1, 2), d_hidden=16))
    base.update(kw)
    return SyncTrainConfig(**base)


@pytest.fixture(scope="session")
def trained_sync(synthetic_long, tmp_path_factory):
    """A tiny synchronised model trained on the first 11 frames of :func:`synthetic_long`."""
    from ase_ldm.sync.training import train_sync

    run = tmp_path_factory.mktemp("sync") / "tiny-sync"
    out = train_sync(synthetic_long, run, tiny_sync_config(), n_train=11, progress=False)
    return run, out["history"]


def li_prior():
    """A hand-made radial prior for Li (a Gaussian profile, 1.15 electrons per atom)."""
    from ase_ldm.sync.prior import RadialPrior

    return RadialPrior(numbers=(3,), dg=0.5, profiles=(tuple(1.15 * np.exp(-0.5 * (0.5 * np.arange(40)) ** 2 / 4)),))


def random_sync_inputs(N, Na, seed=0):
    """Random inputs of :class:`~ase_ldm.sync.net.SyncNet` on grid N with Na atoms and full history."""
    import torch

    g = torch.Generator().manual_seed(seed)
    p = 0.05 + 0.01 * torch.rand(1, *N, generator=g)
    return dict(p=p, p_hist=p[:, None].repeat(1, 3, 1, 1, 1) + 1e-3 * torch.rand(1, 3, *N, generator=g),
                r_hist=1e-3 * torch.rand(1, 3, *N, generator=g), h=torch.tensor([3]),
                frac=torch.rand(1, Na, 3, generator=g), species=torch.zeros(Na, dtype=torch.long),
                D_hist=torch.rand(1, 3, Na, 15, generator=g))


def tiny_sync_net(coarsen: int = 1):
    """A small double-precision SyncNet whose zero-initialised heads got random weights."""
    import torch

    from ase_ldm.sync.config import SyncConfig
    from ase_ldm.sync.layout import PAWLayout
    from ase_ldm.sync.net import SyncNet

    torch.manual_seed(0)
    layout = PAWLayout((3,), (5,), ((0, 1, 1, 1, 0),))  # Li: GPAW's PBE setup
    net = SyncNet(SyncConfig(channels=4, dilations=(1, 2), d_hidden=8, coarsen=coarsen), layout).double()
    for m in (net.head, net.d_head[-1]):  # zero-initialised: give them weights so the test sees the CNN
        torch.nn.init.normal_(m.weight, std=0.1)
    return net.eval()


def tiny_gldm_config(**kw):
    """A grid-latent diffusion model small enough to train in seconds on CPU (12^3 grids: 4^3 latents)."""
    from ase_ldm.gldm.config import GldmConfig, GldmTrainConfig, GridAutoencoderConfig, GridDenoiserConfig

    model = GldmConfig(autoencoder=GridAutoencoderConfig(channels=16, blocks=1, latent_channels=8),
                       denoiser=GridDenoiserConfig(channels=8, dilations=(1, 2), steps=20, embedding_dim=8))
    base = dict(ae_epochs=20, ae_batch=2, ae_lr=1e-2, denoiser_steps=12, denoiser_batch=8, checkpoint_every=4, seed=1,
                device="cpu", test_fraction=0.25, rollout_calibration_steps=40, model=model)
    base.update(kw)
    return GldmTrainConfig(**base)


@pytest.fixture(scope="session")
def trained_gldm(recorded_long, tmp_path_factory):
    """A tiny grid-latent diffusion model trained on the real GPAW Li2 trajectory :func:`recorded_long`."""
    from ase_ldm.gldm.training import train_gldm

    run = tmp_path_factory.mktemp("gldm") / "tiny-gldm"
    out = train_gldm(recorded_long, run, tiny_gldm_config(), progress=False)
    return run, out["history"]
