"""One-step-ahead predictions over a whole trajectory, written as a dataset.

For every frame t >= ``start`` (default 1) of the input, the model predicts the density of frame t from the
converged frames before it (up to its history: three for the synchronised model, so frames 1
and 2 use one and two) and, for the synchronised model, from the atoms of frame t. The output
frames carry frame t's atoms and time, so ``ase-ldm evaluate OUT --reference DATA`` scores them
pointwise. The paper's latent model (which sees no atoms) predicts from frames t-2 and t-1
(frame 1 from frame 0 twice) with deterministic DDIM.

Frames are appended one at a time: an interrupted run keeps what it wrote, and ``resume``
continues after the last complete frame.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .data.schema import DatasetError, Frame
from .data.store import DensityWriter, open_dataset

__all__ = ["predict_to_dataset"]


def _paw(ds: Any, t: int) -> np.ndarray:
    return np.stack([np.asarray(D)[0] for D in ds.D_asii(t)])


def predict_to_dataset(model: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, *,
                       history: int | None = None, start: int = 1, device: str = "cpu", resume: bool = False,
                       overwrite: bool = False, progress: bool = True) -> int:
    """Write the model's one-step predictions of frames ``start`` ... T-1 of ``data`` to ``out``.

    Returns the number of frames in ``out``.
    """
    from .sync_predictor import SyncPredictor, is_sync_model

    out = Path(out)
    sync = is_sync_model(model)
    attrs_new = {"source": f"ase-ldm predict {model}", "predicted_from": str(data), "model": str(model),
                 "prediction": "one step ahead from converged frames", "first_frame": int(start)}
    with open_dataset(data) as ds:
        if len(ds) < 2:
            raise DatasetError(f"{data}: {len(ds)} frame(s); one-step predictions need at least 2")
        if ds.nspins != 1:
            raise DatasetError(f"{data}: spin-polarised; the models are spin-paired")
        first = int(start)
        if not 1 <= first < len(ds):
            raise ValueError(f"start must be between 1 and {len(ds) - 1}, got {start}")
        if out.exists() and resume:
            with open_dataset(out) as done:
                if (done.attrs.get("predicted_from") != str(data) or done.attrs.get("model") != str(model)
                        or done.attrs.get("first_frame") != first):
                    raise DatasetError(f"{out} holds predictions of another model, dataset or first frame; "
                                       "use another output")
                start = first + len(done)
        numbers, grid = ds.numbers, ds.grid
        if sync:
            pred = SyncPredictor.load(model, device=device, max_history=history)
            need_D = True
            dt_model = pred.timestep_fs
            if dt_model is not None and (history is None or history > 0) and \
                    abs(float(dt_model) - ds.timestep_fs) > 1e-6:
                raise DatasetError(f"{data}: frames are {ds.timestep_fs} fs apart, the model's history steps "
                                   f"{dt_model} fs; use data recorded every {dt_model} fs, or --history 0 "
                                   "(atoms only)")
            if not ds.has("D"):
                raise DatasetError(f"{data}: no PAW matrices (D); the synchronised model needs them as history")
        else:
            from .surrogate import load_model

            sur = load_model(model, device=device)
            need_D = False
            import torch

            gen = torch.Generator(device=sur.device)
        writer = DensityWriter(out, append=resume, overwrite=overwrite and not resume,
                               attrs={**attrs_new, "timestep_fs": ds.timestep_fs,
                                      **{k: v for k, v in ds.attrs.items() if k in ("xc", "mode", "gpaw_version")}})
        steps = range(start, len(ds))
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc=f"predict -> {out.name}", unit="frame", initial=start - first,
                         total=len(ds) - first)
        try:
            for t in steps:
                target = ds.frame(t)
                if sync:
                    # the predictor keeps the last `history` observed frames: fill it once, then roll
                    for k in range(max(0, t - pred.history) if t == start else t - 1, t):
                        f = ds.frame(k)
                        pred.observe(f.positions, f.nt_sR.sum(0), _paw(ds, k), f.numbers, f.cell)
                    nt, D = pred.predict(target.positions, numbers, target.cell, grid)
                    D_asii = [D_a[None] for D_a in D]
                else:
                    n1 = ds.nt(t - 1).sum(0)
                    n0 = ds.nt(max(t - 2, 0)).sum(0)
                    gen.manual_seed(t)
                    z = sur.encode(n0, n1)
                    nt = sur.decode(sur.predict_next(z, "ddim", 20, gen), float(n1.sum() * sur.dV))[0]
                    D_asii = None
                writer.append(Frame(nt_sR=np.maximum(nt, 1e-10)[None].astype(np.float32), positions=target.positions,
                                    cell=target.cell, numbers=target.numbers, time_fs=target.time_fs,
                                    D_asii=D_asii if need_D else None, pbc=target.pbc))
        finally:
            writer.close()
    with open_dataset(out) as done:
        return len(done)
