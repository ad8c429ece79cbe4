"""Frozen configurations of Deep Density and its training, saved as JSON beside the weights."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DeepDensityConfig", "DeepDensityTrainConfig"]


@dataclass(frozen=True)
class DeepDensityConfig:
    """The network of :mod:`ase_ldm.deepdensity.net` (the paper's Sec. 3).

    Parameters
    ----------
    numbers : tuple of int
        The species, by atomic number (one embedding network per pair of species).
    cutoff, cutoff_smooth : float
        Angstrom. Neighbours (atoms and the grid point) farther than ``cutoff`` from an atom do
        not enter its descriptor; between ``cutoff_smooth`` and ``cutoff`` the weight 1/(R + delta)
        falls smoothly to 0 (Eq. 16).
    delta : float
        Angstrom, keeps 1/(R + delta) finite at R = 0.
    embedding : tuple of int
        Widths of the radial embedding network g (Eq. 18); the last is M.
    axis : int
        M', the columns of the descriptor kept (D = h^T h[:, :M'], as in Deep Potential-SE).
    fitting : tuple of int
        Widths of the fitting network F (residual where widths repeat).
    """

    numbers: tuple[int, ...] = (3,)
    cutoff: float = 4.0
    cutoff_smooth: float = 3.0
    delta: float = 0.1
    embedding: tuple[int, ...] = (8, 16, 32)
    axis: int = 4
    fitting: tuple[int, ...] = (64, 64, 64)


@dataclass(frozen=True)
class DeepDensityTrainConfig:
    """How Deep Density is trained: ``points`` random grid points of each frame per sample,
    ``batch_frames`` frames per step, the loss the relative L1 of the density at those points."""

    epochs: int = 20
    batch_frames: int = 4
    points: int = 2000
    lr: float = 2e-3
    val_frames: int = 20
    seed: int = 0
    checkpoint_every: int = 1
    model: DeepDensityConfig = field(default_factory=DeepDensityConfig)
