"""Calibrations of a trained grid-latent diffusion model, stored in its model.json.

- :func:`calibrate_spectrum`: the decoder's spectral gain (:mod:`ase_ldm.gldm.spectrum`), fitted
  on reconstructions of training frames. Run it first: the served mean, and so the spread's
  calibration, depend on it.
- :func:`calibrate_spread`: the spread of the samples against the errors.
- :func:`calibrate_latent_speed`: the training data's RMS latent change per step, the target of
  the autonomous rollout's thermostat (:meth:`~ase_ldm.gldm.predictor.GridLDMPredictor.rollout`).
- :func:`calibrate_rollout_spectrum`: the ``rollout`` gain of what sampled autonomous rollouts
  serve, fitted on the model's own rollouts from training frames. It needs the spectral gain and
  the latent speed; run it after them.

The spread of K samples (:meth:`~ase_ldm.gldm.predictor.GridLDMPredictor.predict_samples`) is
multiplied by one factor per history length, fitted on the validation frames the model never
trained on, so that its mean equals the mean relative L1 error of the served mean there
(spread-skill ratio 1). How well the spread follows the error frame by frame is measured, not
fitted (``benchmarks/bench_gldm.py``).
"""

from __future__ import annotations

import json
import numbers
import os
from typing import Any

import numpy as np

from ..data.atomic import write_text_atomic
from ..errors import CheckpointError, InvalidInput

__all__ = ["calibrate_latent_speed", "calibrate_rollout_spectrum", "calibrate_spectrum", "calibrate_spread"]


def _check_training_data(pred: Any, ds: Any, data: str | os.PathLike, max_frames: int | None = None) -> None:
    """Refuse a dataset other than the one the model trained on (frame count, grid, cell, atoms),
    and a number of frames that is not a positive integer."""
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer))
                                   or max_frames < 1):
        raise InvalidInput(f"max_frames must be a positive integer, got {max_frames!r}")
    pred.check_setup(ds.numbers, ds.cell(0), ds.grid)
    want = pred.meta.get("dataset") or {}
    same = (list(ds.grid) == list(pred.meta.get("grid", ds.grid)) and len(ds.numbers) == len(pred.meta["numbers"])
            and np.allclose(ds.cell(0), pred.meta.get("cell", ds.cell(0)), atol=1e-6)
            and ("frames" not in want or int(want["frames"]) == len(ds)))
    if not same:
        raise InvalidInput(f"{data} ({len(ds)} frames, grid {tuple(ds.grid)}, {len(ds.numbers)} atoms) is not the "
                           f"dataset {pred.name} trained on ({want.get('path', '?')}, {want.get('frames', '?')} "
                           f"frames, grid {tuple(pred.meta.get('grid', ()))}); calibrate on that one")


def _train_frames(pred: Any) -> tuple[int, int]:
    """The model's training frames of its main dataset, [lo, hi)."""
    try:
        lo, hi = pred.meta.get("train_frames", (0, pred.meta["val_frames"][0]))
        lo, hi = int(lo), int(hi)
    except (KeyError, TypeError, ValueError, IndexError):
        raise CheckpointError(f"{pred.name}'s model.json has no valid train_frames or val_frames "
                              f"({pred.meta.get('train_frames')!r}); the file is damaged") from None
    return lo, hi


def _write_meta(model: str | os.PathLike, out: dict[str, Any]) -> None:
    from ..core.registry import model_dir

    path = model_dir(model) / "model.json"
    meta = json.loads(path.read_text())
    meta.update(out)
    write_text_atomic(path, json.dumps(meta, indent=1))


def calibrate_spectrum(model: str | os.PathLike, data: str | os.PathLike, *, max_frames: int = 60,
                       write: bool = False) -> dict[str, Any]:
    """Fit ``spectral_gain`` on reconstructions of the model's training frames of ``data``.

    Parameters
    ----------
    model : run directory or shipped name (grid-latent diffusion family)
    data : the dataset the model trained on (frames ``train_frames`` of model.json are read)
    max_frames : training frames used, evenly spaced
    write : store ``spectral_gain`` in the model's model.json (without a rollout gain fitted
        before); then re-run :func:`calibrate_rollout_spectrum` and :func:`calibrate_spread`
    """
    import torch

    from ..core.fourier import band_mask
    from ..data.store import open_dataset
    from .model import served_density
    from .predictor import GridLDMPredictor
    from .spectrum import fit_spectral_gain

    pred = GridLDMPredictor.load(model, device="cpu", drop_rollout_gain=True)
    if pred.meta.get("band_limit") is None:
        raise InvalidInput(f"{model} has no band_limit in its model.json; retrain it with this version")
    lo, hi = _train_frames(pred)
    with open_dataset(data) as ds:
        _check_training_data(pred, ds, data, max_frames)
        if hi > len(ds) or hi <= lo:
            raise InvalidInput(f"{data} has {len(ds)} frames; the model trained on frames {lo}..{hi - 1}")
        frames = np.unique(np.linspace(lo, hi - 1, min(max_frames, hi - lo)).round().astype(int))
        cell, grid = ds.cell(0), ds.grid
        natoms = len(ds.numbers)
        band = torch.as_tensor(band_mask(cell, grid, pred.meta["band_limit"]), dtype=torch.float32)
        dV = abs(float(np.linalg.det(cell))) / float(np.prod(grid))

        def pairs():
            for t in frames:
                x = ds.nt(int(t)).sum(0).astype(np.float64)
                with torch.inference_mode():
                    u = pred.model.encode(torch.as_tensor(x[None], dtype=torch.float32))
                    xhat = served_density(pred.model.decode(u), band, pred.electrons_per_atom * natoms, dV)
                yield x, xhat[0].double().numpy()

        gain = fit_spectral_gain(pairs(), cell, pred.meta["band_limit"], frames.tolist())
    out = {"spectral_gain": gain}
    if write:
        _write_meta(model, out)
    return out


def calibrate_latent_speed(model: str | os.PathLike, data: str | os.PathLike, *, write: bool = False
                           ) -> dict[str, Any]:
    """Fit ``latent_speed``: the RMS change of the standardised latent from one training frame of
    ``data`` to the next (frames ``train_frames`` of model.json, one trajectory), averaged over
    the steps.

    Parameters
    ----------
    model : run directory or shipped name (grid-latent diffusion family)
    data : the dataset the model trained on
    write : store ``latent_speed`` in the model's model.json; a rollout gain fitted at the former
        speed is dropped (re-run :func:`calibrate_rollout_spectrum`)
    """
    import torch

    from ..data.store import open_dataset
    from .predictor import GridLDMPredictor
    from .spectrum import without_rollout_gain

    pred = GridLDMPredictor.load(model, device="cpu", drop_rollout_gain=True)
    lo, hi = _train_frames(pred)
    speeds = []
    with open_dataset(data) as ds:
        _check_training_data(pred, ds, data)
        if hi > len(ds) or hi - lo < 2:
            raise InvalidInput(f"{data} has {len(ds)} frames; the model trained on frames {lo}..{hi - 1}")
        last = None
        for a in range(lo, hi, 32):
            with torch.inference_mode():
                u = pred.model.encode(torch.as_tensor(ds.nt_range(a, min(a + 32, hi)).sum(1), dtype=torch.float32))
            if last is not None:
                u = torch.cat([last, u])
            speeds.append((u[1:] - u[:-1]).pow(2).mean(dim=(1, 2, 3, 4)).sqrt())
            last = u[-1:]
    out = {"latent_speed": float(torch.cat(speeds).mean())}
    if write:
        gain = pred.meta.get("spectral_gain")
        _write_meta(model, {**out, **({"spectral_gain": without_rollout_gain(gain)} if gain else {})})
    return out


def calibrate_rollout_spectrum(model: str | os.PathLike, data: str | os.PathLike, *, chains: int = 4,
                               steps: int = 250, burn_in: int = 10, sampler_steps: int = 10, seed: int = 0,
                               max_frames: int = 180, blocks: int = 6, max_block_spread: float = 0.02,
                               hold_steps: float = 10.0, write: bool = False) -> dict[str, Any]:
    """Fit ``spectral_gain['rollout']`` on the model's own sampled rollouts from training frames.

    ``chains`` rollouts (DDIM with ``sampler_steps`` levels, the thermostat on, seeds ``seed``,
    ``seed + 1``, ...) start from pairs of training frames spread over ``train_frames``; after
    ``burn_in`` steps, what they serve is compared shell by shell with the mean Fourier amplitude of
    up to ``max_frames`` training frames in ``blocks`` blocks of consecutive frames
    (:func:`ase_ldm.gldm.spectrum.fit_rollout_gain`; the shells whose mean amplitude varies between
    the blocks are left alone). A gain fitted before is ignored while the rollouts run. The
    reference's mean amplitude in the fitted shells is stored too (``rollout_fit['target']``): the
    rollout's amplitude hold keeps each chain at it (:mod:`ase_ldm.gldm.hold`).

    Parameters
    ----------
    model : run directory or shipped name (grid-latent diffusion family), with ``spectral_gain``
        and ``latent_speed`` fitted
    data : the dataset the model trained on
    chains, steps, burn_in, sampler_steps, seed : the calibration rollouts
    max_frames : training frames in the reference, evenly spaced
    blocks : blocks of consecutive reference frames for the stationarity test (at least 2)
    max_block_spread : the stationarity threshold (relative spread of a shell's mean amplitude over
        the blocks) of :func:`~ase_ldm.gldm.spectrum.fit_rollout_gain`
    hold_steps : the relaxation time (steps, >= 1) the rollouts' amplitude hold takes by default
    write : store the gain (with these settings as ``rollout_fit``) in the model's model.json

    Returns
    -------
    ``{"spectral_gain": ...}``, the model's gain with ``rollout`` and ``rollout_fit`` added.
    """
    from ..data.store import open_dataset
    from .predictor import GridLDMPredictor
    from .spectrum import fit_rollout_gain, without_rollout_gain

    sampler, thermostat = "ddim", 1.0
    for name, value, least in (("chains", chains, 1), ("steps", steps, 1), ("burn_in", burn_in, 0),
                               ("sampler_steps", sampler_steps, 1), ("max_frames", max_frames, 1),
                               ("blocks", blocks, 2), ("seed", seed, 0)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
                or not least <= value < 2 ** 62:
            raise InvalidInput(f"{name} must be an integer of at least {least}, got {value!r}")
    chains, steps, burn_in, sampler_steps, max_frames, blocks, seed = (
        int(v) for v in (chains, steps, burn_in, sampler_steps, max_frames, blocks, seed))
    if isinstance(max_block_spread, (bool, np.bool_)) or not isinstance(max_block_spread, numbers.Real) \
            or not 0 < max_block_spread < 10:
        raise InvalidInput(f"max_block_spread must be a relative spread in (0, 10), got {max_block_spread!r}")
    if isinstance(hold_steps, (bool, np.bool_)) or not isinstance(hold_steps, numbers.Real) \
            or not 1 <= hold_steps < 1e12:
        raise InvalidInput(f"hold_steps must be a relaxation time of at least 1 step, got {hold_steps!r}")
    if not isinstance(write, (bool, np.bool_)):
        raise InvalidInput(f"write must be True or False, got {write!r}")
    if burn_in >= steps:
        raise InvalidInput(f"burn_in ({burn_in}) must be below steps ({steps}): nothing would be left to fit")
    pred = GridLDMPredictor.load(model, device="cpu", drop_rollout_gain=True)
    gain = pred.meta.get("spectral_gain")
    if gain is None or pred.meta.get("latent_speed") is None or pred.meta.get("band_limit") is None:
        raise InvalidInput(f"{model} needs its spectral gain, latent speed and band limit first; run "
                           "calibrate_spectrum and calibrate_latent_speed")
    gain = without_rollout_gain(gain)
    pred.meta["spectral_gain"] = gain  # the rollouts serve without a former rollout gain
    lo, hi = _train_frames(pred)
    with open_dataset(data) as ds:
        _check_training_data(pred, ds, data, max_frames)
        if hi > len(ds) or hi - lo < 2:
            raise InvalidInput(f"{data} has {len(ds)} frames; the model trained on frames {lo}..{hi - 1}")
        if chains > hi - lo - 1:
            raise InvalidInput(f"chains ({chains}) must be at most {hi - lo - 1}: each starts from its own pair of "
                               f"the {hi - lo} training frames")
        starts = np.unique(np.linspace(lo + 1, hi - 1, chains).round().astype(int)).tolist()
        frames = np.unique(np.linspace(lo, hi - 1, min(max_frames, hi - lo)).round().astype(int)).tolist()

        def generated():
            for i, t in enumerate(starts):
                chain = pred.rollout(ds.nt(t - 1).sum(0), ds.nt(t).sum(0), steps, sampler=sampler,
                                     n_steps=sampler_steps, seed=seed + i, thermostat=thermostat, rollout_gain=False)
                for step, nt in enumerate(chain, start=1):
                    if step > burn_in:
                        yield nt[0]

        if len(frames) < blocks:
            raise InvalidInput(f"{len(frames)} reference frames cannot fill {blocks} blocks; lower blocks")
        reference = ((ds.nt(int(t)).sum(0) for t in chunk) for chunk in np.array_split(frames, blocks))
        fitted = fit_rollout_gain(reference, generated(), ds.cell(0), pred.meta["band_limit"], gain,
                                  max_block_spread=float(max_block_spread))
    fit = {"chains": chains, "starts": starts, "steps": steps, "burn_in": burn_in, "sampler": sampler,
           "sampler_steps": sampler_steps,
           "thermostat": thermostat, "seed": seed, "reference_frames": len(frames), "blocks": blocks,
           "max_block_spread": float(max_block_spread),
           "from_shell": fitted["from_shell"], "block_spread": fitted["block_spread"],
           "target": fitted["target"], "hold_steps": float(hold_steps)}
    out = {"spectral_gain": {**gain, "rollout": fitted["knots"], "rollout_fit": fit}}
    if write:
        _write_meta(model, out)
    return out


def calibrate_spread(model: str | os.PathLike, data: str | os.PathLike, *, samples: int = 8, max_frames: int = 24,
                     seed: int = 0, write: bool = False) -> dict[str, Any]:
    """Fit ``spread_scale`` (one factor per history length) on the model's validation frames of ``data``.

    Parameters
    ----------
    model : run directory or shipped name (grid-latent diffusion family)
    data : the dataset the model trained on (its ``val_frames`` are read)
    samples : samples per frame
    max_frames : validation frames used, evenly spaced
    write : store ``spread_scale``, ``spread_sampler`` and this calibration in the model's model.json
    """
    from ..data.store import open_dataset
    from .predictor import GridLDMPredictor

    pred = GridLDMPredictor.load(model, device="cpu", drop_rollout_gain=True)
    lo, hi = pred.meta["val_frames"]
    pred.spread_scale = {}
    scale, detail = {}, {}
    with open_dataset(data) as ds:
        _check_training_data(pred, ds, data, max_frames)
        if hi > len(ds):
            raise InvalidInput(f"{data} has {len(ds)} frames; the model validates on frames {lo}..{hi - 1}")
        frames = np.unique(np.linspace(lo, hi - 1, min(max_frames, hi - lo)).round().astype(int))
        for h in range(pred.history + 1):
            pred.max_history = h
            err, spread = [], []
            for t in frames:
                pred.reset()
                for k in range(t - h, t):
                    f = ds.frame(int(k))
                    pred.observe(f.positions, f.nt_sR.sum(0), None, f.numbers, f.cell)
                f = ds.frame(int(t))
                ref = f.nt_sR.sum(0).astype(np.float64)
                s = pred.predict_samples(f.positions, f.numbers, f.cell, ds.grid, samples, seed=seed + int(t))
                err.append(float(np.abs(s.nt_R - ref).sum() / ref.sum()))
                spread.append(s.spread)
            scale[str(h)] = float(np.mean(err) / max(np.mean(spread), 1e-12))
            detail[str(h)] = {"mean_error": float(np.mean(err)), "mean_raw_spread": float(np.mean(spread))}
    out = {"spread_scale": scale, "spread_sampler": pred.spread_sampler,
           "spread_calibration": {"frames": frames.tolist(), "samples": samples, "seed": seed, **detail}}
    if write:
        _write_meta(model, out)
    return out
