"""The Python API users script against: load a trained model, encode, decode, predict, roll out.

>>> sur = load_model("li16-800K")          # a pretrained name or a run directory
>>> z = sur.encode(n_prev, n)              # densities (N1, N2, N3) in e/Angstrom^3 -> latent
>>> for n_next in sur.rollout(n_prev, n, steps=100, seed=0):
...     ...                                # (samples, N1, N2, N3) densities, e/Angstrom^3
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import CheckpointError, load_weights, model_config, read_meta
from .models.ldm import DensityLDM
from .training import resolve_device
from .transforms import LogNormalTransform, renormalize

__all__ = ["DensitySurrogate", "load_model", "load_pretrained", "PRETRAINED_DIR", "pretrained_names"]

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def pretrained_names() -> list[str]:
    """Names of the models shipped inside the package."""
    if not PRETRAINED_DIR.exists():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "model.json").exists())


def _model_dir(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path)
    if (path / "model.json").exists():
        return path
    if str(name_or_path) in pretrained_names():
        return PRETRAINED_DIR / str(name_or_path)
    raise CheckpointError(f"{name_or_path}: neither a run directory with model.json nor a pretrained model "
                          f"(available: {', '.join(pretrained_names()) or 'none'})")


class DensitySurrogate:
    """A trained :class:`~ase_ldm.models.ldm.DensityLDM` with its transform and metadata.

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

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, device: str = "auto") -> DensitySurrogate:
        """Load a run directory or a pretrained model by name; no pickled code is executed."""
        run = _model_dir(name_or_path)
        meta = read_meta(run)
        if meta.get("kind") == "sync":
            raise CheckpointError(f"{run} is an atom-synchronised model; load it with "
                                  "ase_ldm.sync_predictor.SyncPredictor.load (or use it as a provider)")
        for key in ("grid", "cell", "numbers", "timestep_fs", "transform", "dV"):
            if key not in meta:
                raise CheckpointError(f"{run}/model.json lacks {key!r}; the file is incomplete")
        model = DensityLDM(model_config(meta), tuple(meta["grid"]))
        load_weights(run, model, meta)
        return cls(model, LogNormalTransform(**meta["transform"]), meta, resolve_device(device))

    # -- checks --------------------------------------------------------------------------
    def check_density(self, n: np.ndarray, what: str = "density") -> np.ndarray:
        """Spin-summed (N1, N2, N3) float array on the model's grid, or a clear error."""
        n = np.asarray(n)
        if n.ndim == 4:
            n = n.sum(0)
        if n.shape != self.grid:
            raise ValueError(f"{what} has grid {n.shape}; this model was trained on {self.grid}")
        if not np.all(np.isfinite(n)) or n.min() <= 0:
            raise ValueError(f"{what} must be finite and strictly positive (GPAW's nt, not the compensated density)")
        return n

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


def load_model(name_or_path: str | os.PathLike, device: str = "auto") -> DensitySurrogate:
    """Load a trained model: a run directory or a pretrained name (see :func:`pretrained_names`)."""
    return DensitySurrogate.load(name_or_path, device)


def load_pretrained(name: str, device: str = "auto") -> DensitySurrogate:
    """Load a model shipped with the package, e.g. ``load_pretrained("li16-800K")``."""
    if name not in pretrained_names():
        raise CheckpointError(f"no pretrained model {name!r}; available: {', '.join(pretrained_names()) or 'none'}")
    return DensitySurrogate.load(PRETRAINED_DIR / name, device)
