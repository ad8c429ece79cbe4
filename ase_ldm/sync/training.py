"""Train the atom-synchronised model (:class:`~ase_ldm.sync.net.SyncNet`).

1. Fit the radial prior to the training frames (linear least squares, seconds).
2. Set the network's input and output scales from the training frames.
3. Minimise the squared error of ``nt`` and of the packed PAW matrices, each divided by the
   spread of what the extrapolation misses (so both terms start near 1), over random steps with
   random history lengths (cold starts included) and, optionally, time-reversed histories.

Frames ``[0, n_train)`` train; the last ``val_frames`` of them are held out for validation
(relative L1 of ``nt`` with full history and from a cold start, relative error of D).
Checkpoints (:mod:`ase_ldm.core.checkpoint`) every ``checkpoint_every`` epochs; ``resume=True``
continues from the last one. GPAW is not needed: the data come from a dataset file or a pack.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.checkpoint import read_meta
from ..core.device import resolve_device
from ..core.fourier import band_mask
from ..core.runs import open_run, resume_state, save_run_config, write_checkpoint
from ..errors import DatasetError, InvalidInput
from .config import SyncTrainConfig
from .net import SyncNet, extrapolation_weights
from .prior import RadialPrior, band_limit, fit_radial_prior
from .series import SyncSeries, concatenate, load_pack, series_from_dataset, training_steps
from .symmetry import symmetry_ops

__all__ = ["load_series", "set_scales", "train_sync", "evaluate_series", "SYNC_KIND"]

log = logging.getLogger(__name__)
SYNC_KIND = "sync"


def load_series(path: str | os.PathLike, n_train: int | None, cfg: SyncTrainConfig,
                prior: RadialPrior | None = None) -> tuple[SyncSeries, RadialPrior, dict[str, Any]]:
    """The training frames of a dataset (.h5) or pack (.npz), with a fitted (or given) prior."""
    path = Path(path)
    if path.suffix == ".npz":
        series, stored, attrs = load_pack(path)
        if n_train is not None:
            series = series.subset(n_train)
        if prior is not None and prior.numbers != stored.numbers:
            raise DatasetError(f"{path}: the pack's species {list(stored.numbers)} differ from the run's "
                               f"{list(prior.numbers)}; resume with the pack the run was started on")
        return series, prior or stored, attrs
    from ..data.store import open_dataset

    with open_dataset(path) as ds:
        n = len(ds) if n_train is None else min(n_train, len(ds))
        if prior is None:
            prior = fit_radial_prior(((ds.array("positions", i, i + 1)[0], ds.nt(i).sum(0)) for i in range(n)),
                                     ds.numbers, ds.cell(0), dg=cfg.prior_dg, smoothness=cfg.prior_smoothness)
        series = series_from_dataset(ds, prior, 0, n)
        attrs = {"path": str(path), "timestep_fs": ds.frame_interval_fs,
                 **{k: v for k, v in ds.attrs.items() if isinstance(v, (str, int, float))}}
    return series, prior, attrs


@torch.no_grad()
def set_scales(model: SyncNet, series: SyncSeries, species: torch.Tensor, ops: list | None = None) -> None:
    """Input/output normalisation of ``model`` from the statistics of a training series.

    With augmentation ``ops``, the mean PAW matrix of each species is averaged over them, so the
    cold-start baseline is the same in every orientation the model is trained on.
    """
    H = model.history
    T = len(series)
    if T < H + 2:
        raise DatasetError(f"{T} training frames; the synchronised model needs at least {H + 2}")
    p, r, D = series.p.double(), series.r.double(), series.D.double()
    W = extrapolation_weights(H)
    t = torch.arange(H, T)

    def extrap(x: torch.Tensor, h: int) -> torch.Tensor:
        return sum(W[h, k - 1] * x[t - k] for k in range(1, h + 1)) if h else torch.zeros_like(x[t])

    eps = 1e-12
    model.grid_scales.copy_(torch.tensor([p.mean(), p.std(), extrap(r, H).std() + eps,
                                          (r[1:] - r[:-1]).std() + eps, (p[1:] - p[:-1]).std() + eps]))
    model.out_scale.copy_(torch.stack([(r[t] - extrap(r, h)).std() for h in range(H + 1)]) + eps)
    sp = species.cpu()
    for s in range(model.n_species):
        mean = D[:, sp == s].mean((0, 1))
        if ops:
            ss = np.full(1, s)
            mean = sum(series.layout.transform(mean[None], op, ss)[0] for op in ops) / len(ops)
        model.D_mean[s] = mean.float()
    D_mean = model.D_mean.double()[sp]
    # statistics of each packed entry over the atoms that have it
    have = model.D_mask.double()[sp].bool()  # (Na, nD)

    def entry_std(x: torch.Tensor) -> torch.Tensor:  # x: (T', Na, nD) -> (nD,)
        x = x.reshape(-1, model.nD)
        m = have.repeat(x.shape[0] // have.shape[0], 1)
        n = m.sum(0).clamp(min=2)
        mu = (x * m).sum(0) / n
        return torch.sqrt((((x - mu) * m) ** 2).sum(0) / (n - 1))

    model.D_scales[0] = entry_std(D - D_mean) + 1e-8
    model.D_scales[1] = entry_std(D[1:] - D[:-1]) + 1e-8
    outs = [entry_std(D[t] - (extrap(D, h) if h else D_mean)) for h in range(H + 1)]
    model.D_out_scale.copy_(torch.stack(outs) + 1e-8)


def _draw_h(rng: np.random.Generator, n: int, cfg: SyncTrainConfig, H: int) -> np.ndarray:
    u = rng.random(n)
    h = np.full(n, H)
    h[u < cfg.cold_fraction + cfg.short_fraction] = rng.integers(1, H, n)[u < cfg.cold_fraction + cfg.short_fraction]
    h[u < cfg.cold_fraction] = 0
    return h


def _losses(model: SyncNet, b: dict[str, torch.Tensor], species: torch.Tensor,
            band: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    nt, D = model(b["p"], b["p_hist"], b["r_hist"], b["h"], b["frac"], species, b["D_hist"], band)
    h = b["h"]
    l_nt = (((nt - b["nt"]) / model.out_scale[h][:, None, None, None]) ** 2).mean()
    have = model.D_mask[species][None].to(D.dtype)  # entries that exist for each atom's species
    l_D = ((((D - b["D"]) / model.D_out_scale[h][:, None, :]) ** 2) * have).sum() / (have.sum() * D.shape[0])
    return {"nt": l_nt, "D": l_D}


@torch.no_grad()
def evaluate_series(model: SyncNet, series: SyncSeries, species: torch.Tensor, steps: range, h: int,
                    batch_size: int = 8, band: torch.Tensor | None = None) -> dict[str, float]:
    """One-step metrics over ``steps`` with ``h`` past steps (forward in time).

    Returns mean relative L1 of nt (= integral of |dn| per electron of nt), mean relative
    Frobenius error of D, and the same for the extrapolation baseline the model starts from.
    """
    model.eval()
    H = model.history
    l1, l1_base, dfro, dfro_base = [], [], [], []
    for s in range(0, len(steps), batch_size):
        t = torch.as_tensor(list(steps[s:s + batch_size]))
        hh = torch.full_like(t, h)
        b = series.batch(t, hh, torch.zeros_like(t, dtype=torch.bool), H)
        nt, D = model(b["p"], b["p_hist"], b["r_hist"], b["h"], b["frac"], species, b["D_hist"], band)
        w = model.coef[hh.to(nt.device)]
        base = b["p"] + torch.einsum("bk,bk...->b...", w, b["r_hist"])
        D_base = torch.einsum("bk,bkad->bad", w, b["D_hist"]) if h else model.D_mean[species][None]
        ref = b["nt"]
        norm = ref.abs().sum((1, 2, 3))
        l1 += ((nt - ref).abs().sum((1, 2, 3)) / norm).tolist()
        l1_base += ((base - ref).abs().sum((1, 2, 3)) / norm).tolist()
        dn = b["D"].norm(dim=(1, 2))
        dfro += ((D - b["D"]).norm(dim=(1, 2)) / dn).tolist()
        dfro_base += ((D_base - b["D"]).norm(dim=(1, 2)) / dn).tolist()
    return {"rel_l1": float(np.mean(l1)), "rel_l1_baseline": float(np.mean(l1_base)),
            "D_rel": float(np.mean(dfro)), "D_rel_baseline": float(np.mean(dfro_base))}


def _lr(total: int):
    warmup = max(1, min(100, total // 10))

    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup)
        return warm * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))

    return f


def train_sync(data_path: str | os.PathLike, run_dir: str | os.PathLike, cfg: SyncTrainConfig | None = None, *,
               n_train: int | None = None, resume: bool = False, progress: bool = True,
               stop_after: int | None = None, extra_data: Sequence[str | os.PathLike] = ()) -> dict[str, Any]:
    """Train (or resume) a synchronised model on frames ``[0, n_train)`` of a dataset or pack.

    ``extra_data``: more trajectories of the same system (datasets or packs, all their frames),
    trained on beside the fit frames of ``data_path``; no history reaches across two
    trajectories, and validation stays on the last ``val_frames`` of ``data_path``'s frames.
    The prior is fitted on ``data_path``. ``stop_after`` ends this call after that many epochs with
    a checkpoint (for time-limited jobs); ``resume`` continues on the same schedule as an
    uninterrupted run (with the run's own extra trajectories).
    Returns the history (one record per epoch: losses, seconds, validation metrics).
    """
    run = Path(run_dir)
    cfg, stored = open_run(run, SyncTrainConfig, cfg, resume, data_path)
    if resume:
        n_train = stored["n_train"]
        if extra_data and [str(x) for x in extra_data] != stored.get("extra_data", []):
            raise InvalidInput(f"{run}: resume with the run's own extra trajectories ({stored.get('extra_data', [])}), "
                               "or none")
        extra_data = stored.get("extra_data", [])
    extra_data = [str(x) for x in extra_data]
    for name in ("epochs", "batch_size", "checkpoint_every"):
        if getattr(cfg, name) < 1:
            raise InvalidInput(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if n_train is not None and n_train < 1:
        raise InvalidInput(f"the number of training frames must be positive, got {n_train}")
    device = resolve_device(cfg.device)
    prior = RadialPrior.from_dict(read_meta(run)["prior"]) if resume else None
    series, prior, attrs = load_series(data_path, n_train, cfg, prior)
    n_main = len(series)
    extras = []
    for path in extra_data:
        extra, _, extra_attrs = load_series(path, None, cfg, prior)
        if not np.isclose(extra_attrs.get("timestep_fs") or 0.0, attrs.get("timestep_fs") or 0.0):
            raise DatasetError(f"{path}: frames {extra_attrs.get('timestep_fs')} fs apart, {data_path}'s "
                               f"{attrs.get('timestep_fs')} fs; the history needs one time step")
        extras.append(extra)
    series, starts = concatenate([*extras, series])
    n_train = len(series)
    H = cfg.model.history
    n_fit = n_train - cfg.val_frames
    if n_main - cfg.val_frames < H + 2 or cfg.val_frames < 1:
        raise DatasetError(f"{n_main} frames leave {n_main - cfg.val_frames} to fit after {cfg.val_frames} "
                           "validation frames; "
                         f"record more frames or lower val_frames")
    species = torch.as_tensor(prior.species_index(series.numbers), device=device)
    torch.manual_seed(cfg.seed)
    model = SyncNet(cfg.model, series.layout)
    ops = symmetry_ops(series.cell, series.grid) if cfg.augment else []
    if ops and not series.layout.can_rotate:
        log.warning("no augmentation: the projectors' angular momenta are unknown, or include l > 1 without GPAW")
        ops = []
    fit = series.subset(n_fit)
    set_scales(model, fit, species.cpu(), ops)
    g_max = band_limit(((fit.p[i] + fit.r[i]).double().numpy() for i in range(0, n_fit, max(1, n_fit // 20))),
                       series.cell)
    band = torch.as_tensor(band_mask(series.cell, series.grid, g_max), device=device)
    model.to(device)
    series = series.to(device)
    # training steps: forward and reversed, each history inside its own trajectory and the fit frames
    items = training_steps(starts, n_fit, H, cfg.reverse)
    steps_per_epoch = math.ceil(len(items) / cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr(cfg.epochs * steps_per_epoch))
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume:
        _, history, start_epoch, _ = resume_state(run, model, opt, sched)
        log.info("resuming %s at epoch %d", run, start_epoch)
    else:
        save_run_config(run, cfg, data_path, {"n_train": n_main, "extra_data": extra_data})
    meta_base = {
        "kind": SYNC_KIND, "sync_config": asdict(cfg.model), "prior": prior.to_dict(), **series.layout.to_meta(),
        "grid": list(series.grid), "cell": series.cell.tolist(), "numbers": series.numbers.tolist(),
        "augmentation_ops": len(ops), "band_limit": g_max,
        "grid_spacing": (np.linalg.norm(series.cell, axis=1) / np.array(series.grid)).tolist(),
        "timestep_fs": attrs.get("timestep_fs"), "train_frames": [0, n_main - cfg.val_frames],
        "val_frames": [n_main - cfg.val_frames, n_main],
        "extra_data": [{"path": path, "frames": len(x)} for path, x in zip(extra_data, extras)],
        "dataset": {k: v for k, v in attrs.items() if isinstance(v, (str, int, float))},
        "train_config": asdict(cfg),
    }
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, desc="train-sync",
                   unit="batch")
    val_steps = range(max(n_fit, H), n_train)
    end = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, end):
        model.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(items))
        h_all = _draw_h(rng, len(items), cfg, H)
        sums = {"nt": 0.0, "D": 0.0}
        nb = 0
        t0 = time.perf_counter()
        for b0 in range(0, len(order), cfg.batch_size):
            sel = order[b0:b0 + cfg.batch_size]
            t = torch.as_tensor([items[i][0] for i in sel])
            rev = torch.as_tensor([items[i][1] for i in sel])
            b = series.batch(t, torch.as_tensor(h_all[b0:b0 + len(sel)]), rev, H)
            if ops:
                b = series.augment(b, [ops[i] for i in rng.integers(len(ops), size=len(sel))])
            losses = _losses(model, b, species, band)
            total = losses["nt"] + cfg.d_weight * losses["D"]
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            for k in sums:
                sums[k] += float(losses[k].detach())
            nb += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v / nb:.4f}" for k, v in sums.items()})
        record: dict[str, Any] = {"epoch": epoch + 1, **{f"loss_{k}": v / max(nb, 1) for k, v in sums.items()},
                                  "seconds": time.perf_counter() - t0}
        last = epoch + 1 == end
        if (epoch + 1) % cfg.checkpoint_every == 0 or last:
            warm = evaluate_series(model, series, species, val_steps, H, band=band)
            cold = evaluate_series(model, series, species, val_steps, 0, band=band)
            record.update({f"val_{k}": v for k, v in warm.items()})
            record.update({f"val_cold_{k}": v for k, v in cold.items()})
            log.info("epoch %d: %s", epoch + 1, record)
            history.append(record)
            train_state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
            write_checkpoint(run, model, meta_base, train_state, epoch + 1, history)
        else:
            history.append(record)
    if bar is not None:
        bar.close()
    return {"history": history, "run_dir": str(run)}
