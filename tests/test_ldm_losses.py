"""The paper's losses: soft histograms and the scaled JSD (ase_ldm.ldm.losses)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ase_ldm.ldm.config import AutoencoderConfig, DiffusionConfig, ModelConfig
from ase_ldm.ldm.losses import jsd, scaled_jsd, soft_histogram

SMALL = ModelConfig(autoencoder=AutoencoderConfig(channels=(4, 8, 16, 16), latent_dim=12),
                    diffusion=DiffusionConfig(steps=30, hidden=32, layers=2, embedding_dim=8))


def test_sjsd_properties():
    torch.manual_seed(0)
    x = torch.randn(2000, dtype=torch.float64)
    y = torch.randn(2000, dtype=torch.float64) * 1.5 + 0.5
    kw = dict(scale=10.0, bins=40, value_range=(-4.0, 4.0))
    assert float(scaled_jsd(x, x, **kw)) == pytest.approx(0, abs=1e-12)
    a, b = float(scaled_jsd(x, y, **kw)), float(scaled_jsd(y, x, **kw))
    assert a == pytest.approx(b) and 0 < a <= 10 * np.log(2)
    assert float(scaled_jsd(x, y, **{**kw, "scale": 1.0})) == pytest.approx(a / 10)
    # disjoint supports reach the bound c ln 2
    lo, hi = torch.full((50,), -3.5, dtype=torch.float64), torch.full((50,), 3.5, dtype=torch.float64)
    far = float(scaled_jsd(lo, hi, **kw))
    assert far == pytest.approx(10 * np.log(2), rel=1e-6)
    # differentiable, and a gradient step lowers it
    y = y.clone().requires_grad_(True)
    loss = scaled_jsd(y, x, **kw)
    loss.backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    with torch.no_grad():
        y2 = y - 200.0 * y.grad
    assert float(scaled_jsd(y2, x, **kw)) < float(loss.detach())


def test_soft_histogram_matches_full_kernel():
    centers = torch.linspace(-4, 4, 33, dtype=torch.float64)
    h = float(centers[1] - centers[0])
    v = torch.randn(500, dtype=torch.float64)
    full = torch.exp(-0.5 * ((v[:, None] - centers[None]) / h) ** 2).sum(0)
    np.testing.assert_allclose(soft_histogram(v, centers, h), full / full.sum(), atol=2e-5)
    assert float(jsd(full / full.sum(), full / full.sum())) == pytest.approx(0, abs=1e-12)
