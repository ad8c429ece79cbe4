"""Calibrate the sampling temperature of a trained model on its own training frames.

A rollout should change from frame to frame as much as the AIMD it learned from: less
means it freezes, more means it jitters. For each candidate temperature the model is rolled
out from a training frame, and the temperature whose mean frame-to-frame relative L1 change
is closest (in log ratio) to that of the training frames is chosen. Only training frames
are used, so the held-out segment stays unseen.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.registry import model_dir
from ..data.atomic import write_text_atomic
from ..data.store import open_dataset
from ..errors import InvalidInput
from .surrogate import DensitySurrogate

__all__ = ["frame_change", "calibrate_temperature"]


def frame_change(frames: Sequence[np.ndarray]) -> float:
    """Mean relative L1 change between consecutive densities."""
    return float(np.mean([np.abs(b - a).sum() / np.abs(a).sum() for a, b in zip(frames[:-1], frames[1:])]))


def calibrate_temperature(model: str | os.PathLike, data: str | os.PathLike, *, start: int | None = None,
                          steps: int = 100, temperatures: Sequence[float] = (1.0, 0.7, 0.5, 0.3, 0.15),
                          seed: int = 0, write: bool = False) -> dict[str, Any]:
    """Pick the temperature whose rollouts change like the training data; optionally store it.

    Parameters
    ----------
    start : int, optional
        Training frame the rollouts start from (default: the middle of the training part).
    write : bool
        Store ``sampling_temperature`` (and this calibration) in the model's model.json.
    """
    sur = DensitySurrogate.load(model, device="cpu")
    lo, hi = sur.meta["train_frames"]
    start = (lo + hi) // 2 if start is None else start
    if not lo < start < hi:
        raise InvalidInput(f"start frame {start} is outside the training frames {lo}..{hi - 1}")
    with open_dataset(data) as ds:
        train = [ds.nt(i).sum(0).astype(np.float64) for i in range(lo, hi)]
        n_prev, n = ds.nt(start - 1).sum(0), ds.nt(start).sum(0)
    target = frame_change(train)
    results = {}
    for tau in temperatures:
        frames = [n] + [f[0] for f in sur.rollout(n_prev, n, steps, seed=seed, temperature=tau)]
        results[tau] = frame_change(frames)
    best = min(results, key=lambda tau: abs(np.log(results[tau] / target)))
    out = {"sampling_temperature": float(best), "training_frame_change": target,
           "rollout_frame_change": {str(k): v for k, v in results.items()}, "start_frame": start, "steps": steps}
    if write:
        path = model_dir(model) / "model.json"
        meta = json.loads(path.read_text())
        meta["sampling_temperature"] = float(best)
        meta["temperature_calibration"] = out
        write_text_atomic(path, json.dumps(meta, indent=1))
    return out
