"""Training of the grid-latent diffusion model: the autoencoder, then the denoiser on frozen latents.

Stage 1 trains the periodic patch autoencoder on every training frame (random point symmetries
of the cell as augmentation) with the relative L1 error of the density plus the paper's sJSD.
Stage 2 freezes it, encodes every frame once, and trains the condition encoder and the denoiser
on (past latents, prior densities of the atoms) -> next latent, forward and reversed in time,
with the history or the atoms hidden at random so that one network serves every mode.

A run directory is resumable at any moment (:mod:`ase_ldm.core.runs`): the checkpoint counter
("epoch" in model.json) counts autoencoder epochs, then chunks of ``checkpoint_every``
denoiser steps.
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

from ..core.checkpoint import load_train_state, load_weights, read_meta
from ..core.config import from_dict
from ..core.device import resolve_device
from ..core.fourier import band_mask
from ..core.runs import open_run, save_run_config, write_checkpoint
from ..errors import CheckpointError, DatasetError, InvalidInput
from ..ldm.losses import scaled_jsd
from ..sync.prior import PriorEvaluator, RadialPrior, band_limit, fit_radial_prior
from ..sync.symmetry import symmetry_ops
from .config import GldmConfig, GldmTrainConfig, check_train_config
from .model import GridLDM, served_density
from .nets import latent_grid
from .spectrum import UnstableSpectrum, spectral_filter, without_rollout_gain

__all__ = ["GLDM_KIND", "Trajectories", "train_gldm", "relative_l1"]

log = logging.getLogger(__name__)

GLDM_KIND = "gldm"


def relative_l1(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per-frame relative L1 error sum|pred - true| / sum|true| over the last three axes, (B,)."""
    return (pred - true).abs().sum((-3, -2, -1)) / true.abs().sum((-3, -2, -1))


class Trajectories:
    """Frames of one or more trajectories of the same system, in memory, with their priors.

    Attributes
    ----------
    nt : (T, N1, N2, N3) float32, e/A^3
    prior : (T, N1, N2, N3) float32, e/A^3, the learned prior of each frame's atoms
    traj : (T,) int, which trajectory each frame belongs to
    """

    def __init__(self, nt: np.ndarray, positions: np.ndarray, traj: np.ndarray, prior: RadialPrior,
                 numbers: np.ndarray, cell: np.ndarray) -> None:
        self.nt = torch.as_tensor(np.asarray(nt, np.float32))
        self.positions = np.asarray(positions, np.float64)
        self.traj = np.asarray(traj)
        #: frames that are never a training example's target or history
        self.val = np.zeros(0, np.int64)
        #: the plane waves a served density keeps (rfft half-grid mask), or None
        self.band: torch.Tensor | None = None
        #: volume element, Angstrom^3
        self.dV = abs(float(np.linalg.det(cell))) / float(np.prod(self.nt.shape[1:]))
        ev = PriorEvaluator(prior, numbers, cell, tuple(self.nt.shape[1:]))
        with torch.no_grad():
            self.prior = torch.cat([ev(torch.as_tensor(self.positions[i:i + 64]))
                                    for i in range(0, len(self.positions), 64)]).float()

    def __len__(self) -> int:
        return len(self.nt)

    def neighbour(self, g: np.ndarray, j: int, reverse: np.ndarray, hidden: np.ndarray | None = None) -> np.ndarray:
        """Index of the frame ``j`` steps before ``g`` (after it where ``reverse``), or -1 outside its
        trajectory or among the ``hidden`` frames (T,) bool."""
        h = np.where(reverse, g + j, g - j)
        ok = (h >= 0) & (h < len(self))
        h = np.where(ok, h, 0)
        ok = ok & (self.traj[h] == self.traj[g])
        if hidden is not None:
            ok = ok & ~hidden[h]
        return np.where(ok, h, -1)


def _read(path: str | os.PathLike, stop: int | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    from ..data.store import open_dataset

    with open_dataset(path) as ds:
        if ds.nspins != 1:
            raise DatasetError(f"{path}: spin-polarised data; the grid-latent model learns spin-paired densities")
        n = len(ds) if stop is None else stop
        attrs = {"numbers": ds.numbers.copy(), "cell": ds.cell(0), "grid": ds.grid, "timestep_fs": ds.frame_interval_fs}
        return ds.nt_range(0, n)[:, 0], ds.array("positions", 0, n), attrs


def _split(n: int, cfg: GldmTrainConfig) -> tuple[int, int]:
    """(fit frames, training frames) of the main dataset: fit [0, n_fit), validation [n_fit, n_train)."""
    n_train = n - int(round(n * cfg.test_fraction))
    n_val = max(1, int(round(0.1 * n_train)))
    if n_train - n_val < cfg.model.denoiser.history + 2:
        raise DatasetError(f"{n} frames leave {n_train - n_val} to fit; record more frames")
    return n_train - n_val, n_train


def train_gldm(data_path: str | os.PathLike, run_dir: str | os.PathLike, cfg: GldmTrainConfig | None = None, *,
               resume: bool = False, progress: bool = True, extra_data: Sequence[str | os.PathLike] = (),
               stop_after: int | None = None, init_autoencoder: str | os.PathLike | None = None,
               finetune: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train (or resume) a grid-latent diffusion model.

    Parameters
    ----------
    data_path : the main dataset; its last ``test_fraction`` is never read, and the last tenth
        of the rest validates (and calibrates the spread of the samples).
    run_dir : the run directory (model.json, weights, history).
    extra_data : more trajectories of the same system (all frames train).
    stop_after : end this call after writing this many checkpoints (for time-limited jobs);
        ``resume`` continues on the same schedule as an uninterrupted run.
    init_autoencoder : a run directory (or shipped name) of this family whose trained autoencoder
        (and prior) this new run takes over, frozen: only the denoiser stage runs.
    finetune : a run directory (or shipped name) of this family whose whole model (autoencoder,
        prior, latent statistics, condition encoder and denoiser) this new run takes over; the
        denoiser stage continues from its weights for ``denoiser_steps`` with this config (for
        example with ``self_rollout``). The model settings must equal the source's.

    Returns
    -------
    dict with the history (one record per checkpoint) and the run directory.
    """
    run = Path(run_dir)
    cfg, stored = open_run(run, GldmTrainConfig, cfg, resume, data_path)
    if resume:
        if extra_data and [str(x) for x in extra_data] != stored.get("extra_data", []):
            raise InvalidInput(f"{run}: resume with the run's own extra trajectories ({stored.get('extra_data', [])})")
        extra_data = stored.get("extra_data", [])
    extra_data = [str(x) for x in extra_data]
    check_train_config(cfg)
    device = resolve_device(cfg.device)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)

    # -- data ----------------------------------------------------------------------------------
    from ..data.store import open_dataset

    with open_dataset(data_path) as ds:
        n_frames = len(ds)
    n_fit, n_train = _split(n_frames, cfg)
    nt0, pos0, attrs = _read(data_path, n_train)
    latent_grid(attrs["grid"], cfg.model.autoencoder.patch)
    parts = [(nt0, pos0)]
    for path in extra_data:
        nt_e, pos_e, a = _read(path, None)
        if a["grid"] != attrs["grid"] or not np.allclose(a["cell"], attrs["cell"]) or \
                not np.array_equal(a["numbers"], attrs["numbers"]):
            raise DatasetError(f"{path}: another system (grid, cell or atoms) than {data_path}; "
                               "extra trajectories must repeat the main one's system")
        if not np.isclose(a["timestep_fs"] or 0.0, attrs["timestep_fs"] or 0.0):
            raise DatasetError(f"{path}: frames {a['timestep_fs']} fs apart, not {attrs['timestep_fs']} fs")
        parts.append((nt_e, pos_e))
    numbers, cell = attrs["numbers"], np.asarray(attrs["cell"], float)
    source = None
    if init_autoencoder is not None and finetune is not None:
        raise InvalidInput("give init_autoencoder (a new denoiser) or finetune (the source's denoiser), not both")
    init = finetune if finetune is not None else init_autoencoder
    if init is not None:
        if resume:
            raise InvalidInput("init_autoencoder and finetune start a new run; resume without them")
        from ..core.registry import model_dir

        source = model_dir(init)
        src_meta = read_meta(source)
        if src_meta.get("kind") != GLDM_KIND:
            raise InvalidInput(f"{init} is not a grid-latent diffusion run")
        from .predictor import GridLDMPredictor

        # the whole checkpoint checked (files, checksums) before any write; its weights are taken from here
        src_state = GridLDMPredictor.load(source, device="cpu").model.state_dict()
        try:
            src_epoch = int(src_meta["epoch"])
            src_ae_epochs = int((src_meta.get("train_config") or {}).get("ae_epochs", cfg.ae_epochs))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CheckpointError(f"{source}/model.json has no valid epoch or train_config; the file is "
                                  "damaged") from None
        src_cfg = from_dict(GldmConfig, src_meta["gldm_config"])
        if src_cfg.autoencoder != cfg.model.autoencoder:
            raise InvalidInput(f"{init}'s autoencoder settings differ from this config's; use the same "
                               "autoencoder block")
        if finetune is not None and src_cfg != cfg.model:
            raise InvalidInput(f"{init}'s model settings differ from this config's; a fine-tune keeps the model: "
                               f"use its model block {asdict(src_cfg)}")
        if src_epoch < src_ae_epochs:
            raise InvalidInput(f"{init} has not finished its autoencoder stage")
        if finetune is not None and src_epoch <= src_ae_epochs:
            raise InvalidInput(f"{init} has no denoiser yet (it stopped after its autoencoder stage); fine-tune a "
                               "run whose denoiser has trained, or start one with init_autoencoder")
        # the source must not have trained on what this run validates on
        ours = {"train_frames": [0, n_fit], "val_frames": [n_fit, n_train],
                "extra_data": [len(p[0]) for p in parts[1:]]}
        theirs = {"train_frames": src_meta.get("train_frames"), "val_frames": src_meta.get("val_frames"),
                  "extra_data": [int(e["frames"]) for e in src_meta.get("extra_data", [])]}
        if ours != theirs:
            raise InvalidInput(f"{init} was trained on another split ({theirs}) than this run's ({ours}); use its "
                               "data, extra data and test_fraction, or its validation frames leak into this run's")
    if resume:
        prior = RadialPrior.from_dict(read_meta(run)["prior"])
    elif source is not None:
        prior = RadialPrior.from_dict(src_meta["prior"])
    else:
        prior = fit_radial_prior(((pos0[i], nt0[i]) for i in range(0, n_fit, 2)), numbers, cell)
    data = Trajectories(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                        np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(parts)]), prior, numbers, cell)
    val = np.arange(n_fit, n_train)
    data.val = val
    fit = np.setdiff1d(np.arange(len(data)), val)
    electrons_per_atom = float(data.nt[fit].double().sum((1, 2, 3)).mean()) * abs(np.linalg.det(cell)) / \
        np.prod(attrs["grid"]) / len(numbers)

    model = GridLDM(cfg.model)
    logn = data.nt[fit].clamp(min=1e-12).log()
    model.log_mu.fill_(float(logn.mean()))
    model.log_sigma.fill_(float(logn.std()))
    model.prior_mean.fill_(float(data.prior[fit].mean()))
    model.prior_std.fill_(float(data.prior[fit].std()))
    del logn
    model.to(device)
    E = cfg.ae_epochs
    meta_base = {
        "kind": GLDM_KIND, "gldm_config": asdict(cfg.model), "prior": prior.to_dict(),
        "grid": list(attrs["grid"]), "cell": cell.tolist(), "numbers": np.asarray(numbers).tolist(),
        "grid_spacing": (np.linalg.norm(cell, axis=1) / np.array(attrs["grid"])).tolist(),
        "timestep_fs": attrs["timestep_fs"], "electrons_per_atom": electrons_per_atom,
        "train_frames": [0, n_fit], "val_frames": [n_fit, n_train], "test_frames": [n_train, n_frames],
        "dataset": {"path": str(data_path), "frames": n_frames},
        "band_limit": band_limit((nt0[i] for i in range(0, n_fit, max(1, n_fit // 20))), cell),
        "extra_data": [{"path": p, "frames": len(x[0])} for p, x in zip(extra_data, parts[1:])],
        "train_config": asdict(cfg),
    }
    data.band = torch.as_tensor(band_mask(cell, tuple(attrs["grid"]), meta_base["band_limit"]), device=device)
    history: list[dict[str, Any]] = []
    budget = [math.inf if stop_after is None else int(stop_after)]
    done = 0
    state: dict[str, Any] = {}
    if resume:
        meta = read_meta(run)
        load_weights(run, model, meta)
        state = load_train_state(run, meta)
        done = int(meta["epoch"])
        history = list(meta.get("history", []))[:done]
        meta_base["spread_scale"] = meta.get("spread_scale")
        for key in ("autoencoder_from", "finetuned_from", "spectral_gain"):
            if key in meta:
                meta_base[key] = meta[key]
        log.info("resuming %s at checkpoint %d", run, done)
    else:
        save_run_config(run, cfg, data_path, {"extra_data": extra_data})
    if source is not None:  # the trained autoencoder and the transforms (finetune: everything)
        theirs = src_state
        if finetune is not None:
            model.load_state_dict(theirs)
            meta_base["finetuned_from"] = str(finetune)
            if src_meta.get("spectral_gain") is not None:  # the same decoder: its gain holds until refitted
                meta_base["spectral_gain"] = without_rollout_gain(src_meta["spectral_gain"])  # new chains
        else:
            keep = {k: v for k, v in theirs.items() if k.startswith("autoencoder.") or k in ("log_mu", "log_sigma")}
            model.load_state_dict(keep, strict=False)
        model.to(device)
        meta_base["autoencoder_from"] = str(init)
        done = E

    # how self-rollout serves the model's own predictions: as a rollout does (a fine-tune has the gain)
    data.serve = torch.as_tensor(spectral_filter(meta_base.get("spectral_gain"), "mean", cell, tuple(attrs["grid"]),
                                                 meta_base["band_limit"]), dtype=torch.float32, device=device)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        steps_ae = E * math.ceil(len(fit) / cfg.ae_batch)
        bar = tqdm(total=steps_ae + cfg.denoiser_steps, desc="train-gldm", unit="step")
        bar.update(min(done, E) * math.ceil(len(fit) / cfg.ae_batch)
                   + min(cfg.denoiser_steps, max(0, done - E) * cfg.checkpoint_every))

    # -- stage 1: the autoencoder ----------------------------------------------------------------
    ae = model.autoencoder
    ops = symmetry_ops(cell, attrs["grid"])
    opt = torch.optim.AdamW(ae.parameters(), lr=cfg.ae_lr, weight_decay=1e-6)
    total = E * math.ceil(len(fit) / cfg.ae_batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(total))
    if done and done <= E and "ae_optimizer" in state:
        opt.load_state_dict(state["ae_optimizer"])
        sched.load_state_dict(state["ae_scheduler"])
    for epoch in range(done, E):
        ae.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(fit)
        t0, loss_sum, nb = time.perf_counter(), 0.0, 0
        for b0 in range(0, len(order), cfg.ae_batch):
            idx = order[b0:b0 + cfg.ae_batch]
            nt = data.nt[idx].to(device)
            op = ops[int(rng.integers(len(ops)))]
            nt = op.grid(nt)
            x = model.to_x(nt)
            x_hat = ae(x)
            loss = relative_l1(model.from_x(x_hat), nt).mean()
            if cfg.sjsd_weight:
                loss = loss + cfg.sjsd_weight * scaled_jsd(x_hat, x, scale=1.0, bins=64, value_range=(-4.0, 4.0))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ae.parameters(), 5.0)
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
            nb += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(stage="autoencoder", loss=f"{loss_sum / nb:.4f}")
        rec = {"epoch": epoch + 1, "stage": "autoencoder", "loss": loss_sum / nb,
               "seconds": time.perf_counter() - t0,
               "val_reconstruction": _reconstruction(model, data, val, device)}
        log.info("autoencoder epoch %d: %s", epoch + 1, rec)
        history.append(rec)
        write_checkpoint(run, model, meta_base, {"ae_optimizer": opt.state_dict(), "ae_scheduler": sched.state_dict()},
                         epoch + 1, history)
        budget[0] -= 1
        if budget[0] <= 0:
            if bar is not None:
                bar.close()
            return {"history": history, "run_dir": str(run)}
    done = max(done, E)

    # -- stage 2: latents, then the denoiser -----------------------------------------------------
    model.eval()
    with torch.no_grad():
        z = torch.cat([ae.encode(model.to_x(data.nt[i:i + 32].to(device))) for i in range(0, len(data), 32)])
        if done == E and "finetuned_from" not in meta_base:  # first time: the latent statistics
            model.z_mean.copy_(z[torch.as_tensor(fit)].mean((0, 2, 3, 4)))
            model.z_std.copy_(z[torch.as_tensor(fit)].std((0, 2, 3, 4)))
        u = (z - model.z_mean[:, None, None, None]) / model.z_std[:, None, None, None]
    params = list(model.condition.parameters()) + list(model.denoiser.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.denoiser_lr, weight_decay=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(cfg.denoiser_steps))
    if done > E and "denoiser_optimizer" in state:
        opt.load_state_dict(state["denoiser_optimizer"])
        sched.load_state_dict(state["denoiser_scheduler"])
    step = (done - E) * cfg.checkpoint_every
    prior_dev = data.prior.to(device)
    t0, loss_sum, nb = time.perf_counter(), 0.0, 0
    while step < cfg.denoiser_steps:
        if step % cfg.checkpoint_every == 0:  # each chunk has its own random streams: resuming repeats them
            rng = np.random.default_rng([cfg.seed, 1, step])
            torch.manual_seed(cfg.seed * 100003 + step)
        model.condition.train()
        model.denoiser.train()
        g = rng.choice(fit, cfg.denoiser_batch)
        b = _batch(model, data, u, prior_dev, g, rng, cfg, device)
        if cfg.self_rollout:
            _push_forward(model, data, u, prior_dev, g, b, rng, cfg, device, electrons_per_atom * len(numbers))
        k = torch.as_tensor(rng.integers(1, model.schedule.steps + 1, len(g)), device=device)
        mean_level = torch.as_tensor(rng.random(len(g)) < cfg.mean_fraction, device=device)
        eps = torch.randn_like(b["target"])
        z_k = model.schedule.q_sample(b["target"], k, eps)
        z_k = torch.where(mean_level[:, None, None, None, None], torch.zeros_like(z_k), z_k)
        k = torch.where(mean_level, torch.full_like(k, model.denoiser.levels), k)
        past, atoms, flags = model.condition_tensors(b["past"], b["priors"], b["has_past"], b["has_atoms"])
        z0 = model.denoiser(z_k, k, past, atoms, flags)
        loss = ((z0 - b["target"]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sched.step()
        step += 1
        loss_sum += float(loss.detach())
        nb += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(stage="denoiser", loss=f"{loss_sum / nb:.4f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.denoiser_steps:
            model.eval()
            rec = {"epoch": E + math.ceil(step / cfg.checkpoint_every), "stage": "denoiser", "steps": step,
                   "loss": loss_sum / nb, "seconds": time.perf_counter() - t0,
                   **_one_step_errors(model, data, u, prior_dev, val, device, electrons_per_atom, len(numbers))}
            log.info("denoiser step %d: %s", step, rec)
            history.append(rec)
            write_checkpoint(run, model, meta_base, {"denoiser_optimizer": opt.state_dict(),
                                                     "denoiser_scheduler": sched.state_dict()}, rec["epoch"], history)
            t0, loss_sum, nb = time.perf_counter(), 0.0, 0
            budget[0] -= 1
            if budget[0] <= 0:
                break
    if bar is not None:
        bar.close()
    if step >= cfg.denoiser_steps and budget[0] >= 0:
        # finished: spectrum, rollout speed, rollout spectrum, then the spread
        from .calibration import (
            calibrate_latent_speed,
            calibrate_rollout_spectrum,
            calibrate_spectrum,
            calibrate_spread,
        )

        calibrate_spectrum(run, data_path, write=True)
        calibrate_latent_speed(run, data_path, write=True)
        n, frames = cfg.rollout_calibration_steps, int(meta_base["train_frames"][1] - meta_base["train_frames"][0])
        if n and frames >= 4:  # 2 blocks of 2 frames at least; up to 6 blocks, 4 chains
            try:
                calibrate_rollout_spectrum(run, data_path, chains=min(4, frames - 1), steps=n,
                                           burn_in=min(10, n // 4), seed=cfg.seed,
                                           blocks=min(6, frames // 2), write=True)
            except UnstableSpectrum as err:  # rollouts then serve through the sample gain alone
                log.warning("no rollout gain fitted: %s", err)
        elif n:
            log.warning("no rollout gain fitted: %d training frames are too few", frames)
        out = calibrate_spread(run, data_path, seed=cfg.seed, write=True)
        log.info("spread calibration: %s", out["spread_scale"])
    return {"history": history, "run_dir": str(run)}


def _cosine(total: int):
    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / 50)
        return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1))))

    return f


def _batch(model: GridLDM, data: Trajectories, u: torch.Tensor, prior: torch.Tensor, g: np.ndarray,
           rng: np.random.Generator, cfg: GldmTrainConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """A training batch: targets g, history in or against time, modes drawn at random."""
    H = model.history
    reverse = rng.random(len(g)) < 0.5
    hidden = np.zeros(len(data), bool)
    hidden[data.val] = True
    hist = np.stack([data.neighbour(g, j, reverse, hidden) for j in range(1, H + 1)], 1)  # (B, H)
    drop = rng.random(len(g)) < cfg.drop_history
    hist[drop] = -1
    # partial histories: keep only the first h entries (h drawn) so every length is trained
    h_keep = rng.integers(1, H + 1, len(g))
    hist[np.arange(H)[None, :] >= h_keep[:, None]] = -1
    # a missing entry hides all older ones
    hist = np.where(np.cumprod(hist >= 0, axis=1).astype(bool), hist, -1)
    has_past = torch.as_tensor(hist >= 0, device=device)
    has_atoms = torch.as_tensor(rng.random(len(g)) >= cfg.drop_atoms, device=device)
    hi = torch.as_tensor(np.where(hist >= 0, hist, 0), device=device)
    past = u[hi]  # (B, H, C, n, n, n)
    if cfg.history_noise:
        past = past + cfg.history_noise * torch.randn_like(past)
    priors = torch.cat([prior[torch.as_tensor(g, device=device)][:, None], prior[hi]], dim=1)
    return {"target": u[torch.as_tensor(g, device=device)], "past": past, "priors": priors,
            "has_past": has_past, "has_atoms": has_atoms, "hist": hist, "reverse": reverse, "hidden": hidden}


def _push_forward(model: GridLDM, data: Trajectories, u: torch.Tensor, prior: torch.Tensor, g: np.ndarray,
                  b: dict[str, Any], rng: np.random.Generator, cfg: GldmTrainConfig, device: torch.device,
                  electrons: float) -> None:
    """Self-rollout: for a ``cfg.self_rollout`` share of the samples whose history is full and
    continues for one more step (about a third of all samples with H = 2 and drop_history 0.3),
    replace the newest past latent by the model's own mean prediction of that step (no
    gradient), made from the steps before it in the sample's mode (with or without atoms),
    decoded, served (band and, in a fine-tune, the source's spectral gain) and re-encoded as a
    rollout does. The target stays the converged step, so the denoiser learns to correct what
    its own outputs carry into the next step."""
    H = model.history
    hist = b["hist"]
    older = data.neighbour(g, H + 1, b["reverse"], b["hidden"])
    inner = np.concatenate([hist[:, 1:], older[:, None]], axis=1)  # (B, H): the newest entry's history
    sel = np.flatnonzero((rng.random(len(g)) < cfg.self_rollout) & (hist[:, 0] >= 0) & np.all(inner >= 0, axis=1))
    if not len(sel):
        return
    s = torch.as_tensor(sel, device=device)
    ii = torch.as_tensor(inner[sel], device=device)
    priors = torch.cat([prior[torch.as_tensor(hist[sel, 0], device=device)][:, None], prior[ii]], dim=1)
    with torch.no_grad():
        cond = model.condition_tensors(u[ii], priors, torch.ones(len(sel), H, device=device), b["has_atoms"][s])
        nt = served_density(model.decode(model.generate(*cond, mode="mean")), data.serve, electrons, data.dV)
        new = model.encode(nt)
    if cfg.history_noise:
        new = new + cfg.history_noise * torch.randn_like(new)
    b["past"][s, 0] = new


def _reconstruction(model: GridLDM, data: Trajectories, frames: np.ndarray, device: torch.device) -> float:
    model.eval()
    with torch.no_grad():
        errs = [relative_l1(model.from_x(model.autoencoder(model.to_x(data.nt[frames[i:i + 16]].to(device)))),
                            data.nt[frames[i:i + 16]].to(device)) for i in range(0, len(frames), 16)]
    model.train()
    return float(torch.cat(errs).mean())


def _condition(model: GridLDM, data: Trajectories, u: torch.Tensor, prior: torch.Tensor, g: np.ndarray,
               history: int, atoms: bool, device: torch.device) -> tuple[torch.Tensor, ...]:
    H = model.history
    hist = np.stack([data.neighbour(g, j, np.zeros(len(g), bool)) for j in range(1, H + 1)], 1)
    hist[:, history:] = -1
    hist = np.where(np.cumprod(hist >= 0, axis=1).astype(bool), hist, -1)
    hi = torch.as_tensor(np.where(hist >= 0, hist, 0), device=device)
    priors = torch.cat([prior[torch.as_tensor(g, device=device)][:, None], prior[hi]], dim=1)
    has_atoms = torch.full((len(g),), atoms, device=device)
    return model.condition_tensors(u[hi], priors, torch.as_tensor(hist >= 0, device=device), has_atoms)


def _one_step_errors(model: GridLDM, data: Trajectories, u: torch.Tensor, prior: torch.Tensor, frames: np.ndarray,
                     device: torch.device, electrons_per_atom: float, natoms: int) -> dict[str, float]:
    """Mean-mode relative L1 of nt on ``frames``: with the full history, from the atoms alone, and
    without the atoms (the autonomous mode, one step)."""
    out = {}
    with torch.no_grad():
        for name, h, atoms in (("val_one_step", model.history, True), ("val_atoms_only", 0, True),
                               ("val_autonomous", model.history, False)):
            errs = []
            for i in range(0, len(frames), 16):
                g = frames[i:i + 16]
                cond = _condition(model, data, u, prior, g, h, atoms, device)
                nt = model.decode(model.generate(*cond, mode="mean"))
                nt = served_density(nt, data.band, electrons_per_atom * natoms, data.dV)
                errs.append(relative_l1(nt, data.nt[g].to(device)))
            out[name] = float(torch.cat(errs).mean())
    return out
