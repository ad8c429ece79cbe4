"""Guided MD under MPI (2 ranks) gives GPAW's serial answer: domain decomposition (PW, LCAO, FD)
and k-point parallelisation, a physics guess and a model (cold start included). Skipped where
GPAW was built without MPI or ``mpiexec`` is missing (``make install`` builds it with OpenMPI
and ScaLAPACK, which GPAW 26.7 needs to split PW and FD calculations over domains)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gpaw")
pytestmark = [pytest.mark.gpaw, pytest.mark.slow]

SCRIPT = Path(__file__).with_name("mpi_md.py")


def _gpaw_has_mpi() -> bool:
    import _gpaw

    return hasattr(_gpaw, "Communicator")


needs_mpi = pytest.mark.skipif(shutil.which("mpiexec") is None or not _gpaw_has_mpi(),
                               reason="GPAW without MPI, or no mpiexec (make install builds GPAW with OpenMPI)")


MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",  # OpenMPI as root (CI)
           "GPAW_MPI_BACKEND": "cgpaw"}  # GPAW 26's own MPI, as `gpaw python` sets it


def run_md(provider: str, kwargs: dict, out: Path, ranks: int = 1) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), provider, json.dumps(kwargs), str(out)]
    if ranks > 1:
        env.update(MPI_ENV)
        cmd = ["mpiexec", "-n", str(ranks), "--oversubscribe", *cmd]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=SCRIPT.parent)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return json.loads(out.read_text())


@needs_mpi
@pytest.mark.parametrize("kwargs,domains", [
    ({}, 2),  # plane waves, the density and wave functions split over 2 domains
    ({"kpts": [1, 1, 2]}, 1),  # plane waves: one k-point per rank, the density on each
    ({"mode": "lcao", "basis": "dzp", "gpts": [12, 12, 12]}, 2),  # LCAO over 2 domains
    ({"mode": "fd", "gpts": [12, 12, 12]}, 2),  # FD over 2 domains
])
def test_two_ranks_give_the_serial_answer(trained_sync, kwargs, domains, tmp_path):
    for provider in ("sad-extrapolate", str(trained_sync[0])):
        serial = run_md(provider, kwargs, tmp_path / "serial.json")
        par = run_md(provider, kwargs, tmp_path / "mpi.json", ranks=2)
        assert par["ranks"] == 2 and serial["ranks"] == 1 and par["domains"] == domains
        assert par["guesses"] == serial["guesses"] >= 4
        np.testing.assert_allclose(par["energy"], serial["energy"], atol=1e-6)
        np.testing.assert_allclose(np.array(par["forces"]), np.array(serial["forces"]), atol=1e-5)
        assert par["iterations"] == serial["iterations"]


@needs_mpi
def test_wave_function_extrapolation_is_refused_on_several_ranks():
    cmd = ["mpiexec", "-n", "2", "--oversubscribe", sys.executable, "-c",
           "from ase_ldm.scf.hook import GuidedGPAW\n"
           "GuidedGPAW('sad-extrapolate', wfs_extrapolation=2, mode={'name': 'pw', 'ecut': 200.0}, txt=None)"]
    done = subprocess.run(cmd, env={**os.environ, **MPI_ENV}, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "MPI ranks" in done.stdout + done.stderr


@needs_mpi
def test_recording_on_several_ranks_is_refused_before_any_file_is_written(tmp_path):
    cmd = ["mpiexec", "-n", "2", "--oversubscribe", sys.executable, "-c",
           "import sys\nfrom conftest import li2, tiny_settings\nfrom ase_ldm.data.aimd import run_aimd\n"
           "run_aimd(li2(), sys.argv[1], tiny_settings(steps=1), progress=False)", str(tmp_path / "x.h5")]
    done = subprocess.run(cmd, env={**os.environ, **MPI_ENV}, capture_output=True, text=True, timeout=300,
                          cwd=SCRIPT.parent)
    assert done.returncode != 0 and "record serially" in done.stdout + done.stderr
    assert not list(tmp_path.iterdir())
