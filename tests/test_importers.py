"""Importers and exporters: cube + trajectory, .gpw, the reference npz."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from ase.io import write
from ase.units import Bohr

from ase_ldm.data import DatasetError, open_dataset
from ase_ldm.data.importers import (
    export_cube,
    frames_from_cubes,
    frames_from_npz,
    read_cube,
    write_cube,
    write_frames,
)


@pytest.fixture
def cube_set(recorded, tmp_path):
    """One cube per frame (GPAW convention, every second one gzipped) plus a trajectory."""
    with open_dataset(recorded) as ds:
        images = [ds.atoms(i) for i in range(len(ds))]
        for i in range(len(ds)):
            name = tmp_path / f"dens_{i}.cube"
            write(name, images[i], data=ds.nt(i)[0].astype(np.float64) * Bohr**3)
            if i % 2:  # every second one gzipped
                (tmp_path / f"dens_{i}.cube.gz").write_bytes(gzip.compress(name.read_bytes()))
                name.unlink()
    write(tmp_path / "md.traj", images)
    return tmp_path


def test_cube_import_export_round_trip(cube_set, tmp_path):
    frames = frames_from_cubes(cube_set / "md.traj", str(cube_set / "dens_*.cube*"), timestep_fs=2.0)
    out = tmp_path / "from_cubes.h5"
    assert write_frames(out, frames, {"timestep_fs": 2.0}) == 4
    with open_dataset(out) as ds:
        assert len(ds) == 4
        np.testing.assert_allclose(ds.time_fs, [0, 2, 4, 6])
        for i in range(4):
            suffix = ".cube.gz" if i % 2 else ".cube"
            src, _ = read_cube(cube_set / f"dens_{i}{suffix}")
            export_cube(ds, i, tmp_path / f"back_{i}{suffix}")
            back, atoms = read_cube(tmp_path / f"back_{i}{suffix}")
            np.testing.assert_allclose(back, src, rtol=1.2e-7, atol=0)  # float32 precision
            np.testing.assert_allclose(ds.nt(i)[0], src / Bohr**3, rtol=1.2e-7, atol=0)
            np.testing.assert_allclose(atoms.positions, ds[i].positions, atol=1e-5)


def test_cube_import_errors_name_the_frame(cube_set, tmp_path):
    out = tmp_path / "bad.h5"
    with pytest.raises(DatasetError, match="3 cube files but 4 trajectory frames"):
        write_frames(out, frames_from_cubes(cube_set / "md.traj", [str(cube_set / f"dens_{i}.cube") for i in (0, 2)]
                                            + [str(cube_set / "dens_1.cube.gz")], 1.0))
    # a frame whose atoms do not correspond
    src, atoms = read_cube(cube_set / "dens_2.cube")
    atoms.positions[0] += 0.3
    write_cube(cube_set / "dens_2.cube", atoms, src / Bohr**3)
    with pytest.raises(DatasetError, match="frame 2"):
        write_frames(out, frames_from_cubes(cube_set / "md.traj", str(cube_set / "dens_*.cube*"), 1.0))
    # a frame on another grid
    write_cube(cube_set / "dens_2.cube", atoms, np.ones((6, 6, 6)))
    with pytest.raises(DatasetError, match=r"frame 2 .*grid"):
        write_frames(out, frames_from_cubes(cube_set / "md.traj", str(cube_set / "dens_*.cube*"), 1.0))
    assert not out.exists() and not list(tmp_path.glob("bad.h5*.part"))


def test_truncated_cube_is_a_clear_error(cube_set):
    text = (cube_set / "dens_0.cube").read_text()
    (cube_set / "dens_0.cube").write_text(text[: len(text) // 3])
    with pytest.raises(DatasetError, match="truncated"):
        read_cube(cube_set / "dens_0.cube")


def test_failed_import_keeps_existing_output(recorded_copy, cube_set):
    from conftest import file_digest

    before = file_digest(recorded_copy)
    with pytest.raises(DatasetError, match="exists"):
        write_frames(recorded_copy, frames_from_cubes(cube_set / "md.traj", str(cube_set / "dens_*"), 1.0))
    frames = list(frames_from_cubes(cube_set / "md.traj", str(cube_set / "dens_*"), 1.0))
    frames[2] = frames[2].__class__(**{**frames[2].__dict__, "nt_sR": frames[2].nt_sR * np.nan})
    with pytest.raises(DatasetError, match="NaN"):
        write_frames(recorded_copy, frames, overwrite=True)
    assert file_digest(recorded_copy) == before


def _write_reference_npz(ds, path):
    n = len(ds)
    np.savez(path, nt=ds.nt_range(0)[:, 0], D=np.array([[d[0] for d in ds.D_asii(i)] for i in range(n)]),
             positions=ds.array("positions"), velocities=ds.array("velocities"), energy=ds.array("energy"),
             forces=ds.array("forces"), scf_iterations=ds.array("scf_iterations"), cell=ds.cell(0),
             numbers=ds.numbers, timestep_fs=np.array(1.0))


def test_npz_import(recorded, tmp_path):
    with open_dataset(recorded) as ds:
        _write_reference_npz(ds, tmp_path / "ref.npz")
        frames, attrs = frames_from_npz(tmp_path / "ref.npz")
        write_frames(tmp_path / "ref.h5", frames, attrs)
        with open_dataset(tmp_path / "ref.h5") as got:
            assert len(got) == len(ds)
            np.testing.assert_array_equal(got.nt(3), ds.nt(3))
            for a, b in zip(got.D_asii(2), ds.D_asii(2)):
                np.testing.assert_allclose(a, b, rtol=1e-6)
            np.testing.assert_allclose(got.array("energy"), ds.array("energy"))


def test_npz_with_mismatched_lengths_is_refused(recorded, tmp_path):
    with open_dataset(recorded) as ds:
        _write_reference_npz(ds, tmp_path / "ref.npz")
    z = dict(np.load(tmp_path / "ref.npz"))
    z["positions"] = z["positions"][:-1]
    np.savez(tmp_path / "bad.npz", **z)
    with pytest.raises(DatasetError, match="positions has 3 frames, nt has 4"):
        frames_from_npz(tmp_path / "bad.npz")


def test_gpw_import(gpaw_li2, tmp_path):
    pytest.importorskip("gpaw")
    from ase_ldm.data.importers import frames_from_gpw

    calc = gpaw_li2.calc
    calc.write(tmp_path / "a.gpw")
    atoms = gpaw_li2.copy()
    atoms.positions[0] += 0.05
    atoms.calc = calc
    atoms.get_forces()
    calc.write(tmp_path / "b.gpw")
    frames, attrs = frames_from_gpw([tmp_path / "a.gpw", tmp_path / "b.gpw"], timestep_fs=0.5)
    write_frames(tmp_path / "g.h5", frames, attrs)
    with open_dataset(tmp_path / "g.h5") as ds:
        assert len(ds) == 2 and ds.has("D")
        np.testing.assert_allclose(ds.array("positions")[1], atoms.positions, atol=1e-10)
        assert ds.attrs["ecut_eV"] == 200.0
        np.testing.assert_allclose(ds.nt(1)[0], calc.dft.density.nt_sR.data[0] / Bohr**3, rtol=1e-6)
    with pytest.raises(DatasetError, match="cannot read as a GPAW restart file"):
        (tmp_path / "junk.gpw").write_text("junk")
        next(frames_from_gpw([tmp_path / "junk.gpw"], 1.0)[0])
