"""One-step-ahead predictions over a whole trajectory, written as a dataset.

For every frame t >= ``start`` (default 1) of the input, the model predicts the density of frame t
from the converged frames before it (up to the history it reads; at the start of the data, the
first frame is repeated up to the history the model needs) and from the atoms of frame t. The
output frames carry frame t's atoms and time, so ``ase-ldm evaluate OUT --reference DATA`` scores
them pointwise. Any model the registry loads works the same way (:mod:`ase_ldm.core.registry`);
prediction ``t`` uses seed ``t``, so generative models are reproducible frame by frame.

Frames are appended one at a time: an interrupted run keeps what it wrote, and ``resume``
continues after the last complete frame, after checking that the output was made by the same
model, data, first frame and history.

With ``samples`` K (generative models that offer ``predict_samples``, e.g. the grid-latent
diffusion family), each frame also gets ``nt_spread``: the relative L1 norm of the per-voxel
standard deviation over K samples (the model's own estimate of its relative L1 error).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .data.schema import Frame
from .data.store import DensityWriter, open_dataset
from .errors import CheckpointError, DatasetError, InvalidInput, ModelMismatch

__all__ = ["predict_to_dataset"]


def _resolved(value: Any, locate: Any) -> Any:
    """``locate(value)`` resolved to an absolute path string, or ``value`` if it locates nothing."""
    try:
        return str(locate(str(value)).resolve()) if value is not None else None
    except CheckpointError:
        return value


def _paw(ds: Any, t: int) -> list[np.ndarray]:
    """Spin-paired PAW matrices of frame t: per atom (ni_a, ni_a)."""
    return [np.asarray(D)[0] for D in ds.D_asii(t)]


def predict_to_dataset(model: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, *,
                       history: int | None = None, start: int = 1, device: str = "cpu", resume: bool = False,
                       overwrite: bool = False, progress: bool = True, samples: int | None = None) -> int:
    """Write the model's one-step predictions of frames ``start`` ... T-1 of ``data`` to ``out``.

    Parameters
    ----------
    model : pretrained name or run directory
    data : dataset of converged frames (with PAW matrices for models that read them)
    out : output dataset
    history : past frames a prediction reads (default: all the model reads; 0: atoms only)
    start : first frame to predict
    resume, overwrite : continue an interrupted output, or replace an existing one
    samples : write the spread of this many samples per frame as ``nt_spread`` (>= 2)

    Returns the number of frames in ``out``.
    """
    from .core.registry import load, model_dir

    out = Path(out)
    if out.exists() and not (resume or overwrite):
        raise DatasetError(f"{out} exists; continue it with --resume or replace it with --force")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)):
        raise InvalidInput(f"start must be an integer frame index, got {start!r}")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, (int, np.integer))
                                or samples < 2):
        raise InvalidInput(f"--samples needs an integer of at least 2, got {samples!r}")
    mdl = load(model, device=device, **({} if history is None else {"max_history": history}))
    if samples is not None and not hasattr(mdl, "predict_samples"):
        raise InvalidInput(f"{model} is deterministic (no samples, no spread); --samples needs a generative model "
                           "such as the grid-latent diffusion family (ase-ldm train-gldm)")
    H = mdl.max_history
    with open_dataset(data) as ds:
        if len(ds) < 2:
            raise DatasetError(f"{data}: {len(ds)} frame(s); one-step predictions need at least 2")
        if ds.nspins != 1:
            raise DatasetError(f"{data}: spin-polarised; the models are spin-paired")
        first = int(start)
        if not 1 <= first < len(ds):
            raise InvalidInput(f"start must be between 1 and {len(ds) - 1}, got {start}")
        numbers, grid = ds.numbers, ds.grid
        mdl.check_setup(numbers, ds.cell(0), grid)
        if H > 0 and mdl.timestep_fs is not None and abs(float(mdl.timestep_fs) - ds.frame_interval_fs) > 1e-6:
            raise ModelMismatch(f"{data}: frames are {ds.frame_interval_fs} fs apart, the model's history steps "
                                f"{mdl.timestep_fs} fs; use data recorded every {mdl.timestep_fs} fs"
                                + (", or --history 0 (atoms only)" if mdl.min_history == 0 else ""))
        need_D = mdl.predicts_D and H > 0
        if need_D and not ds.has("D"):
            raise DatasetError(f"{data}: no PAW matrices (D); this model reads them as history (or use --history 0)")
        attrs_new = {"source": f"ase-ldm predict {model}", "predicted_from": str(Path(data).resolve()),
                     "model": str(model_dir(model).resolve()), "prediction": "one step ahead from converged frames",
                     "first_frame": first, "history": H, "samples": samples or 0}
        t0 = first
        if out.exists() and resume:
            with open_dataset(out) as done:
                old = {k: done.attrs.get(k) for k in ("predicted_from", "model", "first_frame", "history", "samples")}
                if old["samples"] is None:  # written before samples were stored: none
                    old["samples"] = 0
                if old["history"] is None:  # written before the history was stored: the model's default
                    old["history"] = mdl.max_history if history is None else None
                # earlier versions stored the paths as given: compare them resolved
                old["predicted_from"] = _resolved(old["predicted_from"], Path)
                old["model"] = _resolved(old["model"], model_dir)
                if old != {k: attrs_new[k] for k in old}:
                    diff = {k: (old[k], attrs_new[k]) for k in old if old[k] != attrs_new[k]}
                    raise DatasetError(f"{out} holds predictions made otherwise ({diff}); use another output or "
                                       "--force to replace it")
                t0 = first + len(done)
        writer = DensityWriter(out, append=resume, overwrite=overwrite and not resume,
                               attrs={**attrs_new, "timestep_fs": ds.timestep_fs,
                                      **{k: v for k, v in ds.attrs.items() if k in ("xc", "mode", "gpaw_version")}})
        steps = range(t0, len(ds))
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc=f"predict -> {out.name}", unit="frame", initial=t0 - first,
                         total=len(ds) - first)
        try:
            for t in steps:
                # the model keeps the last H observed frames: fill them once, then roll
                past = list(range(max(0, t - H), t)) if t == t0 else ([t - 1] if H else [])
                if t == t0 and past:
                    past = [past[0]] * max(0, mdl.min_history - len(past)) + past
                for k in past:
                    f = ds.frame(k)
                    mdl.observe(f.positions, f.nt_sR.sum(0), _paw(ds, k) if need_D else None, f.numbers, f.cell)
                target = ds.frame(t)
                spread = None
                if samples:
                    pred = mdl.predict_samples(target.positions, numbers, target.cell, grid, samples, seed=t)
                    nt, D, spread = pred.nt_R, None, pred.spread
                else:
                    nt, D = mdl.predict(target.positions, numbers, target.cell, grid, seed=t)
                writer.append(Frame(nt_sR=np.maximum(nt, 1e-10)[None].astype(np.float32), positions=target.positions,
                                    cell=target.cell, numbers=target.numbers, time_fs=target.time_fs,
                                    D_asii=None if D is None else [D_a[None] for D_a in D], pbc=target.pbc,
                                    nt_spread=spread))
        finally:
            writer.close()
    with open_dataset(out) as done:
        return len(done)
