"""The Python API users script against: load a trained model, encode, decode, predict, roll out.

Example::

    sur = ase_ldm.load("li16-800K-paper")  # a pretrained name or a run directory
    z = sur.encode(n_prev, n)              # densities (N1, N2, N3) in e/Angstrom^3 -> latent
    for n_next in sur.rollout(n_prev, n, steps=100, seed=0):
        ...                                # (samples, N1, N2, N3) densities, e/Angstrom^3
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.checkpoint import build_model
from ..core.config import from_dict
from ..core.device import resolve_device
from ..errors import AseLdmError, CheckpointError, InvalidInput, ModelMismatch
from .config import ModelConfig
from .model import DensityLDM
from .transforms import LogNormalTransform, renormalize

__all__ = ["DensitySurrogate"]

class DensitySurrogate:
    """A trained :class:`~ase_ldm.ldm.model.DensityLDM` with its transform and metadata.

    Attributes
    ----------
    grid : (N1, N2, N3)
    cell : (3, 3) array, Angstrom
    numbers : (Na,) int array of the training system
    timestep_fs : float, time between the model's steps
    dV : float, voxel volume in Angstrom^3
    """

    def __init__(self, model: DensityLDM, transform: LogNormalTransform, meta: dict[str, Any],
                 device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.transform = transform
        self.meta = meta
        self.device = device
        self.grid = tuple(meta["grid"])
        self.cell = np.array(meta["cell"])
        self.numbers = np.array(meta["numbers"])
        self.timestep_fs = float(meta["timestep_fs"])
        self.dV = float(meta["dV"])
        self.name = str(meta.get("name", "model"))
        self.species = tuple(sorted({int(z) for z in self.numbers}))
        self.sampler, self.sampler_steps = "ddim", 20
        self._generator = torch.Generator(device=device).manual_seed(0)
        self._past: deque[np.ndarray] = deque(maxlen=2)
        self._z: torch.Tensor | None = None  # the latent of the last two observed steps, when known
        self._pending: tuple[torch.Tensor, np.ndarray] | None = None  # last prediction: latent and density

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, device: str = "auto") -> DensitySurrogate:
        """Load a run directory or a pretrained model by name (see :func:`ase_ldm.core.registry.load`)."""
        from ..core.registry import load

        return load(name_or_path, device, expect=cls)

    @classmethod
    def from_checkpoint(cls, run: Path, meta: dict[str, Any], device: str = "auto", **options: Any
                        ) -> DensitySurrogate:
        """The registry's loader: build the network described by ``meta`` and load its weights."""
        if options:
            raise InvalidInput(f"the latent diffusion model takes no options {sorted(options)}")
        for key in ("grid", "cell", "numbers", "timestep_fs", "transform", "dV", "model_config"):
            if key not in meta:
                raise CheckpointError(f"{run}/model.json lacks {key!r}; the file is incomplete")
        try:
            cfg = from_dict(ModelConfig, meta["model_config"])
            grid = tuple(int(n) for n in meta["grid"])
            transform = LogNormalTransform(**meta["transform"])
            cell = np.asarray(meta["cell"], dtype=float)
            numbers = np.asarray(meta["numbers"], dtype=int)
            ok = (len(grid) == 3 and min(grid) > 0 and cell.shape == (3, 3) and numbers.ndim == 1
                  and float(meta["timestep_fs"]) > 0 and float(meta["dV"]) > 0)
            ae, df = cfg.autoencoder, cfg.diffusion
            ok = ok and 2 <= len(ae.channels) <= 8 and 0 < ae.blocks_per_level <= 16 and 0 < df.steps <= 100_000
        except (KeyError, TypeError, ValueError, AseLdmError) as err:
            raise CheckpointError(f"{run}/model.json has an invalid model description ({err})") from None
        if not ok:
            raise CheckpointError(f"{run}/model.json describes an impossible model (grid, cell, numbers, timestep, "
                                  "dV or network size); the file is damaged")
        model = build_model(run, meta, lambda: DensityLDM(cfg, grid))
        return cls(model, transform, meta, resolve_device(device))

    # -- checks --------------------------------------------------------------------------
    def check_density(self, n: np.ndarray, what: str = "density") -> np.ndarray:
        """Spin-summed (N1, N2, N3) float array on the model's grid, or a clear error."""
        n = np.asarray(n)
        if n.ndim == 4:
            n = n.sum(0)
        if n.shape != self.grid:
            raise ModelMismatch(f"{what} has grid {n.shape}; this model was trained on {self.grid}")
        if not np.all(np.isfinite(n)) or n.min() <= 0:
            raise InvalidInput(f"{what} must be finite and strictly positive (GPAW's nt, not the compensated "
                               "density)")
        return n

    # -- the registry's protocol (:class:`ase_ldm.core.registry.DensityModel`) ---------------
    #: the model predicts from the last two densities (the state and its time derivative)
    min_history = 2
    predicts_D = False

    @property
    def max_history(self) -> int:
        return 2

    @max_history.setter
    def max_history(self, value: int) -> None:
        if value != 2:
            raise ModelMismatch(f"the latent diffusion model always reads the last 2 densities (asked: {value}); "
                                "it cannot predict from the atoms alone")

    def grid_for(self, cell: np.ndarray) -> tuple[int, int, int]:
        return self.grid

    def check_setup(self, numbers: np.ndarray, cell: np.ndarray, grid: tuple[int, int, int]) -> None:
        numbers = np.asarray(numbers)
        if len(numbers) != len(self.numbers) or np.any(numbers != self.numbers):
            raise ModelMismatch(f"{len(numbers)} atoms with Z = {sorted(set(numbers.tolist()))} differ from the "
                                f"model's training system ({len(self.numbers)} atoms, Z = {list(self.species)}); "
                                "the latent diffusion model serves its training cell only")
        if np.abs(np.asarray(cell, float) - self.cell).max() > 1e-4:
            raise ModelMismatch(f"cell {np.asarray(cell, float).round(4).tolist()} differs from the model's "
                                f"{self.cell.round(4).tolist()}")
        if tuple(grid) != self.grid:
            raise ModelMismatch(f"grid {tuple(grid)} differs from the model's {self.grid}")

    def set_sampler(self, sampler: str, steps: int) -> None:
        """The sampler of :meth:`predict`: 'ddim' (deterministic) or 'ddpm', and its steps."""
        if sampler not in ("ddim", "ddpm"):
            raise InvalidInput(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
        if not 1 <= int(steps) <= self.model.schedule.steps:
            raise InvalidInput(f"sampler steps must be between 1 and {self.model.schedule.steps}, got {steps}")
        self.sampler, self.sampler_steps = sampler, int(steps)

    def seed(self, seed: int) -> None:
        self._generator.manual_seed(int(seed))

    def reset(self) -> None:
        self._past.clear()
        self._z = None
        self._pending = None

    def observe(self, positions: np.ndarray, nt_R: np.ndarray, D_aii: np.ndarray | None, numbers: np.ndarray,
                cell: np.ndarray, *, predicted: bool = False) -> None:
        """Add a density to the history. The model's own last prediction (``predicted=True``)
        continues its latent chain; a converged density re-encodes the last two."""
        n = self.check_density(nt_R).astype(np.float64)
        if predicted and self._pending is not None and self._pending[1] is nt_R:
            self._z = self._pending[0]
        else:
            self._z = None
        self._pending = None
        self._past.appendleft(n)

    def predict(self, positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray, grid: tuple[int, int, int],
                *, seed: int | None = None) -> tuple[np.ndarray, None]:
        """The next density (N1, N2, N3), renormalised to the last one's electron count; the
        latent model sees no atoms and predicts no PAW matrices."""
        if not self._past:
            raise ModelMismatch("the latent diffusion model needs at least one observed density before it predicts")
        if seed is not None:
            self.seed(seed)
        z = self._z
        if z is None:
            n0 = self._past[0]
            z = self.encode(self._past[1] if len(self._past) > 1 else n0, n0)
        z_next = self.predict_next(z, self.sampler, self.sampler_steps, self._generator)
        n = self.decode(z_next, float(self._past[0].sum() * self.dV))[0]
        self._pending = (z_next, n)
        return n, None

    # -- building blocks -----------------------------------------------------------------
    def _tensor(self, n: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(n, dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def encode(self, n_prev: np.ndarray, n: np.ndarray) -> torch.Tensor:
        """Latent (1, d) of the state of two consecutive densities (e/Angstrom^3)."""
        a = self._tensor(self.check_density(n_prev, "previous density"))[None]
        b = self._tensor(self.check_density(n, "density"))[None]
        return self.model.encode(self.transform.state(a, b))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, count: float | None = None) -> np.ndarray:
        """Densities (B, N1, N2, N3) in e/Angstrom^3 from latents (B, d), optionally renormalised to ``count``."""
        n = self.transform.density(self.model.decode(z))
        if count is not None:
            n = renormalize(n, count, self.dV)
        return n.double().cpu().numpy()

    @torch.no_grad()
    def predict_next(self, z: torch.Tensor, sampler: str = "ddim", n_steps: int = 20,
                     generator: torch.Generator | None = None, temperature: float | None = None) -> torch.Tensor:
        """Sample the next latent (B, d) from the current (B, d).

        ``temperature`` defaults to the model's calibrated value (``sampling_temperature`` in
        model.json, 1 when absent).
        """
        if temperature is None:
            temperature = float(self.meta.get("sampling_temperature", 1.0))
        return self.model.sample_next(z, sampler, generator, n_steps, temperature=temperature)

    def rollout(self, n_prev: np.ndarray, n: np.ndarray, steps: int, *, samples: int = 1, sampler: str = "ddim",
                n_steps: int = 20, seed: int = 0, count: float | None = None,
                temperature: float | None = None) -> Iterator[np.ndarray]:
        """Autoregressive rollout in latent space, yielding (samples, N1, N2, N3) densities per step.

        The latent chain z_{t+1} ~ p(z | z_t) runs from the state of (n_prev, n); each latent
        is decoded and renormalised to ``count`` electrons (default: the integral of ``n``).
        ``samples`` independent chains run as one batch. Reproducible from ``seed``.
        """
        n = self.check_density(n)
        count = float(n.sum() * self.dV) if count is None else count
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        z = self.encode(n_prev, n).repeat(samples, 1)
        for _ in range(steps):
            z = self.predict_next(z, sampler, n_steps, gen, temperature)
            yield self.decode(z, count)

