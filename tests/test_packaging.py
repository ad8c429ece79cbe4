"""Packaging: wheels and sdists carry every pretrained model; an installed wheel works on its own.

The wheel is installed with pip into a fresh virtual environment. Its dependencies (torch, ASE,
h5py, ...) come from the test environment through a path entry, but ``ase_ldm`` itself must be
the installed wheel's copy, not this checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from ase_ldm.core.registry import pretrained_names

ROOT = Path(__file__).resolve().parents[1]
SHARED_NPZ = ROOT.parent / "shared" / "data" / "li16_800K.npz"

pytestmark = [pytest.mark.slow, pytest.mark.wheel]


def _shipped_files() -> set[str]:
    return {str(p.relative_to(ROOT)) for p in (ROOT / "ase_ldm" / "pretrained").glob("*/*") if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A wheel and an sdist built from this checkout by setuptools' PEP 517 backend."""
    out = tmp_path_factory.mktemp("dist")
    names = []
    for kind in ("wheel", "sdist"):
        code = f"import setuptools.build_meta as b, sys; print('BUILT', b.build_{kind}(sys.argv[1]))"
        proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        names.append([line for line in proc.stdout.splitlines() if line.startswith("BUILT ")][-1].split()[1])
    wheel, sdist = names
    return out / wheel, out / sdist


def test_wheel_and_sdist_carry_every_pretrained_model(built):
    wheel, sdist = built
    shipped = _shipped_files()
    assert len(shipped) >= 2 * len(pretrained_names()) >= 4
    with zipfile.ZipFile(wheel) as z:
        assert shipped <= set(z.namelist())
        assert "ase_ldm/__main__.py" in z.namelist()
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert shipped <= names


def test_installed_wheel_loads_every_pretrained_model(built, tmp_path):
    wheel, _ = built
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "test_deps.pth").write_text("\n".join(deps) + "\n")
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    code = ("import ase_ldm, sys; from ase_ldm.core.registry import pretrained_names, load\n"
            "assert ase_ldm.__file__.startswith(sys.argv[1]), ase_ldm.__file__\n"
            "names = pretrained_names(); print(' '.join(names))\n"
            "for n in names:\n"
            "    m = load(n, device='cpu'); print(n, type(m).__name__, m.species, m.max_history)\n")
    proc = subprocess.run([str(py), "-c", code, site], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[0].split() == pretrained_names()
    cli = subprocess.run([str(py), "-m", "ase_ldm", "--help"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode == 0 and "predict" in cli.stdout
    if not SHARED_NPZ.exists():
        pytest.skip(f"{SHARED_NPZ} not present: the installed wheel was not run on the shared data")
    exe = venv / "bin" / "ase-ldm"
    data, out = tmp_path / "li16.h5", tmp_path / "pred.h5"
    for args in (["import", "--npz", str(SHARED_NPZ), "-o", str(data)],
                 ["predict", "li16-800K-sync", "--data", str(data), "--start", "745", "-o", str(out),
                  "--no-progress"],
                 ["evaluate", str(out), "--reference", str(data), "-o", str(tmp_path / "eval"), "--no-plots"]):
        run = subprocess.run([str(exe), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, (args, run.stderr[-3000:])
    import json

    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["rel_l1_mean"] < 0.005  # one-step error of the shipped model (0.03 % in BENCHMARKS.md)
