"""Serve the atom-synchronised model: one-step predictions of (nt, D) from positions and history.

Example::

    pred = ase_ldm.load("li16-800K-sync")
    pred.observe(positions, nt, D, numbers, cell)   # converged step: (Na, 3) A, (N1, N2, N3) e/A^3,
                                                    # per atom (ni_a, ni_a), (Na,), (3, 3) A
    nt_next, D_next = pred.predict(new_positions, numbers, cell, nt.shape)

Without observed history the prediction is a cold start from the atoms alone. The model runs on
any cell and grid whose grid spacing matches its training data (within 2 %) and whose species it
knows; it keeps the last ``history`` observed steps and forgets them on :meth:`reset` or when
the number of atoms changes.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.cells import check_cell, checked_history, grid_for
from ..core.checkpoint import build_model
from ..core.config import from_dict
from ..core.device import resolve_device
from ..core.fourier import band_mask
from ..errors import AseLdmError, CheckpointError, InvalidInput, ModelMismatch
from .config import SyncConfig
from .layout import PAWLayout, pack_D, unpack_D
from .net import SyncNet
from .prior import PriorEvaluator, RadialPrior
from .symmetry import symmetry_ops

__all__ = ["SyncPredictor"]

#: a converged pseudo-density above this (electrons/Angstrom^3) is not a valence density in these units
MAX_DENSITY = 1e3


class SyncPredictor:
    """A loaded :class:`~ase_ldm.sync.net.SyncNet` with its prior and a short history.

    Attributes
    ----------
    meta : dict, the model.json contents
    grid_spacing : (3,) Angstrom, of the training data
    history : int, past steps the model reads
    """

    def __init__(self, model: SyncNet, prior: RadialPrior, meta: dict[str, Any], device: torch.device,
                 max_history: int | None = None, symmetry_average: int = 1) -> None:
        self.model = model.to(device).eval()
        self.prior = prior
        self.meta = meta
        self.device = device
        self.grid_spacing = np.asarray(meta["grid_spacing"], float)
        self.timestep_fs = meta.get("timestep_fs")
        self.history = model.history
        self.name = str(meta.get("name", "model"))
        self.species = tuple(int(z) for z in prior.numbers)
        #: past steps a prediction uses (<= history); fewer steps damp the growth of errors when
        #: the model is fed its own predictions instead of converged densities
        self.max_history = model.history if max_history is None else max_history
        #: average the prediction over this many of the cell's symmetry operations (1: none);
        #: costs that many network passes (one batch)
        if isinstance(symmetry_average, bool) or not isinstance(symmetry_average, (int, np.integer)):
            raise InvalidInput(f"symmetry_average must be a positive integer, got {symmetry_average!r}")
        self.symmetry_average = int(symmetry_average)
        if self.symmetry_average < 1:
            raise InvalidInput(f"symmetry_average must be at least 1, got {symmetry_average}")
        self._setup: tuple | None = None
        self._evaluator: PriorEvaluator | None = None
        self._species: torch.Tensor | None = None
        self._past: deque[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]] = deque(maxlen=self.history)
        self._last_prior: tuple[bytes, torch.Tensor] | None = None

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, device: str = "auto", max_history: int | None = None,
             symmetry_average: int = 1) -> SyncPredictor:
        """Load a run directory or pretrained name (see :func:`ase_ldm.core.registry.load`)."""
        from ..core.registry import load

        return load(name_or_path, device, max_history=max_history, expect=cls, symmetry_average=symmetry_average)

    @classmethod
    def from_checkpoint(cls, run: Path, meta: dict[str, Any], device: str = "auto", **options: Any
                        ) -> SyncPredictor:
        """The registry's loader: build the network described by ``meta`` and load its weights.

        ``options``: ``symmetry_average`` (see the class).
        """
        unknown = set(options) - {"symmetry_average"}
        if unknown:
            raise InvalidInput(f"the synchronised model takes the option symmetry_average, not {sorted(unknown)}")
        for key in ("sync_config", "prior", "ni", "grid_spacing"):
            if key not in meta:
                raise CheckpointError(f"{run}/model.json lacks {key!r}; the file is incomplete")
        try:
            prior = RadialPrior.from_dict(meta["prior"])
            cfg = from_dict(SyncConfig, meta["sync_config"])
            layout = PAWLayout.from_meta(meta, prior.numbers)
            spacing = np.asarray(meta["grid_spacing"], dtype=float)
            dt = meta.get("timestep_fs")
            ok = (spacing.shape == (3,) and bool(np.all(spacing > 0)) and layout.ni_max <= 64
                  and (dt is None or float(dt) > 0) and 0 < cfg.history <= 16 and 0 < len(cfg.dilations) <= 64
                  and 0 < cfg.channels <= 4096 and 0 < cfg.d_hidden <= 65536 and 1 <= cfg.coarsen <= 8)
        except (KeyError, TypeError, ValueError, AseLdmError) as err:
            raise CheckpointError(f"{run}/model.json has an invalid sync model description ({err})") from None
        if not ok:
            raise CheckpointError(f"{run}/model.json describes an impossible model (grid spacing, projectors, "
                                  "timestep or network size); the file is damaged")
        model = build_model(run, meta, lambda: SyncNet(cfg, layout))
        return cls(model, prior, meta, resolve_device(device), None, options.get("symmetry_average", 1))

    # -- the registry's protocol (:class:`ase_ldm.core.registry.DensityModel`) ---------------
    #: the atoms alone suffice (a cold start)
    min_history = 0
    predicts_D = True

    @property
    def max_history(self) -> int:
        return self._max_history

    @max_history.setter
    def max_history(self, value: int) -> None:
        self._max_history = checked_history(value, self.history)

    def grid_for(self, cell: np.ndarray) -> tuple[int, int, int]:
        """The grid with the model's spacing on ``cell``: cell lengths / spacing, rounded."""
        return grid_for(cell, self.grid_spacing)

    def seed(self, seed: int) -> None:
        """The model is deterministic: nothing to seed."""

    def check_setup(self, numbers: np.ndarray, cell: np.ndarray, grid: tuple[int, int, int]) -> None:
        """Refuse species, grids and cells the model cannot serve (ModelMismatch saying what to change)."""
        check_cell(cell, grid, self.meta.get("cell", np.eye(3)), self.grid_spacing,
                   "the network's convolutions see grid neighbours, whose geometry the cell sets, and its PAW "
                   "matrices are in the training cell's axes; train a model on cells of this shape (ase-ldm "
                   "train-sync), or use a physics provider (sad-extrapolate) here")
        try:
            self.prior.species_index(np.asarray(numbers))
        except ValueError as err:
            raise ModelMismatch(str(err)) from None

    def _prepare(self, numbers: np.ndarray, cell: np.ndarray, grid: tuple[int, int, int]) -> None:
        key = (np.asarray(numbers).tobytes(), np.asarray(cell, float).round(8).tobytes(), tuple(grid))
        if key == self._setup:
            return
        self.check_setup(numbers, cell, grid)
        self._evaluator = PriorEvaluator(self.prior, numbers, cell, grid, dtype=torch.float64).to(self.device)
        self._species_np = self.prior.species_index(np.asarray(numbers))
        self._species = torch.as_tensor(self._species_np, device=self.device)
        self._inv_cell = np.linalg.inv(np.asarray(cell, float))
        self.band = self.band_for(cell, grid)
        self._ops = symmetry_ops(np.asarray(cell, float), tuple(grid))
        if self.symmetry_average > 1:
            if self.model.layout.l_i is None:
                raise ModelMismatch("this model.json lacks the projectors' angular momenta (l_i); "
                                 "symmetry averaging needs them")
            if len(self._ops) < self.symmetry_average:
                raise ModelMismatch(f"the cell has {len(self._ops)} symmetry operations of its grid; "
                                 f"symmetry_average={self.symmetry_average} needs that many")
        self._setup = key
        self._past.clear()
        self._last_prior = None

    def band_for(self, cell: np.ndarray, grid: tuple[int, int, int]) -> torch.Tensor | None:
        """The plane waves a prediction may contain (model.json's ``band_limit``, 1/A), or None."""
        g_max = self.meta.get("band_limit")
        if g_max is None:
            return None
        return torch.as_tensor(band_mask(np.asarray(cell, float), tuple(grid), float(g_max)), device=self.device)

    def prior_density(self, positions: np.ndarray) -> torch.Tensor:
        """The learned superposition at ``positions`` (cached for the last positions), float32."""
        key = np.asarray(positions, float).tobytes()
        if self._last_prior is None or self._last_prior[0] != key:
            p = self._evaluator(torch.as_tensor(np.asarray(positions, float), device=self.device)[None])[0]
            self._last_prior = (key, p.float())
        return self._last_prior[1]

    # -- the history -----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the history: the next prediction is a cold start."""
        self._past.clear()

    def observe(self, positions: np.ndarray, nt: np.ndarray, D: np.ndarray | None, numbers: np.ndarray,
                cell: np.ndarray, *, predicted: bool = False) -> None:
        """Record a converged step (or, with ``predicted``, the model's own prediction).

        Parameters
        ----------
        positions : (Na, 3) Angstrom
        nt : (N1, N2, N3) spin-summed pseudo-density, e/Angstrom^3 (GPAW's smooth ``nt``,
            positive; not the compensated density)
        D : per atom, the spin-paired (ni_a, ni_a) PAW matrix (an (Na, ni, ni) array when every
            atom has the same projector count)
        numbers : (Na,) atomic numbers; cell : (3, 3) Angstrom
        """
        positions = np.asarray(positions, float)
        if positions.ndim != 2 or positions.shape[1] != 3 or not np.all(np.isfinite(positions)):
            raise InvalidInput(f"positions must be a finite (Na, 3) array, got shape {positions.shape}")
        nt = np.asarray(nt)
        if nt.ndim != 3 or not np.all(np.isfinite(nt)):
            raise InvalidInput(f"nt must be a finite (N1, N2, N3) array, got shape {nt.shape}")
        if nt.min() < -1e-6 or nt.max() > MAX_DENSITY:
            raise InvalidInput(f"nt spans [{nt.min():.3g}, {nt.max():.3g}] e/Angstrom^3: pass GPAW's smooth "
                               "pseudo-density nt in electrons/Angstrom^3 (not the compensated density, not "
                               "electrons/Bohr^3)")
        if D is None:
            raise InvalidInput("the synchronised model needs the PAW matrices D of every observed step")
        self._prepare(numbers, cell, nt.shape)
        D = self.model.layout.pad(D, self._species_np)
        p = self.prior_density(positions)
        r = torch.as_tensor(nt, dtype=torch.float64, device=self.device).float() - p
        Dp = pack_D(torch.as_tensor(D, dtype=torch.float32, device=self.device))
        self._past.appendleft((positions.copy(), p, r, Dp))

    @torch.no_grad()
    def predict(self, positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray,
                grid: tuple[int, int, int], *, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The density (N1, N2, N3) e/Angstrom^3 and the PAW matrices at ``positions``: a list of
        spin-paired (ni_a, ni_a) arrays, one per atom (ni_a: its species' projector count)."""
        positions = np.asarray(positions, float)
        if positions.ndim != 2 or positions.shape[1] != 3 or not np.all(np.isfinite(positions)):
            raise InvalidInput(f"positions must be a finite (Na, 3) array, got shape {positions.shape}")
        self._prepare(numbers, cell, tuple(grid))
        H = self.history
        p = self.prior_density(positions)
        h = min(len(self._past), self.max_history)
        zeros = torch.zeros_like(p)
        nD = self.model.nD
        Dz = torch.zeros(len(positions), nD, device=self.device)
        past = list(self._past)[:h] + [(None, zeros, zeros, Dz)] * (H - h)
        frac = torch.as_tensor(np.asarray(positions, float) @ self._inv_cell, dtype=torch.float32,
                               device=self.device)
        p_hist = torch.stack([x[1] for x in past])
        r_hist = torch.stack([x[2] for x in past])
        D_hist = torch.stack([x[3] for x in past])
        ops = self._ops[: self.symmetry_average] if self.symmetry_average > 1 else [None]
        layout = self.model.layout

        def fwd(op: Any, x: torch.Tensor) -> torch.Tensor:
            return x if op is None else op.grid(x)

        def fwd_D(op: Any, D: torch.Tensor) -> torch.Tensor:
            return D if op is None else layout.transform(D, op, self._species_np)

        nt, D = self.model(torch.stack([fwd(op, p) for op in ops]), torch.stack([fwd(op, p_hist) for op in ops]),
                           torch.stack([fwd(op, r_hist) for op in ops]),
                           torch.full((len(ops),), h, device=self.device),
                           torch.stack([frac if op is None else op.frac(frac) for op in ops]), self._species,
                           torch.stack([fwd_D(op, D_hist) for op in ops]), self.band)
        inv = [None if op is None else op.inverse() for op in ops]
        nt = torch.stack([fwd(i, x) for i, x in zip(inv, nt)]).mean(0)
        D = torch.stack([fwd_D(i, x) for i, x in zip(inv, D)]).mean(0)
        nt = torch.clamp(nt, min=1e-10)
        return nt.double().cpu().numpy(), layout.unpad(unpack_D(D.double(), layout.ni_max).cpu().numpy(),
                                                       self._species_np)
