"""Checkpoints (ase_ldm.core.checkpoint): files, loading, and refusal of damaged or hostile run directories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ase_ldm import load_model
from ase_ldm.data import open_dataset
from ase_ldm.errors import CheckpointError


def test_checkpoint_files_and_loading(trained, synthetic_long):
    run, hist = trained
    meta = json.loads((run / "model.json").read_text())
    assert meta["format_version"] == 1 and meta["grid"] == [12, 12, 12] and meta["numbers"] == [3, 3]
    assert meta["timestep_fs"] == 2.0 and meta["files"]["weights"].endswith(".safetensors")
    assert {"mu", "sigma", "dt_fs", "dot_scale"} <= set(meta["transform"])
    assert len(hist) == 4 and "test_recon_rel_l1" in hist[-1]
    assert len(list(run.glob("weights-*.safetensors"))) == 1  # old checkpoints removed
    sur = load_model(run, device="cpu")
    with open_dataset(synthetic_long) as ds:
        n_prev, n = ds.nt(8), ds.nt(9)
    outs = list(sur.rollout(n_prev, n, steps=3, samples=2, seed=5))
    assert len(outs) == 3 and outs[0].shape == (2, 12, 12, 12)
    count = n.sum() * sur.dV
    np.testing.assert_allclose(outs[-1].sum(axis=(1, 2, 3)) * sur.dV, count, rtol=1e-6)
    again = list(sur.rollout(n_prev, n, steps=3, samples=2, seed=5))
    np.testing.assert_array_equal(again[-1], outs[-1])  # seedable
    with pytest.raises(ValueError, match="grid"):
        sur.encode(np.ones((10, 10, 10)), np.ones((10, 10, 10)))


@pytest.mark.parametrize("damage", ["tampered", "truncated", "version", "missing", "shape"])
def test_bad_checkpoints_are_refused(trained, tmp_path, damage):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained[0], run)
    meta_path = run / "model.json"
    meta = json.loads(meta_path.read_text())
    weights = run / meta["files"]["weights"]
    match = {"tampered": "checksum", "truncated": "checksum", "version": "format version", "missing": "missing",
             "shape": "do not fit"}[damage]
    if damage == "tampered":
        data = bytearray(weights.read_bytes())
        data[-5] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "version":
        meta["format_version"] = 99
        meta_path.write_text(json.dumps(meta))
    elif damage == "missing":
        weights.unlink()
    elif damage == "shape":
        meta["model_config"]["autoencoder"]["latent_dim"] = 17
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=match):
        load_model(run, device="cpu")


def test_truncated_json_and_pickle_free_train_state(trained, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained[0], run)
    text = (run / "model.json").read_text()
    (run / "model.json").write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="truncated JSON"):
        load_model(run, device="cpu")
    state_file = next(trained[0].glob("train_state-*.pt"))
    state = torch.load(state_file, weights_only=True)  # no code objects inside
    assert {"optimizer", "scheduler", "generator"} <= set(state)
