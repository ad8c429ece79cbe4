"""Networks, transform, losses and samplers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ase_ldm.ldm import Autoencoder, DensityLDM, LinearSchedule
from ase_ldm.ldm.config import AutoencoderConfig, DiffusionConfig, LossConfig, ModelConfig
from ase_ldm.ldm.diffusion import ddim_sample, ddpm_sample
from ase_ldm.ldm.losses import jsd, scaled_jsd, soft_histogram
from ase_ldm.ldm.transforms import LogNormalTransform, fit_transform, renormalize

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
