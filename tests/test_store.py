"""The HDF5 store: round trips, windows, splits, and refusal of bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import file_digest, frame_with

from ase_ldm.data import DatasetError, DensityWriter, open_dataset
from ase_ldm.data.schema import FORMAT_VERSION


def test_read_back_recorded_trajectory(recorded):
    with open_dataset(recorded) as ds:
        assert len(ds) == 4
        assert ds.nspins == 1 and ds.natoms == 2
        assert ds.grid == (12, 12, 12)
        np.testing.assert_allclose(ds.time_fs, [0, 1, 2, 3])
        assert ds.timestep_fs == pytest.approx(1.0)
        fr = ds[2]
        assert fr.nt_sR.dtype == np.float32 and fr.nt_sR.shape == (1, 12, 12, 12)
        assert fr.nt_sR.min() > 0
        assert len(fr.D_asii) == 2 and fr.D_asii[0].shape == (1, 5, 5)
        np.testing.assert_allclose(fr.D_asii[0][0], fr.D_asii[0][0].T, atol=1e-6)  # symmetric
        assert fr.energy is not None and fr.forces.shape == (2, 3)
        assert fr.scf_iterations > 0
        # positions move between frames (it is MD)
        assert np.abs(ds[3].positions - ds[0].positions).max() > 1e-4
        attrs = ds.attrs
        assert attrs["gpaw_version"].startswith("26.")
        assert attrs["ecut_eV"] == 200.0 and attrs["xc"] == "PBE"
        assert attrs["ensemble"] == "NVE" and attrs["timestep_fs"] == 1.0
        assert "nt_sR" in attrs["nt_source"]


def test_windows_split_and_torch(synthetic):
    torch = pytest.importorskip("torch")
    with open_dataset(synthetic) as ds:
        w = ds.window(3, 3)
        assert w.shape == (3, 1, 12, 12, 12)
        np.testing.assert_array_equal(w[-1], ds.nt(3))
        np.testing.assert_array_equal(w[0], ds.nt(1))
        with pytest.raises(IndexError, match="starts before frame 0"):
            ds.window(1, 3)
        train, test = ds.split(0.25)
        assert list(train) == [0, 1, 2] and list(test) == [3]
        for sl in (slice(3, 0, -2), slice(None, None, -1)):  # h5py reads forward only
            np.testing.assert_array_equal(ds.nt_torch(sl).numpy(), ds.nt_range(0)[sl])
        t = ds.nt_torch(slice(1, 3))
        assert isinstance(t, torch.Tensor) and t.shape == (2, 1, 12, 12, 12) and t.dtype == torch.float32
        with pytest.raises(IndexError, match="out of range"):
            ds.nt(4)


def _refused(path, frame, match, **kw):
    before = file_digest(path)
    with open_dataset(path) as ds:
        n = len(ds)
    with pytest.raises(DatasetError, match=match):
        with DensityWriter(path, append=True, **kw) as w:
            w.append(frame)
    with open_dataset(path) as ds:
        assert len(ds) == n
        ds.nt(n - 1)  # still readable
    # The refused frame never touched the data: only HDF5 bookkeeping may differ.
    return before


@pytest.mark.parametrize("case", ["grid", "species", "cell", "timestep", "nan", "negative", "missing_D"])
def test_append_refuses_incompatible_frames(synthetic_copy, case):
    with open_dataset(synthetic_copy) as ds:
        last = ds[len(ds) - 1]
    good_t = last.time_fs + 1.0
    frames = {
        "grid": (frame_with(last, time_fs=good_t, nt_sR=np.ones((1, 10, 12, 12), np.float32)), "grid"),
        "species": (frame_with(last, time_fs=good_t, numbers=np.array([3, 11])), "species"),
        "cell": (frame_with(last, time_fs=good_t, cell=last.cell * 1.01), "cell changed"),
        "timestep": (frame_with(last, time_fs=last.time_fs + 2.0), "time step between frames"),
        "nan": (frame_with(last, time_fs=good_t, nt_sR=np.full_like(last.nt_sR, np.nan)), "NaN"),
        "negative": (frame_with(last, time_fs=good_t, nt_sR=last.nt_sR - 1.0), "compensation charges"),
        "missing_D": (frame_with(last, time_fs=good_t, D_asii=None), "missing 'D'"),
    }
    frame, match = frames[case]
    _refused(synthetic_copy, frame, match)
    with open_dataset(synthetic_copy) as ds:
        np.testing.assert_array_equal(ds.nt(len(ds) - 1), last.nt_sR)


def test_append_refuses_other_md_timestep(synthetic_copy):
    with pytest.raises(DatasetError, match="timestep 1.0 fs"):
        DensityWriter(synthetic_copy, append=True, attrs={"timestep_fs": 2.0})


def test_existing_file_is_never_overwritten_by_accident(synthetic_copy):
    before = file_digest(synthetic_copy)
    with pytest.raises(DatasetError, match="exists"):
        DensityWriter(synthetic_copy)
    assert file_digest(synthetic_copy) == before


def test_append_continues_and_matches(synthetic_copy):
    with open_dataset(synthetic_copy) as ds:
        last, n = ds[len(ds) - 1], len(ds)
    with DensityWriter(synthetic_copy, append=True) as w:
        w.append(frame_with(last, time_fs=last.time_fs + 1.0))
    with open_dataset(synthetic_copy) as ds:
        assert len(ds) == n + 1
        np.testing.assert_allclose(ds.time_fs[-2:], [last.time_fs, last.time_fs + 1.0])


def test_partial_frame_is_ignored_then_trimmed(synthetic_copy):
    # Simulate a kill between writing nt and time_fs: nt has one frame more.
    with h5py.File(synthetic_copy, "r+") as f:
        n = len(f["time_fs"])
        f["nt"].resize(n + 1, axis=0)
        f["nt"][n] = 7.0
    with open_dataset(synthetic_copy) as ds:
        assert len(ds) == n
    with DensityWriter(synthetic_copy, append=True) as w:
        assert len(w) == n
    with h5py.File(synthetic_copy, "r") as f:
        assert len(f["nt"]) == n


def test_truncated_and_foreign_files_give_clear_errors(synthetic, tmp_path):
    data = synthetic.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated"):
        open_dataset(trunc)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(DatasetError, match="not an ase_ldm density trajectory"):
        open_dataset(foreign)
    newer = tmp_path / "newer.h5"
    newer.write_bytes(data)
    with h5py.File(newer, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(DatasetError, match="format version"):
        open_dataset(newer)
    with pytest.raises(DatasetError, match="no such file"):
        open_dataset(tmp_path / "missing.h5")


def test_species_with_different_projector_counts(tmp_path, synthetic):
    """D of atoms with different ni (e.g. Li ni=5 next to an atom with ni=13) round-trips."""
    with open_dataset(synthetic) as ds:
        fr = ds[0]
    rng = np.random.default_rng(0)
    D = [rng.normal(size=(1, 5, 5)), rng.normal(size=(1, 13, 13))]
    frame = frame_with(fr, numbers=np.array([3, 8]), D_asii=D)
    path = tmp_path / "mixed.h5"
    with DensityWriter(path) as w:
        w.append(frame)
        w.append(frame_with(frame, time_fs=1.0))
    with open_dataset(path) as ds:
        got = ds.D_asii(1)
        assert [g.shape for g in got] == [(1, 5, 5), (1, 13, 13)]
        for g, d in zip(got, D):
            np.testing.assert_allclose(g, d, rtol=1e-6, atol=1e-6)
