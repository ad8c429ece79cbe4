"""Training the synchronised model (ase_ldm.sync.training, ase_ldm.sync.series): checkpoints, resume, packs, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_sync_config


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


def test_pack_roundtrip(trained_sync, synthetic_long, tmp_path):
    from ase_ldm.data import open_dataset
    from ase_ldm.sync.predictor import SyncPredictor
    from ase_ldm.sync.series import load_pack, save_pack, series_from_dataset

    prior = SyncPredictor.load(trained_sync[0], device="cpu").prior
    with open_dataset(synthetic_long) as ds:
        series = series_from_dataset(ds, prior)
    save_pack(tmp_path / "p.npz", series, prior, {"timestep_fs": 2.0})
    back, prior2, attrs = load_pack(tmp_path / "p.npz")
    assert prior2 == prior and attrs["timestep_fs"] == 2.0 and back.layout.l_i == ((0, 1, 1, 1, 0),)
    # a pack written before several species (one "ni", one "l_i", no "layout") still loads
    z = dict(np.load(tmp_path / "p.npz"))
    z.pop("layout")
    np.savez(tmp_path / "old.npz", **z, ni=np.array(5), l_i=np.array("[0, 1, 1, 1, 0]"))
    old, _, _ = load_pack(tmp_path / "old.npz")
    assert old.layout == back.layout and torch.equal(old.D, back.D)
    nt = (series.p + series.r).double()
    err = ((back.p + back.r).double() - nt).abs().sum() / nt.abs().sum()
    assert err < 1e-5
    (tmp_path / "bad.npz").write_bytes((tmp_path / "p.npz").read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable sync pack"):
        load_pack(tmp_path / "bad.npz")


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


def test_resume_refuses_another_dataset(synthetic, synthetic_long, tmp_path):
    from ase_ldm.errors import InvalidInput
    from ase_ldm.sync.training import train_sync

    run = tmp_path / "r"
    train_sync(synthetic_long, run, tiny_sync_config(epochs=2), n_train=11, progress=False, stop_after=1)
    with pytest.raises(InvalidInput, match="trains on .*syn_long.h5"):
        train_sync(synthetic, run, None, resume=True, progress=False)
    assert json.loads((run / "model.json").read_text())["epoch"] == 1


def test_training_steps_never_reach_across_trajectories():
    from ase_ldm.sync.series import training_steps

    steps = training_steps([0, 10], n_fit=18, history=3, reverse=True)
    forward = [t for t, rev in steps if not rev]
    backward = [t for t, rev in steps if rev]
    assert forward == [*range(3, 10), *range(13, 18)]
    assert backward == [*range(0, 7), *range(10, 15)]


def test_extra_trajectories_are_trained_on_and_recorded(synthetic, synthetic_long, tmp_path):
    """--extra-data: all frames of another trajectory join the fit frames; validation, the prior
    and resume stay with the main dataset; another time step is refused."""
    from ase_ldm.errors import DatasetError, InvalidInput
    from ase_ldm.sync.training import train_sync

    run = tmp_path / "r"
    train_sync(synthetic_long, run, tiny_sync_config(epochs=2), n_train=11, progress=False, stop_after=1,
               extra_data=[synthetic_long])
    meta = json.loads((run / "model.json").read_text())
    assert meta["extra_data"] == [{"path": str(synthetic_long), "frames": 14}]
    assert meta["train_frames"] == [0, 8] and meta["val_frames"] == [8, 11]
    with pytest.raises(InvalidInput, match="extra trajectories"):
        train_sync(synthetic_long, run, None, resume=True, progress=False, extra_data=[synthetic])
    out = train_sync(synthetic_long, run, None, resume=True, progress=False)  # the run's own extras
    assert out["history"][-1]["epoch"] == 2 and np.isfinite(out["history"][-1]["val_rel_l1"])
    with pytest.raises(DatasetError, match="one time step"):
        train_sync(synthetic_long, tmp_path / "r2", tiny_sync_config(epochs=1), n_train=11, progress=False,
                   extra_data=[synthetic])
