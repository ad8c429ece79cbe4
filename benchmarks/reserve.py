"""Shared by the benchmarks that serve rollouts, written without a correction of what they yield,
through that correction afterwards (``bench_rollout_gain.py``, ``bench_hold.py``).

The grid-latent model's rollout gain and amplitude hold act on what a rollout yields, never on the chain,
so a rollout written without them can be served through any of them later: the same chains, up to
float32 storage and the positivity clamp (which then acts on the density as written rather than on
the decoded one).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np


def parser(doc: str, written_with: str, name: str) -> argparse.ArgumentParser:
    """The common arguments: model, --data, --rollouts (written with ``written_with``), --start,
    --stop, --out and --json (defaults under bench-output/``name``)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True, help="the dataset the model trained on (its test segment: the reference)")
    ap.add_argument("--rollouts", nargs="+", required=True, help=f"rollouts written with {written_with}")
    ap.add_argument("--start", type=int, default=600, help="first test frame (the rollouts' start)")
    ap.add_argument("--stop", type=int, default=750)
    ap.add_argument("--out", default=f"bench-output/{name}")
    ap.add_argument("--json", default=f"bench-output/{name}.json")
    return ap


def test_segment(data: str, start: int, stop: int, out: Path) -> Path:
    """Frames start..stop-1 of ``data`` written to out/test_segment.h5 (replaced)."""
    from ase_ldm.data import open_dataset, write_frames

    out.mkdir(parents=True, exist_ok=True)
    test = out / "test_segment.h5"
    with open_dataset(data) as ds:
        write_frames(test, (ds.frame(i) for i in range(start, stop)), {"timestep_fs": ds.timestep_fs},
                     overwrite=True)
    return test


def serve(rollout: str | Path, path: Path, weights: np.ndarray,
          hold: Callable | None = None) -> Path:
    """Write ``rollout``'s densities to ``path`` (replaced) as ``served_density`` serves them:
    filtered by the rfft ``weights`` (N1, N2, N3 // 2 + 1), then by ``hold``, kept positive,
    with each frame's electrons."""
    import torch

    from ase_ldm.data import Frame, open_dataset, write_frames
    from ase_ldm.gldm.model import served_density

    w = torch.as_tensor(weights, dtype=torch.float64)
    with open_dataset(rollout) as ro:
        dV = abs(float(np.linalg.det(ro.cell(0)))) / float(np.prod(ro.grid))

        def frames():
            for t in range(len(ro)):
                f = ro.frame(t)
                x = torch.as_tensor(f.nt_sR.sum(0)[None], dtype=torch.float64)
                y = served_density(x, w, float(x.sum()) * dV, dV, hold)[0].numpy()
                yield Frame(nt_sR=y[None].astype(np.float32), positions=f.positions, cell=f.cell,
                            numbers=f.numbers, time_fs=f.time_fs)

        path.unlink(missing_ok=True)
        write_frames(path, frames(), {"timestep_fs": ro.timestep_fs})
    return path
