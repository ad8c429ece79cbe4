"""The grid-latent diffusion model behind the registry's protocol, with samples and their spread.

Modes of one trained network (:class:`GridLDMPredictor`):

- **mean** (:meth:`~GridLDMPredictor.predict`): one denoiser pass at the mean level, the model's
  estimate of the conditional mean of the next density given the observed past (up to
  ``max_history`` steps) and the atoms of the step; with no history, from the atoms alone.
  Deterministic; what calculators and SCF guesses use.
- **samples** (:meth:`~GridLDMPredictor.predict_samples`): K seedable few-step DDIM samples, each
  in a frame turned by a random operation of the cell; their per-voxel standard deviation,
  calibrated (:mod:`ase_ldm.gldm.calibration`), measures the model's uncertainty (the spread).
- **autonomous rollout** (:meth:`~GridLDMPredictor.rollout`): the paper's mode, no atoms: each
  step is generated from the model's own past latents.

Densities are spin-summed ``nt`` in electrons/Angstrom^3 on grids with the training spacing; each
prediction is scaled to the training data's electrons per atom.
"""

from __future__ import annotations

import numbers
import os
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.cells import check_cell, checked_history, grid_for
from ..core.checkpoint import build_model
from ..core.config import from_dict
from ..core.device import resolve_device
from ..errors import AseLdmError, CheckpointError, InvalidInput, ModelMismatch
from ..sync.prior import PriorEvaluator, RadialPrior
from ..sync.symmetry import SymmetryOp, symmetry_ops
from .config import GldmConfig, check_model_config
from .hold import AmplitudeHold, has_hold
from .model import GridLDM, served_density
from .nets import latent_grid
from .spectrum import check_spectral_gain, spectral_filter, without_rollout_gain

__all__ = ["GridLDMPredictor", "Samples", "thermostatted"]

SAMPLERS = ("ddim", "ddpm")
#: the sampler the spread is calibrated with and :meth:`GridLDMPredictor.predict_samples` uses
SPREAD_SAMPLER = {"sampler": "ddim", "steps": 10, "eta": 1.0}


@dataclass(frozen=True)
class Samples:
    """A prediction with its uncertainty.

    Attributes
    ----------
    nt_R : (N1, N2, N3) the mean-mode density, e/A^3.
    std_R : (N1, N2, N3) per-voxel standard deviation over the samples, e/A^3, times the
        calibration factor of the checkpoint (``spread_scale``, fitted on validation frames).
    spread : float
        sum |std_R| / sum |nt_R|: the predicted relative L1 error.
    samples : (K, N1, N2, N3) the samples themselves, e/A^3.
    """

    nt_R: np.ndarray
    std_R: np.ndarray
    spread: float
    samples: np.ndarray


def _valid_speed(speed: Any) -> bool:
    return not isinstance(speed, bool) and isinstance(speed, numbers.Real) and 0 < speed < 1e6


def thermostatted(new: torch.Tensor, last: torch.Tensor, speed: float, tau: float) -> torch.Tensor:
    """``last + lam v`` for the latent change ``v = new - last`` (B, C, n1, n2, n3), with the
    Berendsen factor lam = sqrt(1 + (speed^2 / s^2 - 1) / tau) per chain, s = RMS of v."""
    v = new - last
    s2 = v.pow(2).mean(dim=tuple(range(1, v.ndim)), keepdim=True).clamp(min=1e-20)
    lam = (1 + (speed**2 / s2 - 1) / tau).clamp(min=0).sqrt()
    return last + lam * v


class GridLDMPredictor:
    """A trained grid-latent diffusion model (see the module docstring)."""

    min_history = 0
    predicts_D = False

    def __init__(self, model: GridLDM, prior: RadialPrior, meta: dict[str, Any], device: torch.device,
                 symmetry_average: int = 1) -> None:
        self.model = model.to(device).eval()
        self.prior = prior
        self.meta = meta
        self.device = device
        self.name = str(meta.get("name", "model"))
        self.species = tuple(int(z) for z in prior.numbers)
        self.grid_spacing = np.asarray(meta["grid_spacing"], float)
        self.timestep_fs = meta.get("timestep_fs")
        self.history = model.history
        #: the training system (the autonomous rollout's)
        self.grid = tuple(int(k) for k in meta["grid"])
        self.cell = np.asarray(meta["cell"], float)
        self.numbers = np.asarray(meta["numbers"], int)
        self._max_history = self.history
        self.electrons_per_atom = float(meta["electrons_per_atom"])
        if isinstance(symmetry_average, bool) or not isinstance(symmetry_average, (int, np.integer)) \
                or symmetry_average < 1:
            raise InvalidInput(f"symmetry_average must be a positive integer, got {symmetry_average!r}")
        #: average the mean over this many of the cell's operations (1: none; at most all of them)
        self.symmetry_average = int(symmetry_average)
        self.spread_scale = {int(k): float(v) for k, v in (meta.get("spread_scale") or {}).items()}
        #: the sampler of :meth:`predict_samples`: the one the spread was calibrated with
        self.spread_sampler = dict(meta.get("spread_sampler") or SPREAD_SAMPLER)
        #: sampler of the rollouts: 'ddim' (``sampler_steps`` levels) or 'ddpm'
        self.sampler, self.sampler_steps = "ddim", 10
        self._gen = torch.Generator(device=device).manual_seed(0)
        self._setup: tuple | None = None
        self._evaluator: PriorEvaluator | None = None
        #: observed steps, newest first: (latent, prior, nt, positions)
        self._past: deque[tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]] = deque(maxlen=self.history)
        self._ops: list[SymmetryOp] = []

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str | os.PathLike, device: str = "auto", max_history: int | None = None,
             symmetry_average: int = 1, drop_rollout_gain: bool = False) -> GridLDMPredictor:
        """Load a run directory or pretrained name (see :func:`ase_ldm.core.registry.load`).
        ``drop_rollout_gain``: load without model.json's rollout gain, even a damaged one (the
        calibrations that replace it)."""
        from ..core.registry import load

        return load(name_or_path, device, max_history=max_history, expect=cls, symmetry_average=symmetry_average,
                    drop_rollout_gain=drop_rollout_gain)

    @classmethod
    def from_checkpoint(cls, run: Path, meta: dict[str, Any], device: str = "auto", **options: Any
                        ) -> GridLDMPredictor:
        """The registry's loader: build the networks described by ``meta`` and load the weights."""
        unknown = set(options) - {"symmetry_average", "drop_rollout_gain"}
        if unknown:
            raise InvalidInput("the grid-latent diffusion model takes the option symmetry_average, not "
                               f"{sorted(unknown)}")
        if options.pop("drop_rollout_gain", False) and isinstance(meta.get("spectral_gain"), dict):
            meta = {**meta, "spectral_gain": without_rollout_gain(meta["spectral_gain"])}
        for key in ("gldm_config", "prior", "grid_spacing", "electrons_per_atom"):
            if key not in meta:
                raise CheckpointError(f"{run}/model.json lacks {key!r}; the file is incomplete")
        try:
            prior = RadialPrior.from_dict(meta["prior"])
            cfg = from_dict(GldmConfig, meta["gldm_config"])
            check_model_config(cfg)
            spacing = np.asarray(meta["grid_spacing"], dtype=float)
            ok = (spacing.shape == (3,) and bool(np.all(spacing > 0)) and 1 <= cfg.autoencoder.patch <= 8
                  and 0 < cfg.autoencoder.channels <= 4096 and 0 < cfg.denoiser.channels <= 4096
                  and 0 < cfg.denoiser.history <= 16 and 0 < len(cfg.denoiser.dilations) <= 64
                  and 2 <= cfg.denoiser.steps <= 100000 and float(meta["electrons_per_atom"]) > 0)
        except (KeyError, TypeError, ValueError, AseLdmError) as err:
            raise CheckpointError(f"{run}/model.json has an invalid grid-latent model description ({err})") from None
        if not ok:
            raise CheckpointError(f"{run}/model.json describes an impossible model; the file is damaged")
        if meta.get("spectral_gain") is not None:
            try:
                check_spectral_gain(meta["spectral_gain"])
            except CheckpointError as err:
                raise CheckpointError(f"{run}/{err}") from None
        speed = meta.get("latent_speed")
        if speed is not None and not _valid_speed(speed):
            raise CheckpointError(f"{run}/model.json's latent_speed {speed!r} is damaged (a positive number is "
                                  "expected); refit it with ase_ldm.gldm.calibration.calibrate_latent_speed")
        model = build_model(run, meta, lambda: GridLDM(cfg))
        return cls(model, prior, meta, resolve_device(device), options.get("symmetry_average", 1))

    # -- the registry's protocol -------------------------------------------------------------
    @property
    def max_history(self) -> int:
        return self._max_history

    @max_history.setter
    def max_history(self, value: int) -> None:
        self._max_history = checked_history(value, self.history)

    def grid_for(self, cell: np.ndarray) -> tuple[int, int, int]:
        """The grid with the model's spacing on ``cell`` (cell lengths / spacing, rounded)."""
        return grid_for(cell, self.grid_spacing)

    def seed(self, seed: int) -> None:
        """Restart the noise stream of the samples and rollouts."""
        self._gen.manual_seed(int(seed))

    def check_setup(self, numbers: np.ndarray, cell: np.ndarray, grid: tuple[int, int, int]) -> None:
        """Refuse species, cells and grids the model cannot serve (ModelMismatch saying what to change)."""
        check_cell(cell, grid, self.meta.get("cell", np.eye(3)), self.grid_spacing,
                   "the convolutions see grid neighbours, whose geometry the cell sets; train on cells of this shape")
        try:
            self.prior.species_index(np.asarray(numbers))
        except ValueError as err:
            raise ModelMismatch(str(err)) from None
        try:
            n = latent_grid(tuple(grid), self.model.cfg.autoencoder.patch)
        except InvalidInput as err:
            raise ModelMismatch(str(err)) from None
        if min(n) < max(self.model.cfg.denoiser.dilations):
            raise ModelMismatch(f"the cell is too small for this model: its latent grid {n} is smaller than the "
                                f"denoiser's largest dilation {max(self.model.cfg.denoiser.dilations)}")

    def _prepare(self, numbers: np.ndarray, cell: np.ndarray, grid: tuple[int, int, int]) -> None:
        key = (np.asarray(numbers).tobytes(), np.asarray(cell, float).round(8).tobytes(), tuple(grid))
        if key == self._setup:
            return
        self.check_setup(numbers, cell, grid)
        self._evaluator = PriorEvaluator(self.prior, numbers, cell, tuple(grid)).to(self.device)
        self._natoms = len(numbers)
        self._dV = abs(float(np.linalg.det(np.asarray(cell, float)))) / float(np.prod(grid))
        self._filter = self._filter_for(cell, grid, "mean")
        self._ops = symmetry_ops(np.asarray(cell, float), tuple(grid))
        if self.symmetry_average > len(self._ops):
            raise ModelMismatch(f"the cell has {len(self._ops)} symmetry operations of its grid; symmetry_average="
                                f"{self.symmetry_average} needs that many")
        self._inv_cell = np.linalg.inv(np.asarray(cell, float))
        self._cell = np.asarray(cell, float)
        self._setup = key
        self._past.clear()

    def _filter_for(self, cell: np.ndarray, grid: tuple[int, ...], kind: str) -> torch.Tensor | None:
        """The rfft weights a decoded density is served through: the data's band (model.json's
        ``band_limit``, 1/A) times the decoder's spectral gain of ``kind`` ('mean' for served means
        and the spread, 'sample' for sampled rollouts, 'rollout' for what they yield;
        :mod:`ase_ldm.gldm.spectrum`), or None."""
        w = spectral_filter(self.meta.get("spectral_gain"), kind, cell, tuple(grid), self.meta.get("band_limit"))
        return None if w is None else torch.as_tensor(w, dtype=torch.float32, device=self.device)

    def reset(self) -> None:
        """Forget the observed history."""
        self._past.clear()

    @torch.inference_mode()
    def observe(self, positions: np.ndarray, nt_R: np.ndarray, D_aii: Sequence[np.ndarray] | None,
                numbers: np.ndarray, cell: np.ndarray, *, predicted: bool = False) -> None:
        """Add a converged (or, ``predicted``, the model's own) step to the history; D is not read."""
        nt_R = np.asarray(nt_R)
        if nt_R.ndim != 3:
            raise InvalidInput(f"the observed density must be spin-summed, (N1, N2, N3); got shape {nt_R.shape}")
        if positions is None:
            raise InvalidInput("observe needs the positions of the observed step")
        self._prepare(numbers, cell, nt_R.shape)
        if not np.all(np.isfinite(nt_R)):
            raise InvalidInput("the observed density has non-finite values")
        nt = torch.as_tensor(nt_R, dtype=torch.float32, device=self.device)
        pos = np.asarray(positions, float)
        self._past.appendleft((self.model.encode(nt[None])[0], self._prior(pos), nt, pos))

    def _prior(self, positions: np.ndarray | None) -> torch.Tensor:
        if positions is None:
            return torch.zeros(self._evaluator.grid, device=self.device)
        pos = np.asarray(positions, float)
        if pos.shape != (self._natoms, 3) or not np.all(np.isfinite(pos)):
            raise InvalidInput(f"positions must be finite, shape ({self._natoms}, 3); got {pos.shape}")
        return self._evaluator(torch.as_tensor(pos, dtype=torch.float32, device=self.device)[None])[0]

    def _moved(self, positions: np.ndarray, op: SymmetryOp) -> np.ndarray:
        """Positions (Na, 3) A after the cell operation ``op``."""
        frac = op.frac(torch.as_tensor(np.asarray(positions, float) @ self._inv_cell)).numpy()
        return frac @ self._cell

    def _condition(self, positions: np.ndarray | None, batch: int = 1,
                   op: SymmetryOp | None = None) -> tuple[torch.Tensor, ...]:
        """The denoiser's condition for the target ``positions`` (None: no atoms), the whole setup
        carried through the cell operation ``op`` when given (history re-encoded)."""
        H = self.history
        past = list(self._past)[: self.max_history]
        n = tuple(s // self.model.cfg.autoencoder.patch for s in self._evaluator.grid)
        C = self.model.cfg.autoencoder.latent_channels
        u = torch.zeros(1, H, C, *n, device=self.device)
        priors = torch.zeros(1, H + 1, *self._evaluator.grid, device=self.device)
        has_past = torch.zeros(1, H, device=self.device)
        if positions is not None:
            priors[0, 0] = self._prior(positions if op is None else self._moved(positions, op))
        for j, (u_j, p_j, nt_j, pos_j) in enumerate(past):
            if op is not None:
                u_j = self.model.encode(op.grid(nt_j)[None])[0]
                p_j = self._prior(self._moved(pos_j, op))
            u[0, j], priors[0, j + 1], has_past[0, j] = u_j, p_j, 1.0
        has_atoms = torch.full((1,), positions is not None, device=self.device)
        cond = self.model.condition_tensors(u, priors, has_past, has_atoms)
        return tuple(c.expand(batch, *c.shape[1:]) for c in cond)

    def _mean(self, positions: np.ndarray | None) -> torch.Tensor:
        """The served mean (N1, N2, N3): the mean mode, averaged over ``symmetry_average`` cell operations."""
        ops = self._ops[: self.symmetry_average] if self.symmetry_average > 1 else [None]
        conds = [self._condition(positions, 1, op) for op in ops]
        u = self.model.generate(*(torch.cat(c) for c in zip(*conds)), mode="mean")
        dens = self._density(u)
        return torch.stack([d if op is None else op.inverse().grid(d) for op, d in zip(ops, dens)]).mean(0)

    def _density(self, u: torch.Tensor) -> torch.Tensor:
        return served_density(self.model.decode(u), self._filter, self.electrons_per_atom * self._natoms, self._dV)

    @torch.inference_mode()
    def predict(self, positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray, grid: tuple[int, int, int],
                *, seed: int | None = None) -> tuple[np.ndarray, None]:
        """The mean-mode density (N1, N2, N3) e/A^3 at ``positions``, and None (no PAW matrices)."""
        self._prepare(numbers, cell, grid)
        if seed is not None:
            self.seed(seed)
        return self._mean(positions).double().cpu().numpy(), None

    @torch.inference_mode()
    def predict_samples(self, positions: np.ndarray | None, numbers: np.ndarray, cell: np.ndarray,
                        grid: tuple[int, int, int], samples: int, *, seed: int | None = None) -> Samples:
        """The mean-mode density with ``samples`` samples and their calibrated spread.

        The samples come from the sampler the spread was calibrated with (``spread_sampler``,
        whatever :meth:`set_sampler` chose for rollouts). ``positions`` None samples without the
        atoms (the autonomous mode; needs history; its spread carries the calibration of the
        mode with atoms).
        """
        if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 2:
            raise InvalidInput(f"a spread needs at least 2 samples, got {samples!r}")
        self._prepare(numbers, cell, grid)
        if positions is None and min(len(self._past), self.max_history) == 0:
            raise InvalidInput("without atoms the model needs at least one observed step (and max_history >= 1)")
        if seed is not None:
            self.seed(seed)
        mean = self._mean(positions)
        # each sample in a frame turned by a random operation of the cell: where the network is unsure,
        # its answers for equivalent frames disagree (the spread then follows the error, BENCHMARKS.md)
        pick = torch.randint(len(self._ops), (samples,), generator=self._gen, device=self.device).tolist()
        ops = [self._ops[i] for i in pick]
        conds = [self._condition(positions, 1, op) for op in ops]
        sp = self.spread_sampler
        u = self.model.generate(*(torch.cat(c) for c in zip(*conds)), mode=sp["sampler"], n_steps=int(sp["steps"]),
                                eta=float(sp["eta"]), generator=self._gen)
        s = torch.stack([op.inverse().grid(d) for op, d in zip(ops, self._density(u))])
        scale = self.spread_scale.get(min(len(self._past), self.max_history), 1.0)
        std = s.std(0) * scale
        spread = float(std.abs().sum() / mean.abs().sum())
        return Samples(mean.double().cpu().numpy(), std.double().cpu().numpy(), spread, s.double().cpu().numpy())

    @property
    def has_rollout_gain(self) -> bool:
        """Whether model.json holds a fitted rollout gain, which sampled rollouts are served through."""
        return "rollout" in (self.meta.get("spectral_gain") or {})

    def set_sampler(self, sampler: str, steps: int = 10) -> None:
        """'ddim' with ``steps`` levels, or 'ddpm' (all levels)."""
        if sampler not in SAMPLERS:
            raise InvalidInput(f"unknown sampler {sampler!r}; use one of {SAMPLERS}")
        most = self.model.schedule.steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= most:
            raise InvalidInput(f"sampler steps must be between 1 and {self.model.schedule.steps}, got {steps!r}")
        self.sampler, self.sampler_steps = sampler, int(steps)

    def rollout(self, n_prev: np.ndarray, n: np.ndarray, steps: int, *, samples: int = 1, sampler: str = "ddim",
                n_steps: int = 20, seed: int = 0, mode: str = "sample",
                thermostat: float | None = 1.0, rollout_gain: bool = True,
                hold: bool | float = True) -> Iterator[np.ndarray]:
        """The paper's autonomous rollout on the training system, without atoms.

        Starts from two converged densities ``n_prev``, ``n`` (N1, N2, N3) e/A^3; each step
        generates the next latent of each of ``samples`` independent chains from their own last
        latents (``mode`` 'sample': with ``sampler``; 'mean': the mean mode) and decodes it. Yields
        (samples, N1, N2, N3) e/A^3 per step. The observed history is left untouched.

        ``thermostat``: time constant tau (steps) of the latent thermostat. Left alone, a chain
        speeds up (each step's change of the latent, carried into the next by the linear base,
        grows) until it moves 2-3x faster than the AIMD. Like a Berendsen thermostat on the
        kinetic energy, each step's latent change v from the newest past latent is scaled by
        ``sqrt(1 + (s0^2 / s^2 - 1) / tau)``, where s is its RMS and s0 the training data's RMS
        latent change per step (model.json's ``latent_speed``). 1: every step at s0; None: off.

        ``rollout_gain``: in 'sample' mode, serve through the decoder's ``rollout`` gain where the
        model has one (:func:`~ase_ldm.gldm.calibration.calibrate_rollout_spectrum`): it gives the
        served densities the training frames' Fourier amplitude per shell. The chain itself
        re-encodes the density of the ``sample`` gain either way, so its latents do not change.

        ``hold``: with the rollout gain, hold each chain's mean amplitude per shell at the
        training frames' (:mod:`ase_ldm.gldm.hold`). True: with the relaxation time the model
        was calibrated with, where it has one (:meth:`hold_steps`); a number: that time in
        steps (>= 1); False: off. Like the gain, it acts on what the rollout yields, not on the chain.
        """
        if thermostat is not None:
            if isinstance(thermostat, (bool, np.bool_)) or not isinstance(thermostat, numbers.Real) \
                    or not thermostat >= 1:
                raise InvalidInput(f"thermostat must be a time constant of at least 1 step, or None for none "
                                   f"(--no-thermostat); got {thermostat!r}")
            if self.meta.get("latent_speed") is None:
                raise InvalidInput(f"{self.name} has no calibrated latent_speed for the thermostat; fit it with "
                                   "ase_ldm.gldm.calibration.calibrate_latent_speed, or roll out without the "
                                   "thermostat (thermostat=None; on the command line --no-thermostat)")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise InvalidInput(f"a rollout needs a positive whole number of steps, got {steps!r}")
        if mode not in ("sample", "mean"):
            raise InvalidInput(f"rollout mode must be 'sample' or 'mean', got {mode!r}")
        if sampler not in SAMPLERS:
            raise InvalidInput(f"unknown sampler {sampler!r}; use one of {SAMPLERS}")
        if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
            raise InvalidInput(f"samples must be a positive integer, got {samples!r}")
        n_prev, n = np.asarray(n_prev, np.float32), np.asarray(n, np.float32)
        if n_prev.shape != n.shape or n.ndim != 3 or not (np.all(np.isfinite(n)) and np.all(np.isfinite(n_prev))):
            raise InvalidInput(f"a rollout starts from two finite densities of one grid, got {n_prev.shape}, {n.shape}")
        self.check_setup(self.numbers, self.cell, n.shape)
        if not isinstance(rollout_gain, (bool, np.bool_)):
            raise InvalidInput(f"rollout_gain must be True or False, got {rollout_gain!r}")
        served = "sample" if mode == "sample" else "mean"
        if mode == "sample" and rollout_gain and self.has_rollout_gain:
            served = "rollout"
        tau_hold = self.served_hold(hold, served == "rollout")
        return self._rollout(n_prev, n, int(steps), int(samples), sampler, n_steps, int(seed), mode,
                             None if thermostat is None else float(thermostat), served, tau_hold)

    @property
    def hold_steps(self) -> float | None:
        """The relaxation time (steps) of the rollout's amplitude hold the model was calibrated with, or None."""
        gain = self.meta.get("spectral_gain")
        if not has_hold(gain) or self.meta.get("band_limit") is None:  # the hold acts inside the band
            return None
        return float(gain["rollout_fit"]["hold_steps"])

    def served_hold(self, hold: bool | float, rollout_gain_served: bool) -> float | None:
        """The amplitude hold's relaxation time a rollout serves with (None: none), for ``rollout``'s
        ``hold`` when the rollout gain is (``rollout_gain_served``) or is not served."""
        if isinstance(hold, (bool, np.bool_)):
            return self.hold_steps if hold and rollout_gain_served else None
        if not isinstance(hold, numbers.Real) or not 1 <= hold < 1e12:
            raise InvalidInput(f"hold must be True, False or a relaxation time of at least 1 step, "
                               f"got {hold!r}")
        if self.hold_steps is None:
            raise InvalidInput(f"{self.name} has no amplitude-hold target; fit it with "
                               "ase_ldm.gldm.calibration.calibrate_rollout_spectrum")
        if not rollout_gain_served:
            raise InvalidInput("the amplitude hold acts with the rollout gain: it needs mode='sample' and "
                               "rollout_gain=True")
        return float(hold)

    def _rollout(self, n_prev: np.ndarray, n: np.ndarray, steps: int, B: int, sampler: str, n_steps: int,
                 seed: int, mode: str, tau: float | None, served: str, tau_hold: float | None
                 ) -> Iterator[np.ndarray]:
        H = self.history
        gen = torch.Generator(device=self.device).manual_seed(seed)
        band = self._filter_for(self.cell, n.shape, "sample" if mode == "sample" else "mean")
        out_band = band if served != "rollout" else self._filter_for(self.cell, n.shape, "rollout")
        hold = None if tau_hold is None or out_band is None else AmplitudeHold(
            self.meta["spectral_gain"], self.cell, n.shape, float(self.meta["band_limit"]), tau_hold, self.device)
        electrons = self.electrons_per_atom * len(self.numbers)
        dV = abs(float(np.linalg.det(self.cell))) / float(np.prod(n.shape))

        with torch.inference_mode():
            start = self.model.encode(torch.as_tensor(np.stack([n, n_prev]), device=self.device))
        past = [start[j].expand(B, *start.shape[1:]) for j in range(min(2, H))]
        priors = torch.zeros(B, H + 1, *n.shape, device=self.device)
        no_atoms = torch.zeros(B, device=self.device)
        for _ in range(steps):
            with torch.inference_mode():
                u = torch.zeros(B, H, *past[0].shape[1:], device=self.device)
                has_past = torch.zeros(B, H, device=self.device)
                for j, u_j in enumerate(past):
                    u[:, j], has_past[:, j] = u_j, 1.0
                cond = self.model.condition_tensors(u, priors, has_past, no_atoms)
                if mode == "mean":
                    new = self.model.generate(*cond, mode="mean")
                else:
                    new = self.model.generate(*cond, mode=sampler, n_steps=n_steps, generator=gen)
                if tau is not None:
                    new = thermostatted(new, past[0], float(self.meta["latent_speed"]), tau)
                decoded = self.model.decode(new)
                nt = served_density(decoded, band, electrons, dV)
                # the decoded density, re-encoded: the latent stays on the autoencoder's manifold
                past = [self.model.encode(nt), *past][:H]
                out = (nt if out_band is band and hold is None
                       else served_density(decoded, out_band, electrons, dV, hold)).cpu().numpy()
            yield out
