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
@pytest.mark.parametrize("kwargs,domains", [
    ({}, 2),  # plane waves over 2 domains: each k-point's bands gathered, extrapolated, scattered
    ({"kpts": [1, 1, 2]}, 1),  # one k-point per rank, extrapolated where it lives
    ({"mode": "fd", "gpts": [12, 12, 12]}, 2),  # FD grids over 2 domains
])
def test_wave_function_extrapolation_on_two_ranks_gives_the_serial_answer(kwargs, domains, tmp_path):
    serial = run_md("sad-extrapolate+wfs2", kwargs, tmp_path / "serial.json")
    par = run_md("sad-extrapolate+wfs2", kwargs, tmp_path / "mpi.json", ranks=2)
    assert par["domains"] == domains and par["guesses"] == serial["guesses"] >= 4
    np.testing.assert_allclose(par["energy"], serial["energy"], atol=1e-6)
    np.testing.assert_allclose(np.array(par["forces"]), np.array(serial["forces"]), atol=1e-5)
    assert par["iterations"] == serial["iterations"]
    # the extrapolation changed where the SCF started: GPAW's own move takes other iterations
    moved = run_md("sad-extrapolate", kwargs, tmp_path / "moved.json")
    assert moved["iterations"] != serial["iterations"]


@needs_mpi
def test_density_guess_with_bands_split_over_two_ranks_keeps_gpaws_answer(tmp_path):
    """parallel={'band': 2}: the density guess is on the (unsplit) grid; GPAW's band-parallel
    eigensolver takes other iterations than the serial one even for its own guess, so the guided
    run is compared with GPAW's own on the same split."""
    split = {"parallel": {"band": 2, "domain": 1}}
    own = run_md("gpaw", split, tmp_path / "own.json", ranks=2)
    guided = run_md("sad-extrapolate", split, tmp_path / "guided.json", ranks=2)
    assert guided["guesses"] == 4 and guided["domains"] == 1
    np.testing.assert_allclose(guided["energy"], own["energy"], atol=1e-4)
    np.testing.assert_allclose(np.array(guided["forces"]), np.array(own["forces"]), atol=2e-3)  # SCF tolerance
    assert sum(guided["iterations"][1:]) < sum(own["iterations"][1:])


@needs_mpi
def test_wave_function_extrapolation_refuses_split_bands():
    cmd = ["mpiexec", "-n", "2", "--oversubscribe", sys.executable, "-c",
           "from ase_ldm.scf.hook import GuidedGPAW\n"
           "GuidedGPAW('sad-extrapolate', wfs_extrapolation=2, parallel={'band': 2}, "
           "mode={'name': 'pw', 'ecut': 200.0}, txt=None)"]
    done = subprocess.run(cmd, env={**os.environ, **MPI_ENV}, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "bands split over 2 ranks" in done.stdout + done.stderr


@needs_mpi
def test_recording_on_two_ranks_writes_the_serial_frames_from_one_rank(tmp_path):
    """`ase-ldm record` under mpiexec: rank 0 writes, every rank runs the MD; the frames are the
    serial recording's, one progress bar and one summary line are printed, and --append goes on."""
    from ase.io import write
    from conftest import li2

    from ase_ldm.data.store import open_dataset

    structure = tmp_path / "li2.traj"
    write(structure, li2())
    args = [str(structure), "--steps", "2", "--ecut", "200", "--ensemble", "nve", "--timestep", "1",
            "--seed", "3", "--guess", "sad-extrapolate+wfs2"]
    serial, par = tmp_path / "serial.h5", tmp_path / "mpi.h5"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "ase_ldm", "record"]
    done = subprocess.run([*cli, *args, "-o", str(serial), "--no-progress"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    mpi = ["mpiexec", "-n", "2", "--oversubscribe", *cli]
    done = subprocess.run([*mpi, *args, "-o", str(par)], env={**env, **MPI_ENV}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert done.stdout.count("frames") == 1  # the summary from rank 0 only
    assert done.stderr.count("GPAW MD:   0%") == 1  # one progress bar
    with open_dataset(serial) as a, open_dataset(par) as b:
        assert len(a) == len(b) == 3
        for i in range(3):
            fa, fb = a.frame(i), b.frame(i)
            np.testing.assert_allclose(fb.nt_sR, fa.nt_sR, atol=1e-5, rtol=0)
            np.testing.assert_allclose(fb.energy, fa.energy, atol=1e-5)
            np.testing.assert_allclose(fb.positions, fa.positions, atol=1e-6)
    # a second writer of the same file is refused on every rank, and the file keeps its frames
    done = subprocess.run([*mpi, *args, "-o", str(par), "--no-progress"], env={**env, **MPI_ENV},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and done.stderr.count("DatasetError") == 2, done.stderr[-2000:]
    # continued under MPI from the last frame
    done = subprocess.run([*mpi, "--steps", "1", "--append", "--no-progress", "-o", str(par)],
                          env={**env, **MPI_ENV}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    with open_dataset(par) as b:
        assert len(b) == 4


@needs_mpi
def test_scf_bench_on_two_ranks_prints_and_writes_from_rank_0(recorded, tmp_path):
    """`ase-ldm scf-bench` under mpiexec: the MD runs on both ranks, the table is printed once, the
    JSON says 2 ranks and holds the serial run's iterations; --threads is refused there."""
    from ase_ldm.scf.bench import scf_bench

    serial = scf_bench(recorded, 1, 2, ["sad-extrapolate+wfs2"], progress=False)
    cmd = ["mpiexec", "-n", "2", "--oversubscribe", sys.executable, "-m", "ase_ldm", "scf-bench", str(recorded),
           "--frame", "1", "--steps", "2", "--provider", "sad-extrapolate+wfs2", "--json", str(tmp_path / "b.json")]
    env = {**os.environ, **MPI_ENV, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert done.stdout.count("iter/step") == 1 and done.stderr.count("scf-bench:   0%") == 1
    out = json.loads((tmp_path / "b.json").read_text())
    assert out["mpi_ranks"] == 2
    for name, r in serial["providers"].items():
        assert out["providers"][name]["iterations"] == r["iterations"]
        assert out["providers"][name]["max_energy_diff_eV"] < 1e-6
    done = subprocess.run([*cmd, "--threads", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and done.stderr.count("cannot join the 2 MPI ranks") == 2


@needs_mpi
def test_from_root_raises_rank_0_errors_on_every_rank(tmp_path):
    """An error on rank 0 (ours, or any other) reaches rank 1 instead of leaving it waiting."""
    code = ("import sys\n"
            "from ase_ldm.core.mpi import from_root, world\n"
            "from ase_ldm.errors import InvalidInput\n"
            "assert from_root(lambda: world().rank) == 0\n"
            "seen = []\n"
            "for err in (InvalidInput('bad input'), ValueError('a bug')):\n"
            "    try:\n"
            "        from_root(lambda: (_ for _ in ()).throw(err))\n"
            "    except Exception as got:\n"
            "        seen.append(f'{type(got).__name__}: {got}')\n"
            "open(f'{sys.argv[1]}/{world().rank}.txt', 'w').write('\\n'.join(seen))\n")
    cmd = ["mpiexec", "-n", "2", "--oversubscribe", sys.executable, "-c", code, str(tmp_path)]
    done = subprocess.run(cmd, env={**os.environ, **MPI_ENV}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    assert (tmp_path / "0.txt").read_text().splitlines() == ["InvalidInput: bad input", "ValueError: a bug"]
    assert (tmp_path / "1.txt").read_text().splitlines() == ["InvalidInput: bad input",
                                                            "RuntimeError: rank 0 failed: ValueError: a bug"]


@needs_mpi
def test_density_calculator_on_two_ranks_gives_the_serial_densities(trained_sync, tmp_path):
    """DensityCalculator around GPAW under mpiexec: forces from the parallel GPAW, the model's
    density synchronised from GPAW's gathered one every step (history 3); both ranks serve the
    serial run's densities and energies."""
    code = ("import sys, json, numpy as np\nimport gpaw.mpi\n"  # GPAW's world before ASE's (as `gpaw python`)
            "from ase import units\nfrom ase.md.verlet import VelocityVerlet\n"
            "from ase.md.velocitydistribution import thermalize_momenta\nfrom gpaw import GPAW\n"
            "from conftest import li2\nfrom ase_ldm.calculator import DensityCalculator\n"
            "from ase_ldm.core.mpi import world\n"
            "atoms = li2(rattle=0.1, seed=2)\n"
            "thermalize_momenta(atoms, 1500, rng=np.random.default_rng(1))\n"
            "gp = GPAW(mode={'name': 'pw', 'ecut': 200.0}, xc='PBE', symmetry='off', txt=None,\n"
            "          occupations={'name': 'fermi-dirac', 'width': 0.1})\n"
            "atoms.calc = calc = DensityCalculator(sys.argv[1], calc=gp, timestep_fs=2.0, history=3, resync_every=1)\n"
            "out = {'nt': [], 'E': []}\n"
            "def grab():\n"
            "    out['nt'].append(float(np.abs(calc.get_pseudo_density()).sum()))\n"
            "    out['E'].append(atoms.get_potential_energy())\n"
            "dyn = VelocityVerlet(atoms, 2 * units.fs)\ndyn.attach(grab)\ndyn.run(3)\n"
            "json.dump(out, open(f'{sys.argv[2]}/{world().size}-{world().rank}.json', 'w'))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for cmd, extra in (([], {}), (["mpiexec", "-n", "2", "--oversubscribe"], MPI_ENV)):
        done = subprocess.run([*cmd, sys.executable, "-c", code, str(trained_sync[0]), str(tmp_path)],
                              env={**env, **extra}, capture_output=True, text=True, timeout=600, cwd=SCRIPT.parent)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    serial = json.loads((tmp_path / "1-0.json").read_text())
    assert len(serial["nt"]) == 4
    for rank in (0, 1):
        par = json.loads((tmp_path / f"2-{rank}.json").read_text())
        np.testing.assert_allclose(par["E"], serial["E"], atol=1e-6)
        np.testing.assert_allclose(par["nt"], serial["nt"], rtol=1e-6)
