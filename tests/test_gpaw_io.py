"""GPAW accessors: nt and D from a real calculation, and the compensation-charge helpers."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gpaw")
pytestmark = pytest.mark.gpaw

from ase.units import Bohr  # noqa: E402

from ase_ldm.data.gpaw_io import (  # noqa: E402
    D_asii_from_gpaw,
    compensated_density,
    frame_from_gpaw,
    nt_from_compensated,
    nt_sR_from_gpaw,
    provenance_from_gpaw,
)


def test_electron_count_of_nt_matches_gpaw(gpaw_li2):
    calc = gpaw_li2.calc
    nt = nt_sR_from_gpaw(calc)
    dv = gpaw_li2.get_volume() / np.prod(nt.shape[1:])
    ours = nt.sum() * dv
    gpaw_count = calc.dft.density.nt_sR.integrate().sum()  # GPAW's own integral, electrons
    assert ours == pytest.approx(gpaw_count, rel=1e-12)
    # GPAW's Q^a_L include the nuclear charge: nt plus sqrt(4 pi) Q^a_00 is the neutral cell's total (0);
    # the valence count is checked through compensated_density() below.
    Q_aL = calc.dft.density.calculate_compensation_charge_coefficients()
    compensation = (4 * np.pi) ** 0.5 * sum(Q_aL[a][0] for a in range(len(gpaw_li2)))
    assert abs(ours + compensation) < 1e-5
    assert 2.0 < ours < 2.0 + sum(s.Nct for s in calc.dft.setups) + 0.05
    # and the float32 frame keeps that count to float32 precision
    frame = frame_from_gpaw(calc, gpaw_li2)
    assert frame.electron_count() == pytest.approx(ours, rel=1e-6)


def test_nt_is_positive_and_in_angstrom_units(gpaw_li2):
    nt = nt_sR_from_gpaw(gpaw_li2.calc)
    raw = gpaw_li2.calc.dft.density.nt_sR.data
    np.testing.assert_allclose(nt, raw / Bohr**3)
    assert nt.min() > 0


def test_compensated_density_reproduces_get_pseudo_density(gpaw_li2):
    calc = gpaw_li2.calc
    nt, D = nt_sR_from_gpaw(calc), D_asii_from_gpaw(calc)
    n = compensated_density(calc, nt, D)
    ref = calc.get_pseudo_density()
    np.testing.assert_allclose(n.sum(0), ref, atol=1e-10 * np.abs(ref).max())
    assert n.min() < 0  # compensation charges are negative near Li nuclei
    dv = gpaw_li2.get_volume() / np.prod(ref.shape)
    assert n.sum() * dv == pytest.approx(2.0, abs=1e-5)  # valence electrons (coarse-grid ghat: ~3e-6)
    np.testing.assert_allclose(nt_from_compensated(calc, n, D), nt, atol=1e-12)


def test_compensated_density_refuses_wrong_grid(gpaw_li2):
    from ase_ldm.data import DatasetError

    calc = gpaw_li2.calc
    with pytest.raises(DatasetError, match="does not fit"):
        compensated_density(calc, np.ones((1, 10, 10, 10)), D_asii_from_gpaw(calc))


def test_provenance(gpaw_li2):
    p = provenance_from_gpaw(gpaw_li2.calc)
    assert p["mode"] == "pw" and p["ecut_eV"] == 200.0 and p["xc"] == "PBE"
    assert p["kpts"] == [1, 1, 1] and "fermi-dirac" in p["smearing"]
