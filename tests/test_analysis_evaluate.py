"""Baselines and the evaluate command, end to end on a tiny real GPAW trajectory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ase_ldm.analysis.baselines import baseline_frames
from ase_ldm.analysis.evaluate import evaluate
from ase_ldm.cli.main import main
from ase_ldm.data import DatasetError, open_dataset, write_frames

REQUIRED = ["jsd_histogram", "sk_k", "sk_pred", "sk_ref", "sk_rel_error", "rel_l1_mean", "rel_l2_mean",
            "electron_count_drift"]


def test_persistence_baseline_and_evaluate_cli(synthetic, tmp_path, capsys):
    base = tmp_path / "persistence.h5"
    assert main(["baseline", str(synthetic), "--kind", "persistence", "-o", str(base)]) == 0
    with open_dataset(base) as b, open_dataset(synthetic) as r:
        assert len(b) == len(r) - 1
        np.testing.assert_array_equal(b.nt(0), r.nt(0))  # prediction for frame 1 is frame 0
        np.testing.assert_allclose(b.time_fs, r.time_fs[1:])
    out = tmp_path / "report"
    assert main(["evaluate", str(base), "--reference", str(synthetic), "-o", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    for key in REQUIRED:
        assert key in m, key
    assert m["computed"]["pointwise"] and m["computed"]["pointwise_frames"] == 3
    # pointwise errors equal a direct computation
    with open_dataset(synthetic) as r:
        direct = [np.abs(r.nt(t - 1) - r.nt(t)).sum() / r.nt(t).sum() for t in range(1, 4)]
    assert m["rel_l1_mean"] == pytest.approx(np.mean(direct), rel=1e-6)
    assert 0 <= m["jsd_histogram"] < 0.05
    assert len(m["sk_k"]) == len(m["sk_pred"]) == len(m["sk_ref"])
    assert "units" in m and m["units"]["sk_k"] == "1/Angstrom"
    for png in ("histogram.png", "structure_factor.png", "errors_vs_time.png", "autocorrelation.png"):
        assert (out / png).stat().st_size > 1000
    assert list(out.glob("slices_frame*.png"))


def test_extrapolations_beat_persistence_on_md(synthetic, tmp_path):
    errors = {}
    with open_dataset(synthetic) as r:
        for kind in ("persistence", "linear", "quadratic"):
            (f,) = list(baseline_frames(r, kind, start=3))
            errors[kind] = np.abs(f.nt_sR - r.nt(3)).sum() / r.nt(3).sum()
            assert len(f.D_asii) == 2
    assert errors["linear"] < errors["persistence"]


def test_sad_baselines_use_gpaw(recorded, tmp_path):
    pytest.importorskip("gpaw")
    with open_dataset(recorded) as r:
        (sad,) = list(baseline_frames(r, "sad", start=3))
        (sade,) = list(baseline_frames(r, "sad-extrapolate", start=3))
        ref = r.nt(3)
    err_sad = np.abs(sad.nt_sR - ref).sum() / ref.sum()
    err_sade = np.abs(sade.nt_sR - ref).sum() / ref.sum()
    assert 0.01 < err_sad < 0.5  # the free-atom superposition is a rough guess
    assert err_sade < err_sad / 5  # the extrapolated residual fixes most of it


def test_non_corresponding_trajectories_get_statistics_only(synthetic, tmp_path):
    # shift the times: same densities, no frame corresponds
    with open_dataset(synthetic) as r:
        frames = [r.frame(i) for i in range(len(r))]
    shifted = [f.__class__(**{**f.__dict__, "time_fs": f.time_fs + 100.0}) for f in frames[:3]]
    path = tmp_path / "shifted.h5"
    write_frames(path, shifted, {"timestep_fs": 1.0})
    m = evaluate(path, synthetic, tmp_path / "rep", plots=True)
    assert not m["computed"]["pointwise"] and "rel_l1_mean" not in m
    assert m["frames_pred"] == 3 and m["frames_ref"] == 4
    assert m["jsd_histogram"] < 0.05


def test_evaluate_refuses_other_grids(synthetic, tmp_path):
    with open_dataset(synthetic) as r:
        f = r.frame(0)
    other = tmp_path / "other.h5"
    write_frames(other, [f.__class__(**{**f.__dict__, "nt_sR": np.ones((1, 8, 8, 8), np.float32)})])
    with pytest.raises(DatasetError, match="grid"):
        evaluate(other, synthetic)
