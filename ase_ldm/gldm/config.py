"""Frozen configurations of the grid-latent diffusion model, saved as JSON beside the weights."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InvalidInput

__all__ = ["GridAutoencoderConfig", "GridDenoiserConfig", "GldmConfig", "GldmTrainConfig", "check_model_config",
           "check_train_config"]


@dataclass(frozen=True)
class GridAutoencoderConfig:
    """Periodic patch autoencoder.

    Parameters
    ----------
    patch : int
        Edge of the cubic patch (voxels) that one latent voxel covers: the latent grid is the
        density grid divided by ``patch`` along each axis, which must divide it.
    channels : int
        Width of the convolutions on the latent grid.
    blocks : int
        Residual blocks in the encoder and in the decoder.
    latent_channels : int
        Channels of the latent grid.
    refine_channels : int
        Width of a residual pair of full-resolution convolutions after the voxel shuffle, across
        the patch boundaries (0: none).
    """

    patch: int = 3
    channels: int = 48
    blocks: int = 2
    latent_channels: int = 8
    refine_channels: int = 0


@dataclass(frozen=True)
class GridDenoiserConfig:
    """Periodic convolutional denoiser on the latent grid.

    Parameters
    ----------
    channels : int
    dilations : tuple of int
        One residual block per entry, its convolutions dilated this much (the receptive field
        should cover the cell's latent grid).
    history : int
        Past latents the denoiser reads (with the encoded priors of their atoms).
    steps : int
        Diffusion steps K of the cosine schedule. Level K + 1 is the mean level: the input
        latent is zero and the network returns its estimate of the conditional mean.
    embedding_dim : int
        Size of the sinusoidal embedding of the diffusion level.
    base : str
        What the network corrects when history is present: 'linear', the latent extrapolated
        linearly from the last two latents (2 z_{t-1} - z_{t-2}; the last latent when only one
        exists), or 'previous', the last latent. With neither, it predicts the latent outright.
    """

    channels: int = 32
    dilations: tuple[int, ...] = (1, 2, 4, 1)
    history: int = 2
    steps: int = 200
    embedding_dim: int = 32
    base: str = "linear"


@dataclass(frozen=True)
class GldmConfig:
    """Everything needed to rebuild the networks."""

    autoencoder: GridAutoencoderConfig = field(default_factory=GridAutoencoderConfig)
    denoiser: GridDenoiserConfig = field(default_factory=GridDenoiserConfig)


@dataclass(frozen=True)
class GldmTrainConfig:
    """The two-stage training loop: the autoencoder, then the denoiser on frozen latents.

    Parameters
    ----------
    ae_epochs, ae_batch, ae_lr : autoencoder stage.
    sjsd_weight : float
        Weight of the scaled soft-histogram JSD (the paper's sJSD) in the autoencoder loss.
    denoiser_steps, denoiser_batch, denoiser_lr : denoiser stage (optimiser steps).
    mean_fraction : float
        Fraction of each denoiser batch trained at the mean level (input zero).
    drop_history, drop_atoms : float
        Probabilities that a training example hides its history (atoms-only mode) or its atoms
        (the paper's autonomous mode).
    history_noise : float
        Standard deviation of noise added to the past latents (standardised units), so the
        denoiser tolerates its own outputs in a rollout.
    self_rollout : float
        Probability that a sample's newest past latent is replaced by the model's own mean
        prediction of that step (no gradient; decoded, served and re-encoded as in a rollout), so
        the denoiser learns to correct what its own outputs carry forward. Only samples whose
        history is full and continues one more step qualify (about a third with the defaults).
        0: off.
    rollout_calibration_steps : int
        Steps of each of the 4 rollouts from training frames that fit the rollout gain when the
        run finishes (:func:`~ase_ldm.gldm.calibration.calibrate_rollout_spectrum`). 0: none fitted.
    test_fraction : float
        Last fraction of the main dataset's frames held out (split by time).
    seed : int
    checkpoint_every : int
        Denoiser steps between checkpoints (each autoencoder epoch checkpoints).
    device : 'auto', 'cpu' or 'cuda'.
    """

    ae_epochs: int = 6
    ae_batch: int = 16
    ae_lr: float = 2e-3
    sjsd_weight: float = 0.1
    denoiser_steps: int = 2000
    denoiser_batch: int = 32
    denoiser_lr: float = 1e-3
    mean_fraction: float = 0.25
    drop_history: float = 0.3
    drop_atoms: float = 0.15
    history_noise: float = 0.02
    self_rollout: float = 0.0
    rollout_calibration_steps: int = 250
    test_fraction: float = 0.2
    seed: int = 0
    checkpoint_every: int = 250
    device: str = "auto"
    model: GldmConfig = field(default_factory=GldmConfig)


def check_model_config(cfg: GldmConfig) -> None:
    """Raise InvalidInput naming the first setting that cannot build a network."""
    ae, dn = cfg.autoencoder, cfg.denoiser
    for name, value, low in (("autoencoder.patch", ae.patch, 1), ("autoencoder.channels", ae.channels, 1),
                             ("autoencoder.blocks", ae.blocks, 0),
                             ("autoencoder.latent_channels", ae.latent_channels, 1),
                             ("autoencoder.refine_channels", ae.refine_channels, 0),
                             ("denoiser.channels", dn.channels, 1), ("denoiser.history", dn.history, 1),
                             ("denoiser.steps", dn.steps, 2), ("denoiser.embedding_dim", dn.embedding_dim, 2)):
        if value < low:
            raise InvalidInput(f"{name} must be at least {low}, got {value}")
    if dn.embedding_dim % 2:
        raise InvalidInput(f"denoiser.embedding_dim must be even (sines and cosines), got {dn.embedding_dim}")
    if dn.base not in ("linear", "previous"):
        raise InvalidInput(f"denoiser.base must be 'linear' or 'previous', got {dn.base!r}")
    if not dn.dilations or min(dn.dilations) < 1:
        raise InvalidInput(f"denoiser.dilations must be positive integers, got {list(dn.dilations)}")


def check_train_config(cfg: GldmTrainConfig) -> None:
    """Raise InvalidInput naming the first setting out of range."""
    check_model_config(cfg.model)
    for name in ("ae_epochs", "ae_batch", "denoiser_steps", "denoiser_batch", "checkpoint_every"):
        if getattr(cfg, name) < 1:
            raise InvalidInput(f"{name} must be at least 1, got {getattr(cfg, name)}")
    for name in ("mean_fraction", "drop_history", "drop_atoms", "self_rollout"):
        if not 0 <= getattr(cfg, name) < 1:
            raise InvalidInput(f"{name} must be in [0, 1), got {getattr(cfg, name)}")
    if not 0 < cfg.test_fraction < 1:
        raise InvalidInput(f"test_fraction must be in (0, 1), got {cfg.test_fraction}")
    for name in ("ae_lr", "denoiser_lr"):
        if not getattr(cfg, name) > 0:
            raise InvalidInput(f"{name} must be positive, got {getattr(cfg, name)}")
    n = cfg.rollout_calibration_steps
    if isinstance(n, bool) or not isinstance(n, int) or (n != 0 and n < 4):
        raise InvalidInput(f"rollout_calibration_steps must be 0 (none) or at least 4, "
                           f"got {cfg.rollout_calibration_steps}")
    if cfg.history_noise < 0 or cfg.sjsd_weight < 0:
        raise InvalidInput("history_noise and sjsd_weight must not be negative")
