"""Each example runs, with small settings, as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gpaw")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_gpaw_initial_guess_example(tmp_path):
    out = run_example("gpaw_initial_guess.py", "--atoms", "2", "--steps", "4", cwd=tmp_path)
    assert "single point: cold start" in out and "saves" in out


def test_md_with_surrogate_example(trained, tmp_path):
    out = run_example("md_with_surrogate.py", "--model", str(trained[0]), "--atoms", "2", "--ecut", "200",
                      "--steps", "3", "--resync", "2", "--out", "md", cwd=tmp_path)
    assert len(list((tmp_path / "md").glob("density_*.cube"))) == 4
    assert (tmp_path / "md" / "predicted.h5").exists() and "electrons(nt)" in out


@pytest.mark.slow
def test_train_from_gpaw_example(tmp_path):
    run_example("train_from_gpaw.py", "--atoms", "2", "--steps", "14", "--epochs", "2", "--out", "t", cwd=tmp_path)
    m = json.loads((tmp_path / "t" / "report" / "metrics.json").read_text())
    assert m["frames_pred"] >= 2 and "jsd_histogram" in m
