"""Write model rollouts as datasets, so the evaluation tools apply to them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..data.schema import Frame
from ..data.store import DensityWriter, open_dataset
from ..errors import DatasetError, InvalidInput, ModelMismatch
from .surrogate import DensitySurrogate

__all__ = ["rollout_to_datasets"]


def rollout_to_datasets(model: str | os.PathLike, init: str | os.PathLike, frame: int, steps: int,
                        output: str | os.PathLike, *, samples: int = 1, sampler: str = "ddim", n_steps: int = 20,
                        seed: int = 0, device: str = "auto", overwrite: bool = False,
                        progress: bool = False) -> list[Path]:
    """Roll ``model`` out for ``steps`` frames from frames (frame-1, frame) of ``init``.

    Returns the written dataset paths (one per sample). Outputs are written under temporary
    names and renamed when complete; existing outputs are refused unless ``overwrite``.
    """
    sur = DensitySurrogate.load(model, device)
    out = Path(output)
    paths = [out] if samples == 1 else [out.with_name(f"{out.stem}-s{k}{out.suffix}") for k in range(samples)]
    for p in paths:
        if p.exists() and not overwrite:
            raise DatasetError(f"{p} exists; pass --force to replace it")
    with open_dataset(init) as ds:
        i = frame % len(ds)
        if i < 1:
            raise InvalidInput("--frame must be >= 1: the state needs the previous frame for the time derivative")
        if ds.grid != sur.grid:
            raise ModelMismatch(f"{init}: grid {ds.grid} differs from the model's {sur.grid}")
        if ds.natoms != len(sur.numbers) or np.any(ds.numbers != sur.numbers):
            raise ModelMismatch(f"{init}: species differ from the model's training system")
        if np.abs(ds.cell(i) - sur.cell).max() > 1e-4:
            raise ModelMismatch(f"{init}: cell differs from the model's training cell")
        if abs(ds.timestep_fs - sur.timestep_fs) > 1e-6:
            raise ModelMismatch(f"{init}: frames every {ds.timestep_fs} fs, the model steps {sur.timestep_fs} fs")
        first = ds.frame(i)
        n_prev, n = ds.nt(i - 1).sum(0), ds.nt(i).sum(0)
        times = ds.time_fs
        attrs = {"source": f"rollout of {model} from {init} frame {i}", "model": str(model), "sampler": sampler,
                 "sampler_steps": n_steps if sampler == "ddim" else None, "seed": seed,
                 "timestep_fs": sur.timestep_fs, "positions_note": "atoms not modelled: positions copied from "
                 "the init dataset at the same time where it has that frame, else from the initial frame"}
        tmp = [p.with_name(p.name + ".part") for p in paths]
        writers = [DensityWriter(t, overwrite=True, attrs={**attrs, "sample": k}) for k, t in enumerate(tmp)]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, desc="rollout", unit="frame")
        try:
            for step, n_batch in enumerate(sur.rollout(n_prev, n, steps, samples=samples, sampler=sampler,
                                                       n_steps=n_steps, seed=seed), start=1):
                t = float(times[i] + step * sur.timestep_fs)
                j = i + step
                src = ds.frame(j) if j < len(ds) and abs(times[j] - t) < 1e-6 else first
                for w, n_R in zip(writers, n_batch):
                    w.append(Frame(nt_sR=n_R[None].astype(np.float32), positions=src.positions, cell=src.cell,
                                   numbers=src.numbers, time_fs=t, pbc=src.pbc))
                if bar is not None:
                    bar.update(1)
        except BaseException:
            for w, t in zip(writers, tmp):
                w.close()
                t.unlink(missing_ok=True)
            raise
        finally:
            if bar is not None:
                bar.close()
        for w, t, p in zip(writers, tmp, paths):
            w.close()
            os.replace(t, p)
    return paths
