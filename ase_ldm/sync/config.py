"""Frozen configurations of the atom-synchronised model and its training, saved as JSON beside the weights."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SyncConfig", "SyncTrainConfig"]


@dataclass(frozen=True)
class SyncConfig:
    """The atom-synchronised density model (:mod:`ase_ldm.sync.net`).

    Parameters
    ----------
    channels : int
        Feature channels of every full-resolution convolution.
    dilations : tuple of int
        One residual block per entry: a 3x3x3 circular convolution with this dilation (in grid
        steps) and a 1x1x1 mixing convolution. The receptive field radius is ``1 + sum``.
    d_hidden : int
        Width of the per-atom MLP that corrects the PAW matrices.
    history : int
        Past converged steps the model reads (3: enough for a quadratic extrapolation).
    coarsen : int
        The CNN runs on a grid this many times coarser along each axis (1: the full grid). Its
        inputs are Fourier-truncated onto that grid and its correction is interpolated back, so
        the correction holds only wave vectors below the coarse grid's Nyquist limit
        (pi / (coarsen * spacing)); the extrapolated residual keeps every wave vector. On Li16
        (0.242 A spacing) 2 keeps |k| < 6.5 1/A: the extrapolation's error above that is a rel.
        L1 of 0.004 % (of 0.086 % in all, test frames), and the CNN costs an eighth.
    """

    channels: int = 32
    dilations: tuple[int, ...] = (1, 2, 4, 8, 1, 2, 4, 1)
    d_hidden: int = 128
    history: int = 3
    coarsen: int = 1


@dataclass(frozen=True)
class SyncTrainConfig:
    """How the synchronised model is trained.

    ``cold_fraction`` of the samples see no history (a cold start from atoms only) and
    ``short_fraction`` see one or two past steps; the rest see ``history`` steps. ``reverse``
    also trains on the trajectory run backwards (the converged density depends on the positions
    only, so the reversed sequence is as valid as the forward one). ``augment`` applies a random
    axis permutation/mirror that maps the cell onto itself to each sample (density, positions and
    PAW matrices together; 48 operations for a cubic cell). ``val_frames`` of the end of
    the training frames are held out for validation.
    """

    epochs: int = 200
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    cold_fraction: float = 0.15
    short_fraction: float = 0.1
    reverse: bool = True
    augment: bool = True
    d_weight: float = 1.0
    val_frames: int = 50
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 10
    prior_dg: float = 0.25
    prior_smoothness: float = 1e-3
    model: SyncConfig = field(default_factory=SyncConfig)
