"""Shared fixtures: tiny real GPAW systems (Li2 / Li3, PW(200), Gamma point)."""

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


__all__ = ["tiny_settings", "li2", "file_digest", "frame_with", "np"]


@pytest.fixture(scope="session")
def recorded_long(tmp_path_factory):
    """A 14-frame NVT GPAW trajectory of Li2 (enough frames to train and test a tiny model)."""
    pytest.importorskip("gpaw")
    from ase_ldm.data.aimd import run_aimd

    path = tmp_path_factory.mktemp("reclong") / "li2_long.h5"
    run_aimd(li2(), path, tiny_settings(steps=13, ensemble="nvt", timestep_fs=2.0, temperature_K=1200.0),
             progress=False)
    return path


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
def trained(recorded_long, tmp_path_factory):
    """A tiny model trained for 4 epochs on :func:`recorded_long`: (run_dir, history)."""
    from ase_ldm.ldm.training import train

    run = tmp_path_factory.mktemp("run") / "tiny"
    out = train(recorded_long, run, tiny_train_config(epochs=4), progress=False)
    return run, out["history"]


def tiny_sync_config(**kw):
    """A synchronised model small enough to train in seconds on CPU."""
    from ase_ldm.sync.config import SyncConfig, SyncTrainConfig

    base = dict(epochs=6, batch_size=4, lr=2e-3, val_frames=3, seed=1, device="cpu", checkpoint_every=1,
                model=SyncConfig(channels=6, dilations=(1, 2), d_hidden=16))
    base.update(kw)
    return SyncTrainConfig(**base)


@pytest.fixture(scope="session")
def trained_sync(recorded_long, tmp_path_factory):
    """A tiny synchronised model trained on the first 11 frames of :func:`recorded_long`."""
    from ase_ldm.sync.training import train_sync

    run = tmp_path_factory.mktemp("sync") / "tiny-sync"
    out = train_sync(recorded_long, run, tiny_sync_config(), n_train=11, progress=False)
    return run, out["history"]
