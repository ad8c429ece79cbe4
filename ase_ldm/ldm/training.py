"""Train the autoencoder + latent diffusion model on a density-trajectory dataset.

* Split by time: the first ``1 - test_fraction`` of the frames train, the rest test.
* Reproducible from the seed: weights from ``torch.manual_seed(seed)``, the batch order of
  epoch e from ``numpy.random.default_rng([seed, e])``, diffusion noise from a
  ``torch.Generator`` whose state is checkpointed.
* Checkpoints every ``checkpoint_every`` epochs (atomically, see :mod:`ase_ldm.core.checkpoint`);
  ``resume=True`` continues from the last one and reproduces the uninterrupted loss curve.
* CPU by default, CUDA when present (``device='auto'``), several GPUs under ``torchrun``
  (DistributedDataParallel; each rank takes every world_size-th batch item, rank 0 writes).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.device import resolve_device
from ..core.runs import open_run, resume_state, save_run_config, write_checkpoint
from ..data.store import open_dataset
from ..errors import DatasetError, InvalidInput
from .config import TrainConfig
from .model import DensityLDM
from .transforms import LogNormalTransform, fit_transform

__all__ = ["TrainingData", "train"]

log = logging.getLogger(__name__)


class TrainingData:
    """Densities of a dataset in memory (spins summed), split by time, with the state transform.

    Pairs are indexed by t, the frame of the condition: the state of frame t needs frame t-1,
    and its target is the state of frame t+1.
    """

    def __init__(self, path: str | os.PathLike, test_fraction: float, max_frames: int | None = None) -> None:
        with open_dataset(path) as ds:
            n = len(ds) if max_frames is None else min(len(ds), max_frames)
            if n < 8:
                raise DatasetError(f"{path}: {n} frames; training needs at least 8 consecutive frames")
            self.n_R = torch.from_numpy(ds.nt_range(0, n).sum(1, dtype=np.float32))
            self.grid = ds.grid
            self.cell = ds.cell(0)
            self.numbers = ds.numbers
            self.dt_fs = ds.frame_interval_fs
            self.dV = ds.volume_element(0)
            self.provenance = {k: v for k, v in ds.attrs.items() if k not in ("units",)}
            self.source = str(Path(path).resolve())
            times = ds.time_fs[:n]
        if np.abs(np.diff(times) - self.dt_fs).max() > 1e-6:
            raise DatasetError(f"{path}: frames are not evenly spaced in time; training needs consecutive frames")
        n_test = max(3, int(round(n * test_fraction)))
        self.n_train = n - n_test
        if self.n_train < 4:
            raise DatasetError(f"{path}: too few frames ({n}) for a training part and a test part")
        self.n_frames = n
        self.train_t = np.arange(1, self.n_train - 1)  # needs t-1 and t+1 inside the training part
        self.test_t = np.arange(self.n_train + 1, n - 1)
        self.transform = fit_transform((self.n_R[i].numpy() for i in range(self.n_train)), self.dt_fs)

    def states(self, t: np.ndarray, transform: LogNormalTransform,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """States at frames t and t+1: two (B, 2, N1, N2, N3) tensors."""
        n = self._on_device(device)
        idx = torch.as_tensor(t, device=device)
        return transform.state(n[idx - 1], n[idx]), transform.state(n[idx], n[idx + 1])

    def _on_device(self, device: torch.device) -> torch.Tensor:
        """The densities on ``device``, copied there once (not once per batch)."""
        if self.n_R.device != device:
            self.n_R = self.n_R.to(device)
        return self.n_R


def check_train_config(cfg: TrainConfig) -> None:
    """Refuse settings the loop cannot run with (InvalidInput naming the setting)."""
    for name in ("epochs", "batch_size", "checkpoint_every"):
        if getattr(cfg, name) < 1:
            raise InvalidInput(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if not 0 < cfg.test_fraction < 1:
        raise InvalidInput(f"test_fraction must be between 0 and 1, got {cfg.test_fraction}")
    if cfg.max_frames is not None and cfg.max_frames < 8:
        raise InvalidInput(f"max_frames must be at least 8, got {cfg.max_frames}")
    if not cfg.lr > 0:
        raise InvalidInput(f"lr must be positive, got {cfg.lr}")


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def _lr_lambda(total_steps: int):
    def f(step: int) -> float:
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    return f


def train(data_path: str | os.PathLike, run_dir: str | os.PathLike, cfg: TrainConfig | None = None, *,
          resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a model; returns the loss history.

    Parameters
    ----------
    data_path : path
        Training dataset (frames evenly spaced in time).
    run_dir : path
        Output folder: model.json, weights, train state, history.json, config.json.
    cfg : TrainConfig, optional
        Required for a new run; when resuming, the run's own config.json is used and a
        different ``cfg`` is refused.
    resume : bool
        Continue from the last checkpoint in ``run_dir``.
    """
    run = Path(run_dir)
    rank, world = _dist_info()
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    cfg, _ = open_run(run, TrainConfig, cfg, resume, data_path)
    check_train_config(cfg)
    device = resolve_device(cfg.device)
    data = TrainingData(data_path, cfg.test_fraction, cfg.max_frames)
    transform = data.transform
    torch.manual_seed(cfg.seed)
    model = DensityLDM(cfg.model, data.grid).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_rank = math.ceil(cfg.batch_size / world)
    steps_per_epoch = math.ceil(len(data.train_t) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.epochs * steps_per_epoch))
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed * 1000 + rank)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume:
        meta, history, start_epoch, state = resume_state(run, model, opt, sched)
        transform = LogNormalTransform(**meta["transform"])
        gen.set_state(state["generator"][rank] if isinstance(state["generator"], list) else state["generator"])
        log.info("resuming %s at epoch %d", run, start_epoch)
    elif rank == 0:
        save_run_config(run, cfg, data_path)
    net: torch.nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    meta_base = {
        "model_config": asdict(cfg.model), "transform": transform.to_dict(), "grid": list(data.grid),
        "cell": data.cell.tolist(), "numbers": data.numbers.tolist(), "timestep_fs": data.dt_fs, "dV": data.dV,
        "train_frames": [0, data.n_train], "test_frames": [data.n_train, data.n_frames],
        "dataset": {"path": data.source, **{k: v for k, v in data.provenance.items() if not isinstance(v, dict)}},
        "train_config": asdict(cfg),
    }
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, desc="train",
                   unit="batch")
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = np.random.default_rng([cfg.seed, epoch]).permutation(data.train_t)
        sums: dict[str, float] = {}
        nb = 0
        t0 = time.perf_counter()
        for b0 in range(0, len(order), cfg.batch_size):
            batch = order[b0 : b0 + cfg.batch_size][rank::world][:per_rank]
            if len(batch) == 0:
                continue
            s_t, s_next = data.states(batch, transform, device)
            losses = net(s_t, s_next, cfg.loss, gen)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            # clipped per network: the autoencoder's large gradients must not scale the denoiser's away
            torch.nn.utils.clip_grad_norm_(model.autoencoder.parameters(), cfg.grad_clip)
            torch.nn.utils.clip_grad_norm_(model.denoiser.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            nb += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v / nb:.4f}" for k, v in sums.items()})
        record = {"epoch": epoch + 1, **{k: v / max(nb, 1) for k, v in sums.items()},
                  "seconds": time.perf_counter() - t0, "frames_per_second": len(order) / (time.perf_counter() - t0)}
        last = epoch + 1 == cfg.epochs
        if (epoch + 1) % cfg.checkpoint_every == 0 or last:
            record.update(test_metrics(model, data, transform, device))
        history.append(record)
        if last and cfg.ldm_finetune_steps > 0:
            record.update(finetune_denoiser(model, data, transform, device, cfg, gen))
            record.update(test_metrics(model, data, transform, device))
        if rank == 0 and ((epoch + 1) % cfg.checkpoint_every == 0 or last):
            gens = gen.get_state()
            train_state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "generator": gens}
            write_checkpoint(run, model, meta_base, train_state, epoch + 1, history)
    if bar is not None:
        bar.close()
    return {"history": history, "run_dir": str(run)}


def finetune_denoiser(model: DensityLDM, data: TrainingData, transform: LogNormalTransform, device: torch.device,
                      cfg: TrainConfig, gen: torch.Generator) -> dict[str, float]:
    """Train the denoiser alone on the frozen encoder's latents of all training pairs.

    The latent mean and scale are recomputed exactly from those latents first. Returns the
    mean LDM loss of the last 10 % of steps.
    """
    model.eval()
    with torch.no_grad():
        t_all = np.arange(1, data.n_train)  # states of frames 1 .. n_train-1
        zs = []
        for b0 in range(0, len(t_all), 32):
            s_t, _ = data.states(t_all[b0 : b0 + 32], transform, device)
            zs.append(model.encode(s_t))
        z = torch.cat(zs)
        model.z_mean.copy_(z.mean(0))
        model.z_std.copy_(((z - z.mean(0)) ** 2).mean().sqrt().clamp_min(1e-6).expand_as(model.z_std))
        u = model.standardize(z)
    cond, target = u[:-1], u[1:]  # consecutive training states: (t, t+1)
    opt = torch.optim.AdamW(model.denoiser.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.ldm_finetune_steps))
    losses = []
    model.denoiser.train()
    for _ in range(cfg.ldm_finetune_steps):
        idx = torch.randint(0, len(cond), (cfg.ldm_finetune_batch,), device=device, generator=gen)
        loss = model.schedule.loss(model.denoiser, target[idx], cond[idx], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.train()
    tail = losses[-max(1, len(losses) // 10):]
    return {"ldm_finetuned": float(np.mean(tail))}


@torch.no_grad()
def test_metrics(model: DensityLDM, data: TrainingData, transform: LogNormalTransform, device: torch.device,
                 max_pairs: int = 32) -> dict[str, float]:
    """Held-out reconstruction error (rel. L1 of the density) and diffusion loss on test pairs."""
    model.eval()
    t = data.test_t[:max_pairs]
    if len(t) == 0:
        return {}
    s_t, s_next = data.states(t, transform, device)
    recon = model.decode(model.encode(s_t))
    n_true, n_rec = transform.density(s_t), transform.density(recon)
    rel_l1 = float((n_rec - n_true).abs().sum() / n_true.abs().sum())
    g = torch.Generator(device=device)
    g.manual_seed(12345)
    u = model.standardize(model.encode(torch.cat([s_t, s_next])))
    ldm = float(model.schedule.loss(model.denoiser, u[len(t):], u[: len(t)], g))
    model.train()
    return {"test_recon_rel_l1": rel_l1, "test_ldm": ldm}
