"""The periodic 3D autoencoder of the paper's model (ase_ldm.ldm.autoencoder)."""

from __future__ import annotations

import pytest
import torch

from ase_ldm.ldm import Autoencoder, DensityLDM
from ase_ldm.ldm.config import AutoencoderConfig, DiffusionConfig, LossConfig, ModelConfig

SMALL = ModelConfig(autoencoder=AutoencoderConfig(channels=(4, 8, 16, 16), latent_dim=12),
                    diffusion=DiffusionConfig(steps=30, hidden=32, layers=2, embedding_dim=8))


@pytest.mark.parametrize("grid", [(16, 16, 16), (30, 30, 30), (12, 15, 9)])
def test_shapes(grid):
    torch.manual_seed(0)
    model = DensityLDM(SMALL, grid)
    s = torch.randn(3, 2, *grid)
    z = model.encode(s)
    assert z.shape == (3, 12)
    assert model.decode(z).shape == (3, 2, *grid)
    losses = model(s, torch.randn_like(s), LossConfig(sjsd_bins=16))
    assert set(losses) == {"ae", "ldm", "sjsd", "total"} and losses["total"].ndim == 0
    z_next = model.sample_next(z, "ddim", n_steps=5)
    assert z_next.shape == z.shape and torch.isfinite(z_next).all()


def test_encoder_periodic_shift_behaviour():
    """Circular padding + average pooling: shifts by multiples of 2**levels grid points leave the
    latent unchanged exactly (when every level's grid size is even); other shifts do not."""
    torch.manual_seed(0)
    ae = Autoencoder(SMALL.autoencoder, (16, 16, 16)).double()  # 3 levels: 16 -> 8 -> 4 -> 2
    s = torch.randn(1, 2, 16, 16, 16, dtype=torch.float64)
    z = ae.encode(s)
    for shift in [(8, 0, 0), (0, 8, 8), (8, 8, 8), (16, 0, 0)]:
        z_shift = ae.encode(torch.roll(s, shift, dims=(2, 3, 4)))
        torch.testing.assert_close(z_shift, z, rtol=1e-12, atol=1e-12)
    z_odd = ae.encode(torch.roll(s, (1, 0, 0), dims=(2, 3, 4)))
    assert (z_odd - z).abs().max() > 1e-6  # a one-point shift changes the strided sampling
