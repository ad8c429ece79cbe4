"""The model registry (ase_ldm.core.registry): names, folders, families, the protocol, shipped models,
and refusal of hostile run directories before anything is allocated or read."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from ase_ldm.core.registry import FAMILIES, DensityModel, load, model_dir, pretrained_names
from ase_ldm.errors import CheckpointError, InvalidInput, ModelMismatch


def test_every_shipped_model_loads_behind_the_protocol():
    names = pretrained_names()
    assert {"li16-800K", "li16-800K-sync"} <= set(names)
    for name in names:
        model = load(name, device="cpu")
        assert isinstance(model, DensityModel)
        assert model.name == name and model.species in ((3,), (3, 14))  # lithium; lithium-silicon
        assert 0 <= model.min_history <= model.max_history
        assert model.timestep_fs == pytest.approx(2.0)


def test_shipped_synchronised_models_agree_from_the_atoms_alone():
    """Each shipped density-and-D model, cold, on a disordered Li16 cell: the reference's electron
    count (18.41 e in nt) and, between models, the cold-start error level (1.5-1.8 %) apart."""
    rng = np.random.default_rng(3)
    cell = np.eye(3) * 7.27
    bcc = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)], float)
    pos = np.concatenate([bcc, bcc + 0.5]) * 3.635 + rng.normal(0, 0.3, (16, 3))
    Z = np.full(16, 3)
    preds = {}
    for name in pretrained_names():
        model = load(name, device="cpu")
        if not model.predicts_D or tuple(model.species) != (3,):  # the lithium models
            continue
        nt, D = model.predict(pos, Z, cell, (30, 30, 30))
        assert np.all(nt > 0) and np.all(np.isfinite(D)) and np.shape(D) == (16, 5, 5)
        assert nt.sum() * 7.27**3 / 30**3 == pytest.approx(18.41, rel=0.01)
        preds[name] = nt
    assert {"li16-800K-sync", "li16-800K-sync-lite"} <= set(preds)
    ref = preds["li16-800K-sync"]
    for nt in preds.values():
        assert np.abs(nt - ref).sum() / ref.sum() < 0.03


def test_pretrained_sync_model_is_a_provider_with_cold_start():
    from ase_ldm.scf.providers import ModelProvider, make_provider

    prov = make_provider("li16-800K-sync")
    assert isinstance(prov, ModelProvider) and prov.cold_start
    ldm = make_provider("li16-800K-paper")
    assert isinstance(ldm, ModelProvider) and not ldm.cold_start  # needs two densities first
    gldm = make_provider("li16-800K")  # the grid-latent model: from the atoms alone
    assert isinstance(gldm, ModelProvider) and gldm.cold_start


def test_both_families_serve_through_the_same_calls(trained, trained_sync, synthetic_long):
    """Observe three converged frames, predict the fourth: the calls are the same for every family."""
    from ase_ldm.data import open_dataset

    with open_dataset(synthetic_long) as ds:
        frames = [ds.frame(i) for i in range(4)]
        grid = ds.grid
    for run in (trained[0], trained_sync[0]):
        model = load(run, device="cpu")
        for f in frames[:3]:
            D = np.stack([d[0] for d in f.D_asii])
            model.observe(f.positions, f.nt_sR[0], D, f.numbers, f.cell)
        nt, D = model.predict(frames[3].positions, frames[3].numbers, frames[3].cell, grid, seed=0)
        assert nt.shape == grid and nt.min() > 0
        assert (D is None) == (not model.predicts_D)
        err = np.abs(nt - frames[3].nt_sR[0]).sum() / frames[3].nt_sR[0].sum()
        assert err < 0.5, f"{run}: rel. L1 {err}"
        with pytest.raises(ModelMismatch):
            model.check_setup(np.array([3, 11]), frames[0].cell, grid)


def test_shipped_name_wins_over_a_local_folder_and_paths_load_folders(trained, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained[0], tmp_path / "li16-800K")
    assert model_dir("li16-800K") == model_dir(str(model_dir("li16-800K")))  # the shipped one
    assert "shipped model" in caplog.text
    assert model_dir("./li16-800K").resolve() == (tmp_path / "li16-800K").resolve()
    assert load("./li16-800K", device="cpu").meta["grid"] == [12, 12, 12]
    with pytest.raises(CheckpointError, match="neither a run directory"):
        model_dir("no-such-model")


def test_unknown_family_and_wrong_family_loaders_are_refused(trained, trained_sync, tmp_path):
    from ase_ldm.ldm.surrogate import DensitySurrogate
    from ase_ldm.sync.predictor import SyncPredictor

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    meta = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**meta, "kind": "gan"}))
    with pytest.raises(CheckpointError, match="unknown model kind 'gan'"):
        load(run)
    assert set(FAMILIES) == {"ldm", "sync", "gldm"}
    with pytest.raises(CheckpointError, match="not a SyncPredictor"):
        SyncPredictor.load(trained[0], device="cpu")
    with pytest.raises(CheckpointError, match="not a DensitySurrogate"):
        DensitySurrogate.load(trained_sync[0], device="cpu")
    with pytest.raises(InvalidInput, match="max_history"):
        load(trained_sync[0], device="cpu", max_history=7)


def _edit(run, **changes):
    meta = json.loads((run / "model.json").read_text())
    meta.update(changes)
    (run / "model.json").write_text(json.dumps(meta))
    return meta


@pytest.mark.parametrize("weights,match", [
    ("/dev/zero", "not a plain file name"),
    ("../../etc/passwd", "not a plain file name"),
    ("..", "not a plain file name"),
    ("subdir", "not a regular file"),
])
def test_weights_entry_must_be_a_regular_file_inside_the_run(trained_sync, tmp_path, weights, match):
    run = tmp_path / "run"
    shutil.copytree(trained_sync[0], run)
    (run / "subdir").mkdir()
    meta = json.loads((run / "model.json").read_text())
    _edit(run, files={**meta["files"], "weights": weights})
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=match):
        load(run, device="cpu")
    assert time.perf_counter() - t0 < 10  # refused, not read


def test_model_json_that_is_not_an_object_or_describes_a_huge_network(trained, trained_sync, tmp_path):
    run = tmp_path / "list"
    shutil.copytree(trained_sync[0], run)
    (run / "model.json").write_text("[1, 2, 3]")
    with pytest.raises(CheckpointError, match="expected a JSON object"):
        load(run)
    big = tmp_path / "big"
    shutil.copytree(trained[0], big)
    _edit(big, grid=[4096, 4096, 4096])  # a 2^36-voxel network: must be refused before allocation
    with pytest.raises(CheckpointError, match="do not fit|describes"):
        load(big, device="cpu")
    wide = tmp_path / "wide"
    shutil.copytree(trained_sync[0], wide)
    meta = json.loads((wide / "model.json").read_text())
    _edit(wide, sync_config={**meta["sync_config"], "channels": 100000})
    with pytest.raises(CheckpointError, match="do not fit|describes"):
        load(wide, device="cpu")
    bad = tmp_path / "bad"
    shutil.copytree(trained_sync[0], bad)
    _edit(bad, sync_config={**meta["sync_config"], "channels": "6"})
    with pytest.raises(CheckpointError, match="channels must be an integer"):
        load(bad, device="cpu")


@pytest.mark.parametrize("family,changes,match", [
    ("ldm", {"kind": ["ldm"]}, "unknown model kind"),
    ("ldm", {"dV": "x"}, "invalid model description"),
    ("ldm", {"timestep_fs": None}, "invalid model description"),
    ("ldm", {"cell": "abc"}, "invalid model description"),
    ("sync", {"grid_spacing": "abc"}, "invalid sync model description"),
    ("sync", {"grid_spacing": [0.3, 0.3]}, "impossible model"),
])
def test_damaged_model_json_fields_are_checkpoint_errors(trained, trained_sync, tmp_path, family, changes, match):
    run = tmp_path / "run"
    shutil.copytree(trained[0] if family == "ldm" else trained_sync[0], run)
    _edit(run, **changes)
    with pytest.raises(CheckpointError, match=match):
        load(run, device="cpu")


def test_network_descriptions_that_cannot_be_built_are_checkpoint_errors(trained, trained_sync, tmp_path):
    run = tmp_path / "ldm"
    shutil.copytree(trained[0], run)
    meta = json.loads((run / "model.json").read_text())
    cfg = meta["model_config"]
    _edit(run, model_config={**cfg, "autoencoder": {**cfg["autoencoder"], "channels": []}})
    with pytest.raises(CheckpointError):
        load(run, device="cpu")
    run = tmp_path / "sync"
    shutil.copytree(trained_sync[0], run)
    meta = json.loads((run / "model.json").read_text())
    _edit(run, sync_config={**meta["sync_config"], "history": 10**6})  # would allocate terabytes
    with pytest.raises(CheckpointError, match="impossible model"):
        load(run, device="cpu")
    _edit(run, sync_config={**meta["sync_config"], "coarsen": 0})  # a grid 0 times coarser
    with pytest.raises(CheckpointError, match="impossible model"):
        load(run, device="cpu")
    with pytest.raises(InvalidInput, match="symmetry_average"):
        load(trained_sync[0], device="cpu", symmetry_averaging=2)
