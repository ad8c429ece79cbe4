"""Networks: the periodic 3D autoencoder, the latent noise predictor, the diffusion schedule."""

from .autoencoder import Autoencoder, Decoder, Encoder
from .denoiser import LatentDenoiser
from .diffusion import LinearSchedule
from .model import DensityLDM

__all__ = ["Autoencoder", "Decoder", "Encoder", "LatentDenoiser", "LinearSchedule", "DensityLDM"]
