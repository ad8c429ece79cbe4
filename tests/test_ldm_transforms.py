"""The density transform of the paper's model (ase_ldm.ldm.transforms)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ase_ldm.ldm.config import AutoencoderConfig, DiffusionConfig, ModelConfig
from ase_ldm.ldm.transforms import LogNormalTransform, fit_transform, renormalize

SMALL = ModelConfig(autoencoder=AutoencoderConfig(channels=(4, 8, 16, 16), latent_dim=12),
                    diffusion=DiffusionConfig(steps=30, hidden=32, layers=2, embedding_dim=8))


def test_transform_round_trip_and_state():
    rng = np.random.default_rng(0)
    frames = [np.exp(rng.normal(-3, 0.4, (6, 6, 6))) for _ in range(5)]
    tr = fit_transform(frames, dt_fs=2.0)
    logs = np.log(np.array(frames))
    assert tr.mu == pytest.approx(logs.mean()) and tr.sigma == pytest.approx(logs.std())
    n = torch.tensor(np.array(frames), dtype=torch.float64)
    torch.testing.assert_close(tr.inverse(tr.forward(n)), n, rtol=1e-12, atol=0)
    x = tr.forward(n)
    assert abs(float(x.mean())) < 1e-10 and float(x.std(unbiased=False)) == pytest.approx(1.0)
    s = tr.state(n[:-1], n[1:])
    assert s.shape == (4, 2, 6, 6, 6)
    torch.testing.assert_close(s[:, 1] * tr.dt_fs * tr.dot_scale, x[1:] - x[:-1])
    assert float(s[:, 1].pow(2).mean()) == pytest.approx(1.0, rel=1e-6)  # derivative channel standardised
    assert (tr.inverse(torch.randn(100) * 5) > 0).all()  # positivity by construction
    with pytest.raises(ValueError, match="strictly positive"):
        fit_transform([frames[0], -frames[1]], 2.0)
    torch.testing.assert_close(LogNormalTransform(**tr.to_dict()).forward(n), x)


def test_renormalize():
    n = torch.rand(2, 4, 4, 4) + 0.1
    out = renormalize(n, 3.0, dV=0.5)
    torch.testing.assert_close(out.sum(dim=(1, 2, 3)) * 0.5, torch.tensor([3.0, 3.0]))
