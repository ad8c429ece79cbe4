"""Deep Density (Zepeda-Nunez et al., ``shared/seeds/004``): the density at a point from its
neighbouring atoms alone, as a sum of atom-centred, symmetric, local contributions. An
atoms-only baseline beside the synchronised model's cold start; it reads no history."""

from .config import DeepDensityConfig, DeepDensityTrainConfig
from .net import DeepDensity

__all__ = ["DeepDensity", "DeepDensityConfig", "DeepDensityTrainConfig"]
