"""Frozen configurations of the paper's model, saved as JSON beside the weights.

One small dataclass per concern: the autoencoder, the latent diffusion, the loss weights and
the training loop. ``ModelConfig`` bundles what is needed to rebuild a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AutoencoderConfig", "DiffusionConfig", "LossConfig", "ModelConfig", "TrainConfig"]


@dataclass(frozen=True)
class AutoencoderConfig:
    """3D convolutional autoencoder.

    Parameters
    ----------
    in_channels : int
        State channels: 2 (standardised log density and its time derivative).
    channels : tuple of int
        Channels after the stem and after each strided downsampling (len = levels + 1).
    latent_dim : int
        Size of the 1D latent vector.
    blocks_per_level : int
        Residual blocks at each resolution.
    """

    in_channels: int = 2
    channels: tuple[int, ...] = (8, 16, 32, 64)
    latent_dim: int = 128
    blocks_per_level: int = 1


@dataclass(frozen=True)
class DiffusionConfig:
    """DDPM in latent space with a linear variance schedule and an MLP noise predictor.

    Parameters
    ----------
    steps : int
        Diffusion steps K (the paper follows DDPM: 1000).
    beta_start, beta_end : float
        Linear schedule of the per-step variance beta_k (DDPM's 1e-4 to 0.02).
    hidden : int
        Width of the MLP noise predictor.
    layers : int
        Hidden layers of the MLP.
    embedding_dim : int
        Size of the sinusoidal diffusion-step embedding.
    """

    steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    hidden: int = 256
    layers: int = 3
    embedding_dim: int = 64


@dataclass(frozen=True)
class LossConfig:
    """Weights of L = L_AE + lambda_ldm L_LDM + lambda_sjsd L_sJSD and the soft histogram.

    ``sjsd_scale`` is the constant c of the scaled JSD (c * JSD; the paper gives no value: c = 10
    made the reconstruction worse than a constant field early in CPU-sized runs, c = 1 did not); bins span
    ``sjsd_range`` in the standardised log-density x with Gaussian kernels of width
    ``sjsd_bandwidth`` (in units of the bin spacing).
    """

    lambda_ldm: float = 1.0
    lambda_sjsd: float = 1.0
    sjsd_scale: float = 1.0
    sjsd_bins: int = 64
    sjsd_range: tuple[float, float] = (-4.0, 4.0)
    sjsd_bandwidth: float = 1.0
    dot_weight: float = 0.1


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network."""

    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)


@dataclass(frozen=True)
class TrainConfig:
    """The training loop.

    Parameters
    ----------
    epochs : int
        Passes over the training pairs.
    batch_size : int
    lr : float
        AdamW learning rate (cosine-decayed to ``lr * 0.05``).
    weight_decay : float
    grad_clip : float
        Gradient-norm clipping, per network (the residual network has no normalisation layers).
    test_fraction : float
        Last fraction of frames held out (split by time, as in the paper).
    seed : int
        Seeds weights, data order and diffusion noise: runs are reproducible.
    checkpoint_every : int
        Epochs between checkpoints (the last epoch always checkpoints).
    device : str
        'auto' (CUDA when present, else CPU), 'cpu' or 'cuda'.
    max_frames : int or None
        Use only the first ``max_frames`` frames of the dataset (for quick runs).
    ldm_finetune_steps, ldm_finetune_batch : int
        After the joint epochs, the denoiser alone is trained for this many steps on the latents
        of the final (frozen) encoder, with the latent statistics recomputed exactly. The joint
        phase gives the denoiser only one small batch per autoencoder step; the latents it saw
        also moved with the encoder. This phase is cheap (an MLP on precomputed latents).
    """

    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-5
    grad_clip: float = 5.0
    test_fraction: float = 0.2
    seed: int = 0
    checkpoint_every: int = 1
    device: str = "auto"
    max_frames: int | None = None
    ldm_finetune_steps: int = 4000
    ldm_finetune_batch: int = 256
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
