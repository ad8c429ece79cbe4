"""Train Deep Density on a dataset's frames: random grid points per frame, relative L1 loss.

A run directory as in :mod:`ase_ldm.core.runs`: ``config.json``, checkpoints after each epoch
(``model.json`` with ``kind: deepdensity`` + safetensors), ``history.json``; an interrupted run
resumes from its last checkpoint. Validation: full-grid relative L1 of the last ``val_frames``
training frames.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.checkpoint import build_model, read_meta
from ..core.config import from_dict
from ..core.runs import open_run, resume_state, save_run_config, write_checkpoint
from ..errors import CheckpointError, DatasetError, InvalidInput
from .config import DeepDensityConfig, DeepDensityTrainConfig
from .net import DeepDensity, grid_points

__all__ = ["KIND", "train_deep_density", "load_deep_density"]

log = logging.getLogger(__name__)
KIND = "deepdensity"


def _frames(data: str | os.PathLike, n_train: int | None) -> dict[str, Any]:
    from ..data.store import open_dataset

    with open_dataset(data) as ds:
        n = len(ds) if n_train is None else min(int(n_train), len(ds))
        if ds.nspins != 1:
            raise DatasetError(f"{data}: Deep Density here is spin-paired; this dataset has {ds.nspins} spins")
        cell = ds.cell(0)
        if not np.allclose(ds.cell(n - 1), cell):
            raise DatasetError(f"{data}: the cell changes along the trajectory; Deep Density is trained on one cell")
        return {"positions": ds.array("positions", 0, n), "nt": ds.nt_range(0, n)[:, 0].astype(np.float32),
                "numbers": np.asarray(ds.numbers), "cell": np.asarray(cell, float), "grid": tuple(ds.grid)}


def relative_l1(model: DeepDensity, d: dict[str, Any], frames: range) -> float:
    """Mean over ``frames`` of sum |rho - nt| / sum |nt| on the full grid."""
    model.eval()
    errs = []
    for t in frames:
        rho = model.density_on_grid(d["positions"][t], d["numbers"], d["cell"], d["grid"])
        errs.append(float(np.abs(rho - d["nt"][t]).sum() / np.abs(d["nt"][t]).sum()))
    return float(np.mean(errs))


def train_deep_density(data: str | os.PathLike, run_dir: str | os.PathLike,
                       cfg: DeepDensityTrainConfig | None = None, *, n_train: int | None = None,
                       resume: bool = False, progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Train (or resume) Deep Density on frames ``[0, n_train)`` of a dataset (the last
    ``cfg.val_frames`` of them validate). Returns ``{"history": [...], "run_dir": ...}``."""
    run = Path(run_dir)
    cfg, stored = open_run(run, DeepDensityTrainConfig, cfg, resume, data)
    if resume:
        n_train = stored["n_train"]
    d = _frames(data, n_train)
    T = len(d["positions"])
    n_fit = T - cfg.val_frames
    if n_fit < 1 or cfg.val_frames < 1:
        raise DatasetError(f"{T} frames leave {n_fit} to fit after {cfg.val_frames} validation frames")
    if cfg.epochs < 1 or cfg.batch_frames < 1 or cfg.points < 1:
        raise InvalidInput("epochs, batch_frames and points must be positive")
    if sorted(set(d["numbers"].tolist())) != sorted(cfg.model.numbers):
        raise InvalidInput(f"the dataset's species {sorted(set(d['numbers'].tolist()))} differ from the model's "
                           f"{list(cfg.model.numbers)}; set model.numbers")
    torch.manual_seed(cfg.seed)
    model = DeepDensity(cfg.model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps_per_epoch = -(-n_fit // cfg.batch_frames)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * steps_per_epoch)
    history: list[dict[str, Any]] = []
    start = 0
    if resume:
        _, history, start, _ = resume_state(run, model, opt, sched)
    else:
        save_run_config(run, cfg, data, {"n_train": T})
    meta = {"kind": KIND, "config": asdict(cfg.model), "grid": list(d["grid"]), "cell": d["cell"].tolist(),
            "numbers": d["numbers"].tolist(), "train_frames": [0, n_fit], "val_frames": [n_fit, T],
            "train_config": asdict(cfg)}
    pts_all = torch.as_tensor(grid_points(d["cell"], d["grid"]))
    nt = torch.as_tensor(d["nt"]).reshape(T, -1)
    pos = torch.as_tensor(d["positions"])
    Z = torch.as_tensor(d["numbers"])
    cell = torch.as_tensor(d["cell"])
    bar = None
    end = cfg.epochs if stop_after is None else min(cfg.epochs, start + stop_after)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=start * steps_per_epoch, desc="deep-density",
                   unit="batch")
    for epoch in range(start, end):
        model.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(n_fit)
        t0, total, nb = time.perf_counter(), 0.0, 0
        for b0 in range(0, n_fit, cfg.batch_frames):
            loss = 0.0
            for t in order[b0:b0 + cfg.batch_frames]:
                sel = torch.as_tensor(rng.choice(len(pts_all), cfg.points, replace=False))
                rho = model(pos[t], Z, cell, pts_all[sel])
                ref = nt[t, sel]
                loss = loss + (rho - ref).abs().sum() / ref.abs().sum()
            loss = loss / len(order[b0:b0 + cfg.batch_frames])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, nb = total + float(loss.detach()), nb + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total / nb:.4f}")
        record = {"epoch": epoch + 1, "loss": total / nb, "seconds": time.perf_counter() - t0}
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == end:
            record["val_rel_l1"] = relative_l1(model, d, range(n_fit, T))
            history.append(record)
            log.info("epoch %d: %s", epoch + 1, record)
            write_checkpoint(run, model, meta, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
                             epoch + 1, history)
        else:
            history.append(record)
    if bar is not None:
        bar.close()
    return {"history": history, "run_dir": str(run)}


def load_deep_density(run_dir: str | os.PathLike) -> DeepDensity:
    """A trained Deep Density from its run directory (weights only, no unpickling)."""
    meta = read_meta(run_dir)
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{run_dir}: model.json is a {meta.get('kind')!r} model, not {KIND!r}")
    cfg = from_dict(DeepDensityConfig, meta["config"])
    return build_model(run_dir, meta, lambda: DeepDensity(cfg)).eval()
