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
