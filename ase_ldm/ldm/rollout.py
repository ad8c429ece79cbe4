"""Write model rollouts as datasets, so the evaluation tools apply to them."""

from __future__ import annotations

import inspect
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from ..core.registry import DensityModel, load
from ..data.atomic import atomic_output
from ..data.schema import Frame
from ..data.store import DensityDataset, DensityWriter, open_dataset
from ..errors import DatasetError, FrameOutOfRange, InvalidInput, ModelMismatch

__all__ = ["rollout_to_datasets", "check_rollout_args"]


def check_rollout_args(steps: int, samples: int, n_steps: int | None = None) -> None:
    """Refuse non-positive ``steps`` (frames to generate), ``samples`` (chains) and DDIM steps.

    Raises
    ------
    InvalidInput
        One of them is < 1 (``n_steps=None`` skips that one).
    """
    checks = [("--steps", steps, "frames to generate"), ("--samples", samples, "independent chains")]
    if n_steps is not None:
        checks.append(("--sampler-steps", n_steps, "DDIM steps"))
    for name, value, what in checks:
        if int(value) < 1:
            raise InvalidInput(f"{name} must be at least 1 ({what}), got {value}")


def output_paths(output: str | os.PathLike, samples: int) -> list[Path]:
    """The dataset paths of a rollout: ``output`` itself, or ``NAME-s0.h5``, ``NAME-s1.h5``, ... for samples."""
    out = Path(output)
    return [out] if samples == 1 else [out.with_name(f"{out.stem}-s{k}{out.suffix}") for k in range(samples)]


def _initial_frame(ds: DensityDataset, frame: int) -> int:
    """The initial frame ``frame`` of ``ds`` as 1 .. len-1 (negative counts from the end); it never wraps."""
    n = len(ds)
    try:
        i = ds.frame_index(frame)
    except FrameOutOfRange:
        raise FrameOutOfRange(f"--frame {frame} out of range: {ds.path} has {n} frames; use 1..{n - 1} (or "
                              f"-{n - 1}..-1 counting from the end)") from None
    if i < 1:
        raise InvalidInput(f"--frame must be >= 1 (got {frame}, frame {i}): the state needs the previous frame for "
                           "the time derivative")
    return i


def _check_fits(sur: DensityModel, ds: DensityDataset, init: str | os.PathLike, i: int) -> None:
    if ds.grid != sur.grid:
        raise ModelMismatch(f"{init}: grid {ds.grid} differs from the model's {sur.grid}")
    if ds.natoms != len(sur.numbers) or np.any(ds.numbers != sur.numbers):
        raise ModelMismatch(f"{init}: species differ from the model's training system")
    if np.abs(ds.cell(i) - sur.cell).max() > 1e-4:
        raise ModelMismatch(f"{init}: cell differs from the model's training cell")
    if sur.timestep_fs is None:
        raise ModelMismatch(f"{getattr(sur, 'name', 'the model')} has no time step; it cannot roll out in time")
    if abs(ds.frame_interval_fs - sur.timestep_fs) > 1e-6:
        raise ModelMismatch(f"{init}: frames every {ds.frame_interval_fs} fs, the model steps {sur.timestep_fs} fs")


def rollout_to_datasets(model: str | os.PathLike, init: str | os.PathLike, frame: int, steps: int,
                        output: str | os.PathLike, *, samples: int = 1, sampler: str = "ddim", n_steps: int = 20,
                        seed: int = 0, device: str = "auto", overwrite: bool = False,
                        progress: bool = False, options: dict[str, Any] | None = None) -> list[Path]:
    """Roll ``model`` out for ``steps`` frames from frames (frame-1, frame) of ``init``.

    ``options``: further keywords of the model's own ``rollout`` (e.g. the grid-latent model's
    ``thermostat``); a model without such a keyword is refused before anything is written.

    ``frame`` counts from 0, or from the end when negative; it must leave a previous frame.
    Returns the written dataset paths (one per sample). Outputs are written under unique
    temporary names and renamed when complete, and locked meanwhile (a concurrent writer of
    the same output is refused); existing outputs are refused unless ``overwrite``.

    Raises
    ------
    InvalidInput
        ``steps``, ``samples`` or ``n_steps`` < 1, or ``frame`` leaves no previous frame.
    FrameOutOfRange
        ``frame`` is outside ``init``.
    DatasetError, ModelMismatch
        An output exists or is being written, ``init`` is unreadable or does not fit the model.
    """
    check_rollout_args(steps, samples, n_steps if sampler == "ddim" else None)
    paths = output_paths(output, samples)
    for p in paths:  # fail before loading the model; checked again under the lock
        if p.exists() and not overwrite:
            raise DatasetError(f"{p} exists; pass --force to replace it")
    with open_dataset(init) as ds:
        i = _initial_frame(ds, frame)
        sur = load(model, device)
        if not hasattr(sur, "rollout"):
            raise ModelMismatch(f"{model} does not generate autonomous rollouts; use a latent diffusion model "
                                "(e.g. li16-800K)")
        _check_fits(sur, ds, init, i)
        options = dict(options or {})
        takes = inspect.signature(sur.rollout).parameters
        standard = ("self", "n_prev", "n", "steps", "samples", "sampler", "n_steps", "seed")
        for key in options:
            if key not in takes or key in standard:
                raise InvalidInput(f"{model}'s rollout takes no option {key!r}; leave it out for this model")
        # provenance: the further options of the model's rollout, as given or by their (non-None) defaults
        effective = {**{k: p.default for k, p in takes.items() if k not in standard
                        and p.default is not inspect.Parameter.empty and p.default is not None}, **options}
        if "rollout_gain" in effective:  # what was served: a model without a fitted gain serves none
            effective["rollout_gain"] = (bool(effective["rollout_gain"]) and bool(getattr(sur, "has_rollout_gain", 0))
                                         and effective.get("mode", "sample") == "sample")
        if "hold" in effective:  # the relaxation time served, or none
            effective["hold"] = sur.served_hold(effective["hold"], effective.get("rollout_gain", False))
        attrs = {"source": f"rollout of {model} from {init} frame {i}", "model": str(model), "sampler": sampler,
                 "sampler_steps": n_steps if sampler == "ddim" else None, "seed": seed,
                 "timestep_fs": sur.timestep_fs, "positions_note": "atoms not modelled: positions copied from "
                 "the init dataset at the same time where it has that frame, else from the initial frame",
                 **{f"rollout_{k}": ("none" if v is None else v) for k, v in effective.items()}}
        with ExitStack() as stack:
            tmp = [stack.enter_context(atomic_output(p, overwrite=overwrite)) for p in paths]
            writers = [stack.enter_context(DensityWriter(t, overwrite=True, lock=False, name=p,
                                                         attrs={**attrs, "sample": k}))
                       for k, (t, p) in enumerate(zip(tmp, paths))]
            _generate(sur, ds, i, steps, writers, samples=samples, sampler=sampler, n_steps=n_steps, seed=seed,
                      progress=progress, options=options)
    return paths


def _generate(sur: DensityModel, ds: DensityDataset, i: int, steps: int, writers: list[DensityWriter], *,
              samples: int, sampler: str, n_steps: int, seed: int, progress: bool,
              options: dict[str, Any]) -> None:
    """Run the rollout from frames (i-1, i) of ``ds`` and append each step's densities to ``writers``."""
    first = ds.frame(i)
    n_prev, n = ds.nt(i - 1).sum(0), ds.nt(i).sum(0)
    times = ds.time_fs
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="rollout", unit="frame")
    try:
        for step, n_batch in enumerate(sur.rollout(n_prev, n, steps, samples=samples, sampler=sampler,
                                                   n_steps=n_steps, seed=seed, **options), start=1):
            t = float(times[i] + step * sur.timestep_fs)
            j = i + step
            src = ds.frame(j) if j < len(ds) and abs(times[j] - t) < 1e-6 else first
            for w, n_R in zip(writers, n_batch):
                w.append(Frame(nt_sR=n_R[None].astype(np.float32), positions=src.positions, cell=src.cell,
                               numbers=src.numbers, time_fs=t, pbc=src.pbc))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
