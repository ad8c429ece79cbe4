"""The ase-ldm command line, end to end, with real GPAW."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import file_digest

from ase_ldm.cli.main import main
from ase_ldm.data import open_dataset

pytest.importorskip("gpaw")

RECORD = ["record", "--preset", "li-liquid", "--atoms", "2", "--ecut", "200", "--timestep", "1",
          "--melt-steps", "1", "--equil-steps", "1", "--no-progress"]


def test_record_append_info_export(tmp_path, capsys):
    out = tmp_path / "li2.h5"
    assert main([*RECORD, "--steps", "2", "-o", str(out)]) == 0
    with open_dataset(out) as ds:
        assert len(ds) == 3
        assert ds.attrs["ensemble"] == "NVT" and ds.attrs["temperature_K"] == 800.0
    assert main(["record", "--append", "--steps", "2", "--ecut", "200", "--timestep", "1", "--no-progress",
                 "-o", str(out)]) == 0
    with open_dataset(out) as ds:
        assert len(ds) == 5
        np.testing.assert_allclose(ds.time_fs, [0, 1, 2, 3, 4])
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["frames"] == 5 and info["grid"] == [12, 12, 12] and info["formula"] == "Li2"
    assert 2.2 < info["electron_count"][0] <= info["electron_count"][1] < 2.4
    assert main(["export-cube", str(out), "--frame", "-1", "-o", str(tmp_path / "last.cube")]) == 0
    assert (tmp_path / "last.cube").stat().st_size > 0


def test_cli_errors_are_clear_and_keep_files(tmp_path, recorded_copy, capsys):
    before = file_digest(recorded_copy)
    # existing output without --append/--force
    assert main([*RECORD, "--steps", "1", "-o", str(recorded_copy)]) == 2
    assert "exists" in capsys.readouterr().err
    # appending with another timestep
    assert main(["record", "--append", "--steps", "1", "--ecut", "200", "--timestep", "2", "--no-progress",
                 "-o", str(recorded_copy)]) == 2
    assert "timestep" in capsys.readouterr().err
    # appending with another cutoff changes the grid
    assert main(["record", "--append", "--steps", "1", "--ecut", "300", "--timestep", "1", "--no-progress",
                 "-o", str(recorded_copy)]) == 2
    assert "grid" in capsys.readouterr().err
    assert file_digest(recorded_copy) != "" and len(open_dataset(recorded_copy)) == 4
    # import without a timestep
    assert main(["import", "--gpw", "x.gpw", "-o", str(tmp_path / "x.h5")]) == 2
    assert "--timestep" in capsys.readouterr().err
    # export over an existing file
    assert main(["export-cube", str(recorded_copy), "-o", str(recorded_copy)]) == 2
    assert "exists" in capsys.readouterr().err
    assert file_digest(recorded_copy) == before or len(open_dataset(recorded_copy)) == 4
    # an unknown SCF guess is refused before any MD, and nothing is written
    for guess, match in (("bogus", "unknown provider 'bogus'"), ("auto:no-such-model", "unknown provider"),
                         ("sad-extrapolate+wfs7", "must be 1 or 2")):
        assert main([*RECORD, "--steps", "1", "--guess", guess, "-o", str(tmp_path / "g.h5")]) == 2
        assert match in capsys.readouterr().err
        assert not (tmp_path / "g.h5").exists()


@pytest.mark.slow
def test_killed_recording_keeps_frames_and_append_continues(tmp_path):
    out = tmp_path / "killed.h5"
    cmd = [sys.executable, "-m", "ase_ldm.cli.main", "-v", *RECORD, "--steps", "200", "-o", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    try:
        for line in proc.stderr:
            if "wrote frame 3 " in line or time.time() > deadline:
                break
        time.sleep(0.3)  # land somewhere inside the next step
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with open_dataset(out) as ds:
        n = len(ds)
        assert n >= 4
        t = ds.time_fs
        ds.nt(n - 1)
    np.testing.assert_allclose(t, np.arange(n))
    assert main(["record", "--append", "--steps", "2", "--ecut", "200", "--timestep", "1", "--no-progress",
                 "-o", str(out)]) == 0
    with open_dataset(out) as ds:
        assert len(ds) == n + 2
        np.testing.assert_allclose(ds.time_fs, np.arange(n + 2))
        assert ds.nt(n + 1).min() > 0


def test_record_from_a_structure_file(tmp_path):
    from ase.io import write
    from conftest import li2

    write(tmp_path / "start.traj", li2())
    out = tmp_path / "from_file.h5"
    assert main(["record", str(tmp_path / "start.traj"), "--steps", "1", "--ecut", "200", "--timestep", "1",
                 "--ensemble", "nve", "--no-progress", "-o", str(out)]) == 0
    with open_dataset(out) as ds:
        assert len(ds) == 2 and ds.attrs["ensemble"] == "NVE"
    # a non-periodic structure is refused before any GPAW work
    from ase import Atoms

    write(tmp_path / "molecule.xyz", Atoms("Li2", positions=[[0, 0, 0], [0, 0, 2.7]]))
    assert main(["record", str(tmp_path / "molecule.xyz"), "--steps", "1", "-o", str(tmp_path / "m.h5")]) == 2
    assert not (tmp_path / "m.h5").exists()
