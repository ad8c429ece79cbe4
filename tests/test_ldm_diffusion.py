"""The latent DDPM schedule and its samplers (ase_ldm.ldm.diffusion)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ase_ldm.ldm import DensityLDM, LinearSchedule
from ase_ldm.ldm.config import AutoencoderConfig, DiffusionConfig, ModelConfig
from ase_ldm.ldm.diffusion import ddim_sample, ddpm_sample

SMALL = ModelConfig(autoencoder=AutoencoderConfig(channels=(4, 8, 16, 16), latent_dim=12),
                    diffusion=DiffusionConfig(steps=30, hidden=32, layers=2, embedding_dim=8))


def test_samplers_are_seedable():
    torch.manual_seed(0)
    model = DensityLDM(SMALL, (8, 8, 8))
    cond = torch.randn(4, 12)
    sched = model.schedule

    def run(fn, seed, **kw):
        g = torch.Generator()
        g.manual_seed(seed)
        return fn(model.denoiser, sched, cond, g, **kw)

    torch.testing.assert_close(run(ddim_sample, 3, n_steps=7), run(ddim_sample, 3, n_steps=7))
    torch.testing.assert_close(run(ddpm_sample, 3), run(ddpm_sample, 3))
    assert (run(ddpm_sample, 3) - run(ddpm_sample, 4)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="n_steps"):
        run(ddim_sample, 0, n_steps=0)


def test_schedule_is_linear_ddpm():
    s = LinearSchedule(1000, 1e-4, 0.02)
    assert float(s.beta[0]) == pytest.approx(1e-4) and float(s.beta[-1]) == pytest.approx(0.02)
    np.testing.assert_allclose(np.diff(s.beta.numpy()), (0.02 - 1e-4) / 999, rtol=1e-4)
    assert float(s.alpha_bar[-1]) < 1e-4  # fully noised at the end


def test_ddpm_posterior_mean_equals_the_epsilon_form_without_clipping():
    """Ho et al.: (z - beta/sqrt(1-ab) eps)/sqrt(1-beta) equals the posterior mean from
    z0 = (z - sqrt(1-ab) eps)/sqrt(ab)."""
    s = LinearSchedule(100, 1e-4, 0.02)
    z, eps = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    for k in (1, 50, 99):
        beta, ab, ab_prev = s.beta[k].double(), s.alpha_bar[k].double(), s.alpha_bar[k - 1].double()
        eps_form = (z - beta / (1 - ab).sqrt() * eps) / (1 - beta).sqrt()
        z0 = (z - (1 - ab).sqrt() * eps) / ab.sqrt()
        posterior = (ab_prev.sqrt() * beta * z0 + (1 - beta).sqrt() * (1 - ab_prev) * z) / (1 - ab)
        torch.testing.assert_close(posterior, eps_form, rtol=1e-4, atol=1e-5)


def test_clip_norm():
    from ase_ldm.ldm.diffusion import clip_norm

    z = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    out = clip_norm(z, clip=1.0)  # limit 1 * sqrt(2)
    assert float(out[0].norm()) == pytest.approx(2**0.5)
    torch.testing.assert_close(out[1], z[1])
    torch.testing.assert_close(clip_norm(z, None), z)
