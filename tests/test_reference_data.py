"""The shared liquid Li16 reference trajectory imports and is described correctly (skipped if absent)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA

from ase_ldm.cli.main import main
from ase_ldm.data import open_dataset

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared reference data not present")


def test_reference_npz_imports_and_info_describes_it(tmp_path, capsys):
    out = tmp_path / "li16.h5"
    assert main(["import", "--npz", str(SHARED_DATA), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "750" in text and "30 x 30 x 30" in text and "Li16" in text
    z = np.load(SHARED_DATA)
    with open_dataset(out) as ds:
        assert len(ds) == 750 and ds.grid == (30, 30, 30) and ds.natoms == 16
        assert ds.timestep_fs == 2.0 and ds.time_fs[-1] == pytest.approx(1498.0)
        np.testing.assert_array_equal(ds.nt(100)[0], z["nt"][100])
        np.testing.assert_allclose(ds.D_asii(5)[3][0], z["D"][5, 3], rtol=1e-7)
        counts = ds.electron_counts()
        # GPAW_NOTES: the integral of nt moves between 18.411 and 18.424 electrons
        assert 18.40 < counts.min() < 18.415 and 18.42 < counts.max() < 18.43
        attrs = ds.attrs
        assert attrs["ecut_eV"] == 300.0 and attrs["temperature_K"] == 800.0 and attrs["xc"] == "PBE"
