"""Training the paper's model (ase_ldm.ldm.training): overfitting, resume, DDP, CLI, calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_train_config

from ase_ldm import load_model
from ase_ldm.cli.main import main
from ase_ldm.data import open_dataset
from ase_ldm.ldm.training import train


def test_tiny_model_overfits_tiny_real_dataset(recorded_long, tmp_path):
    cfg = tiny_train_config(epochs=150, lr=2e-3, checkpoint_every=150)
    hist = train(recorded_long, tmp_path / "overfit", cfg, progress=False)["history"]
    assert hist[-1]["ae"] < 0.05 * hist[0]["ae"]
    sur = load_model(tmp_path / "overfit", device="cpu")
    with open_dataset(recorded_long) as ds:
        n_prev, n = ds.nt(4).sum(0), ds.nt(5).sum(0)
    rec = sur.decode(sur.encode(n_prev, n))[0]
    err = np.abs(rec - n).sum() / n.sum()
    assert err < 0.02, f"reconstruction rel. L1 {err:.4f} on a training frame"


def test_resume_reproduces_the_loss_curve(synthetic_long, tmp_path):
    cfg = tiny_train_config(epochs=4)
    full = train(synthetic_long, tmp_path / "full", cfg, progress=False)["history"]
    half = train(synthetic_long, tmp_path / "half", tiny_train_config(epochs=4), progress=False)
    # simulate a run killed after epoch 2: train 2 epochs with the same config, then resume
    import dataclasses

    two = dataclasses.replace(cfg, epochs=4)
    part = tmp_path / "part"
    from ase_ldm.core import runs as tr

    class Stop(Exception):
        pass

    calls = {"n": 0}
    orig = tr.save_checkpoint

    def save_then_stop(*a, **kw):
        orig(*a, **kw)
        calls["n"] += 1
        if calls["n"] == 2:
            raise Stop

    tr.save_checkpoint = save_then_stop
    try:
        with pytest.raises(Stop):
            train(synthetic_long, part, two, progress=False)
    finally:
        tr.save_checkpoint = orig
    resumed = train(synthetic_long, part, None, resume=True, progress=False)["history"]
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(full, resumed):
        assert a["total"] == pytest.approx(b["total"], rel=1e-6, abs=1e-9)
    assert [r["total"] for r in half["history"]] == [r["total"] for r in full]  # same seed, same curve
    with pytest.raises(ValueError, match="already holds"):
        train(synthetic_long, part, cfg, progress=False)


def test_train_rollout_evaluate_cli(trained, synthetic_long, tmp_path, capsys):
    run, _ = trained
    out = tmp_path / "roll.h5"
    assert main(["rollout", str(run), "--init", str(synthetic_long), "--frame", "10", "--steps", "6",
                 "--samples", "2", "--sampler", "ddim", "--sampler-steps", "5", "-o", str(out)]) == 0
    s0, s1 = tmp_path / "roll-s0.h5", tmp_path / "roll-s1.h5"
    with open_dataset(s0) as a, open_dataset(s1) as b, open_dataset(synthetic_long) as ref:
        assert len(a) == 6 and a.grid == ref.grid
        np.testing.assert_allclose(a.time_fs, ref.time_fs[10] + 2.0 * np.arange(1, 7))
        assert np.abs(a.nt(5) - b.nt(5)).max() > 0  # independent chains
        np.testing.assert_allclose(a.array("positions")[0], ref.frame(11).positions)  # corresponding atoms
    assert main(["rollout", str(run), "--init", str(synthetic_long), "--frame", "10", "--steps", "2",
                 "--sampler", "ddpm", "-o", str(tmp_path / "ddpm.h5")]) == 0
    assert main(["evaluate", str(s0), "--reference", str(synthetic_long), "-o", str(tmp_path / "rep"),
                 "--no-plots"]) == 0
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert m["computed"]["pointwise_frames"] == 3  # frames 11..13 exist in the reference
    capsys.readouterr()
    # refusals: existing output, wrong init dataset, unknown model
    assert main(["rollout", str(run), "--init", str(synthetic_long), "--frame", "10", "--steps", "1",
                 "-o", str(tmp_path / "ddpm.h5")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["rollout", str(tmp_path), "--init", str(synthetic_long), "--frame", "3", "--steps", "1",
                 "-o", str(tmp_path / "x.h5")]) == 2
    assert "pretrained" in capsys.readouterr().err
    # the paper's model has no latent thermostat: the option is refused before anything is written
    assert main(["rollout", str(run), "--init", str(synthetic_long), "--frame", "10", "--steps", "1",
                 "--thermostat", "2", "-o", str(tmp_path / "t.h5")]) == 2
    assert "no option 'thermostat'" in capsys.readouterr().err and not (tmp_path / "t.h5").exists()


@pytest.mark.slow
def test_distributed_training_with_torchrun(synthetic_long, tmp_path):
    """DistributedDataParallel on CPU (gloo): two ranks, rank 0 writes a loadable model."""
    import os
    import subprocess
    import sys
    from dataclasses import asdict

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(asdict(tiny_train_config(epochs=2))))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517"]
    proc = subprocess.run([*torchrun, "-m", "ase_ldm.cli.main", "train", str(synthetic_long), "-o",
                           str(tmp_path / "ddp"), "--config", str(cfg), "--no-progress"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 2") == 1  # only rank 0 reports
    sur = load_model(tmp_path / "ddp", device="cpu")
    assert sur.meta["epoch"] == 2


def test_temperature_calibration_uses_training_frames(trained, synthetic_long, tmp_path):
    import shutil

    from ase_ldm.ldm.calibration import calibrate_temperature

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    out = calibrate_temperature(run, synthetic_long, steps=4, temperatures=(1.0, 0.1), write=True)
    assert out["sampling_temperature"] in (1.0, 0.1) and out["training_frame_change"] > 0
    assert set(out["rollout_frame_change"]) == {"1.0", "0.1"}
    sur = load_model(run, device="cpu")  # model.json still loads, checksum of the weights unchanged
    assert sur.meta["sampling_temperature"] == out["sampling_temperature"]
    with pytest.raises(ValueError, match="outside the training frames"):
        calibrate_temperature(run, synthetic_long, start=12)


def test_resume_refuses_another_dataset(synthetic_long, recorded_long, tmp_path):
    from ase_ldm.errors import InvalidInput

    run = tmp_path / "r"
    train(synthetic_long, run, tiny_train_config(epochs=1, ldm_finetune_steps=0), progress=False)
    with pytest.raises(InvalidInput, match="resume with the same data"):
        train(recorded_long, run, None, resume=True, progress=False)
