"""ase-ldm scf-bench (ase_ldm.scf.bench)."""

from __future__ import annotations

import pytest

pytest.importorskip("gpaw")
pytestmark = pytest.mark.gpaw


def test_scf_bench_cli(recorded, tmp_path, capsys):
    import json

    from ase_ldm.cli.main import main

    out = tmp_path / "scf.json"
    assert main(["scf-bench", str(recorded), "--frame", "1", "--steps", "2", "--provider", "extrapolate-linear",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())["providers"]
    assert set(r) == {"gpaw", "extrapolate-linear"}
    for p in r.values():
        assert len(p["iterations"]) == 2 and p["seconds_per_step"] > 0
        assert p["max_energy_diff_eV"] < 1e-4 and p["max_force_diff_eV_A"] < 2e-3
    assert "threads" in capsys.readouterr().out


def test_scf_bench_threads_runs_each_provider_in_its_own_process(recorded, tmp_path, monkeypatch):
    """--threads N: every provider runs in a spawned process with N threads for torch, OpenMP and
    BLAS, and the parent's settings are left as they were."""
    import json
    import os

    from ase_ldm.cli.main import main

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    out = tmp_path / "scf.json"
    assert main(["scf-bench", str(recorded), "--frame", "1", "--steps", "1", "--provider", "previous",
                 "--threads", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["threads"] == 1
    for p in res["providers"].values():
        assert p["threads"] == {"torch": 1, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                                "MKL_NUM_THREADS": "1"}
        assert p["max_energy_diff_eV"] < 1e-4
    assert os.environ["OMP_NUM_THREADS"] == "7" and "OPENBLAS_NUM_THREADS" not in os.environ


def test_scf_bench_refuses_a_bad_thread_count(recorded):
    from ase_ldm.errors import InvalidInput
    from ase_ldm.scf.bench import scf_bench

    with pytest.raises(InvalidInput, match="threads"):
        scf_bench(recorded, 1, 1, ["previous"], threads=0)


def test_scf_bench_mode_runs_lcao_on_the_dataset_grid(recorded, tmp_path):
    """--mode lcao: the PW dataset's MD is rerun in LCAO (dzp) on its grid; a +wfsK spec is refused
    before any GPAW work."""
    import json

    from ase_ldm.cli.main import main
    from ase_ldm.errors import UnsupportedSetup
    from ase_ldm.scf.bench import scf_bench

    out = tmp_path / "lcao.json"
    assert main(["scf-bench", str(recorded), "--frame", "1", "--steps", "2", "--provider", "sad-extrapolate",
                 "--mode", "lcao", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["mode"] == "lcao"
    for p in res["providers"].values():
        assert p["max_energy_diff_eV"] < 1e-4 and len(p["iterations"]) == 2
    # the mode really changes: LCAO's dzp basis gives another energy than the dataset's PW(200)
    from ase_ldm.scf.bench import run_provider

    energies = [run_provider(recorded, 1, 0, "gpaw", mode=m)["cold_start"]["energy_eV"] for m in (None, "lcao")]
    assert abs(energies[0] - energies[1]) > 1e-2
    with pytest.raises(UnsupportedSetup, match="LCAO"):
        scf_bench(recorded, 1, 1, ["sad-extrapolate+wfs2"], mode="lcao")


def test_scf_bench_mixer_beta_reaches_gpaw_and_keeps_its_answer(recorded, tmp_path):
    """--mixer-beta sets GPAW's mixer step for every provider (the SCF path changes, the answer
    does not); a step outside (0, 1] is refused before any GPAW work."""
    import json

    import numpy as np

    from ase_ldm.cli.main import main
    from ase_ldm.data.gpaw_io import calculator_from_provenance
    from ase_ldm.data.store import open_dataset
    from ase_ldm.scf.bench import run_provider

    out = tmp_path / "scf.json"
    assert main(["scf-bench", str(recorded), "--frame", "1", "--steps", "2", "--provider", "sad-extrapolate",
                 "--mixer-beta", "0.3", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["mixer_beta"] == 0.3
    for p in doc["providers"].values():
        assert p["max_energy_diff_eV"] < 1e-4
    default = run_provider(recorded, 1, 2, "gpaw")  # GPAW's own mixer: the same answer
    np.testing.assert_allclose(default["energy_eV"], run_provider(recorded, 1, 2, "gpaw", mixer_beta=0.3)["energy_eV"],
                               atol=1e-4)
    with open_dataset(recorded) as ds:
        calc = calculator_from_provenance(ds.attrs, ds.grid, mixer={"beta": 0.3})
    assert calc.params.mixer.todict()["beta"] == 0.3
    assert main(["scf-bench", str(recorded), "--steps", "1", "--mixer-beta", "1.5"]) == 2
