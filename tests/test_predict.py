"""One-step predictions of a whole trajectory (ase_ldm.predict, ase-ldm predict) for every model family."""

from __future__ import annotations

import json

import numpy as np

from ase_ldm.data import open_dataset


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


def test_predict_resume_checks_history_and_accepts_another_path_to_the_same_data(trained_sync, synthetic_long,
                                                                                 tmp_path, monkeypatch, capsys):
    from ase_ldm.cli.main import main

    out = tmp_path / "p.h5"
    assert main(["predict", str(trained_sync[0]), "--data", str(synthetic_long), "-o", str(out), "--start", "10",
                 "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["predict", str(trained_sync[0]), "--data", str(synthetic_long), "-o", str(out), "--start", "10",
                 "--device", "cpu", "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err  # not a flag predict lacks (--append)
    assert main(["predict", str(trained_sync[0]), "--data", str(synthetic_long), "-o", str(out), "--start", "10",
                 "--history", "0", "--resume", "--device", "cpu", "--no-progress"]) == 2
    assert "history" in capsys.readouterr().err
    monkeypatch.chdir(synthetic_long.parent)  # the same data under a relative path
    assert main(["predict", str(trained_sync[0]), "--data", synthetic_long.name, "-o", str(out), "--start", "10",
                 "--resume", "--device", "cpu", "--no-progress"]) == 0
    with open_dataset(out) as ds:
        assert len(ds) == 4
