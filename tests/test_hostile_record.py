"""Hostile use of ``ase-ldm record``: appending with other settings, and outputs that cannot be written.

Every refusal must come before GPAW runs: the ``no_gpaw`` fixture makes building a GPAW
calculator fail the test, and refused files must be left exactly as they were.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import file_digest, li2, tiny_settings

from ase_ldm.cli.main import main
from ase_ldm.data import open_dataset
from ase_ldm.errors import DatasetError, InvalidInput

# ``recorded`` (see conftest.py): NVE, 1 fs, 200 eV, 800 K, seed 3, Gamma point, 4 frames
STORED = {"timestep_fs": 1.0, "ecut": 200.0, "temperature_K": 800.0, "ensemble": "nve", "seed": 3}


@pytest.fixture
def no_gpaw(monkeypatch):
    """Fail the test if anything builds a GPAW calculator (a refusal came too late)."""
    import ase_ldm.data.aimd as aimd

    def refuse(*args, **kwargs):
        raise AssertionError("GPAW was started before the refusal")

    monkeypatch.setattr(aimd, "make_gpaw", refuse)


def state(path: Path) -> tuple:
    """What must not change when a command is refused: size, mtime, content, frame count."""
    st = path.stat()
    with open_dataset(path) as ds:
        n = len(ds)
    return st.st_size, st.st_mtime_ns, file_digest(path), n


def refused(argv: list[str], capsys) -> str:
    """Run the CLI, expect exit status 2, and return its one error report."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ase-ldm record: "), err
    assert "Traceback" not in err
    return err


@pytest.fixture
def structure(tmp_path) -> Path:
    from ase.io import write

    path = tmp_path / "start.traj"
    write(path, li2())
    return path


# -- 1. --append must continue the same run ----------------------------------------------------

APPEND = ["record", "--append", "--steps", "1", "--no-progress"]


@pytest.mark.gpaw
@pytest.mark.parametrize("option, name, stored, requested", [
    (["--temperature", "1200"], "temperature_K", "800.0", "1200.0"),
    (["--ensemble", "nvt"], "ensemble", "'nve'", "'nvt'"),
    (["--friction", "0.05"], "friction_per_fs", "0.01", "0.05"),
    (["--timestep", "2"], "timestep_fs", "1.0", "2.0"),
    (["--ecut", "300"], "ecut", "200.0", "300.0"),
    (["--kpts", "2", "2", "2"], "kpts", "[1, 1, 1]", "[2, 2, 2]"),
    (["--gpts", "16", "16", "16"], "gpts", "None", "[16, 16, 16]"),
    (["--interval", "2"], "interval", "1", "2"),
    (["--seed", "7"], "seed", "3", "7"),
    (["--melt-steps", "5"], "melt_steps", "0", "5"),
])
def test_append_refuses_other_settings(recorded_copy, capsys, no_gpaw, option, name, stored, requested):
    before = state(recorded_copy)
    err = refused([*APPEND, *option, "-o", str(recorded_copy)], capsys)
    assert "InvalidInput" in err
    assert f"{name} ({option[0]}): stored {stored}, requested {requested}" in err
    assert "Drop these options" in err and "new file" in err
    assert state(recorded_copy) == before


@pytest.mark.gpaw
def test_append_names_every_differing_setting_and_only_those(recorded_copy, capsys, no_gpaw):
    before = state(recorded_copy)
    err = refused([*APPEND, "--temperature", "1000", "--ensemble", "nvt", "--kpts", "1", "1", "2",
                   "--ecut", "200", "--timestep", "1", "-o", str(recorded_copy)], capsys)
    for line in ("temperature_K (--temperature): stored 800.0, requested 1000.0",
                 "ensemble (--ensemble): stored 'nve', requested 'nvt'",
                 "kpts (--kpts): stored [1, 1, 1], requested [1, 1, 2]"):
        assert line in err
    # the options given with their stored values are not reported
    assert "ecut" not in err and "timestep_fs" not in err
    assert state(recorded_copy) == before


@pytest.mark.gpaw
def test_append_refuses_a_structure_file_or_preset(recorded_copy, structure, capsys, no_gpaw):
    before = state(recorded_copy)
    err = refused(["record", str(structure), *APPEND[1:], "-o", str(recorded_copy)], capsys)
    assert "InvalidInput" in err and str(structure) in err
    assert "continues" in err and "last frame (frame 3, t = 3 fs)" in err
    assert "only accepted if it is that frame" in err and "Drop the structure file" in err
    for preset in (["--preset", "li-liquid"], ["--preset", "li-liquid", "--atoms", "2"], ["--atoms", "2"]):
        err = refused([*APPEND, *preset, "-o", str(recorded_copy)], capsys)
        assert "InvalidInput" in err and "--preset/--atoms" in err and "drop" in err
    assert state(recorded_copy) == before


@pytest.mark.gpaw
def test_append_accepts_the_last_frame_as_structure(recorded_copy, tmp_path, capsys):
    from ase.io import write

    with open_dataset(recorded_copy) as ds:
        write(tmp_path / "last.traj", ds.atoms(-1))
    assert main(["record", str(tmp_path / "last.traj"), *APPEND[1:], "-o", str(recorded_copy)]) == 0
    with open_dataset(recorded_copy) as ds:
        assert len(ds) == 5
        np.testing.assert_allclose(ds.time_fs, [0, 1, 2, 3, 4])


@pytest.mark.gpaw
def test_plain_append_continues_with_the_stored_settings(recorded_copy, tmp_path):
    log = tmp_path / "gpaw.txt"
    log.write_text("earlier log\n")
    # no --timestep/--ensemble/--ecut: the stored 1 fs NVE at 200 eV, not the defaults (2 fs, NVT, 300 eV)
    assert main([*APPEND, "--gpaw-txt", str(log), "-o", str(recorded_copy)]) == 0
    with open_dataset(recorded_copy) as ds:
        assert len(ds) == 5
        np.testing.assert_allclose(ds.time_fs, [0, 1, 2, 3, 4])
        assert ds.attrs["ensemble"] == "NVE" and ds.attrs["aimd_settings"]["ecut"] == 200.0
        assert ds.grid == (12, 12, 12)
    text = log.read_text()
    assert text.startswith("earlier log\n") and len(text) > 100  # the log is continued, not replaced


@pytest.mark.gpaw
def test_run_aimd_refuses_other_settings_or_atoms(recorded_copy, no_gpaw):
    from ase_ldm.data.aimd import run_aimd

    before = state(recorded_copy)
    with pytest.raises(InvalidInput, match=r"temperature_K \(--temperature\): stored 800.0, requested 900.0"):
        run_aimd(None, recorded_copy, tiny_settings(temperature_K=900.0), append=True, progress=False)
    with pytest.raises(InvalidInput, match="only accepted if it is that frame"):
        run_aimd(li2(), recorded_copy, tiny_settings(), append=True, progress=False)
    assert state(recorded_copy) == before


@pytest.mark.gpaw
def test_recorder_refuses_other_dynamics_when_appending(recorded_copy):
    from ase import units
    from ase.md.langevin import Langevin

    from ase_ldm.data import DensityRecorder

    before = state(recorded_copy)[2:]
    atoms = li2()
    dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=1200.0, friction=0.01 / units.fs, fixcm=False)
    with pytest.raises(InvalidInput, match=r"ensemble: stored 'NVE', requested 'NVT'"):
        DensityRecorder(recorded_copy, atoms, dyn, append=True)
    assert state(recorded_copy)[2:] == before
    assert not Path(f"{recorded_copy}.lock").exists()  # the writer it opened was closed


# -- 2. every output is checked before any computation -----------------------------------------

def new_record(structure: Path) -> list[str]:
    return ["record", str(structure), "--steps", "1", "--ecut", "200", "--timestep", "1", "--no-progress"]


@pytest.mark.parametrize("extra", [[], ["--append"], ["--force"]])
def test_missing_output_folder_is_refused_first(tmp_path, structure, capsys, no_gpaw, extra):
    out = tmp_path / "no" / "such" / "folder" / "x.h5"
    err = refused([*new_record(structure), *extra, "-o", str(out)], capsys)
    assert "DatasetError" in err and f"the folder {out.parent} does not exist" in err and "mkdir -p" in err
    assert not out.parent.exists()


def test_preset_with_missing_output_folder_is_refused_first(tmp_path, capsys, no_gpaw):
    out = tmp_path / "missing" / "x.h5"
    err = refused(["record", "--preset", "li-liquid", "--atoms", "2", "--no-progress", "-o", str(out)], capsys)
    assert "DatasetError" in err and "does not exist" in err


def test_output_that_is_a_folder_or_below_a_file_is_refused(tmp_path, structure, capsys, no_gpaw):
    err = refused([*new_record(structure), "--force", "-o", str(tmp_path)], capsys)
    assert "DatasetError" in err and "is a folder" in err
    err = refused([*new_record(structure), "-o", str(structure / "x.h5")], capsys)
    assert "DatasetError" in err and "is not a folder" in err
    assert structure.is_file()


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder no file can be created in, or skip (root ignores permissions)."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    for candidate in (folder, Path("/sys")):
        try:
            fd, probe = tempfile.mkstemp(dir=candidate)
        except OSError:
            return candidate
        os.close(fd)
        os.unlink(probe)
    pytest.skip("no unwritable folder available (running as root)")


def test_unwritable_output_folder_is_refused_first(tmp_path, structure, capsys, no_gpaw):
    folder = _unwritable_folder(tmp_path)
    try:
        err = refused([*new_record(structure), "-o", str(folder / "x.h5")], capsys)
        assert "DatasetError" in err and f"cannot create files in {folder}" in err and "writable" in err
        assert not (folder / "x.h5").exists()
    finally:
        (tmp_path / "readonly").chmod(0o700)


@pytest.mark.gpaw
def test_existing_output_without_append_or_force_is_refused_first(recorded_copy, structure, capsys, no_gpaw):
    before = state(recorded_copy)
    err = refused([*new_record(structure), "-o", str(recorded_copy)], capsys)
    assert "DatasetError" in err and "exists" in err and "--append" in err and "--force" in err
    assert state(recorded_copy) == before


def test_gpaw_log_is_checked_like_the_output(tmp_path, structure, capsys, no_gpaw):
    out = tmp_path / "x.h5"
    err = refused([*new_record(structure), "--gpaw-txt", str(tmp_path / "missing" / "gpaw.txt"),
                   "-o", str(out)], capsys)
    assert "DatasetError" in err and "does not exist" in err and "--gpaw-txt" in err
    log = tmp_path / "gpaw.txt"
    log.write_text("an earlier log\n")
    err = refused([*new_record(structure), "--gpaw-txt", str(log), "-o", str(out)], capsys)
    assert "DatasetError" in err and "exists" in err and "--gpaw-txt" in err
    assert log.read_text() == "an earlier log\n"
    err = refused([*new_record(structure), "--gpaw-txt", str(out), "-o", str(out)], capsys)
    assert "DatasetError" in err and "would overwrite the output dataset" in err
    assert not out.exists()


def test_run_aimd_checks_outputs_first(tmp_path, no_gpaw):
    from ase_ldm.data.aimd import run_aimd

    with pytest.raises(DatasetError, match="does not exist"):
        run_aimd(li2(), tmp_path / "missing" / "x.h5", tiny_settings(), progress=False)
    with pytest.raises(DatasetError, match="does not exist"):
        run_aimd(li2(), tmp_path / "x.h5", tiny_settings(), gpaw_txt=tmp_path / "missing" / "log", progress=False)
    assert not (tmp_path / "x.h5").exists()
