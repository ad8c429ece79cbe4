r"""The paper's model: periodic 3D autoencoder + conditional latent DDPM.

Training objective, per batch of consecutive states :math:`(s_t, s_{t+1})`:

.. math:: L = L_\text{AE} + \lambda_1 L_\text{LDM} + \lambda_2 L_\text{sJSD}

* :math:`L_\text{AE}`: reconstruction of the current state from its latent;
* :math:`L_\text{LDM}`: DDPM noise prediction of the next latent conditioned on the current
  one. The diffusion runs on standardised latents :math:`u = (z - m)/s`, with :math:`m, s`
  running (EMA) statistics of the encoder's output, and the latents are detached: the
  denoiser learns the encoder's latent dynamics without pulling the encoder towards latents
  that are easy to denoise (a collapse the AE loss alone would have to fight);
* :math:`L_\text{sJSD}`: scaled JSD between soft histograms of reconstructed and true
  standardised log densities.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidInput
from .autoencoder import Autoencoder
from .config import LossConfig, ModelConfig
from .denoiser import LatentDenoiser
from .diffusion import SAMPLERS, LinearSchedule
from .losses import reconstruction_loss, scaled_jsd

__all__ = ["DensityLDM"]


class DensityLDM(nn.Module):
    """Autoencoder, latent denoiser, schedule and latent statistics for one grid.

    Parameters
    ----------
    cfg : ModelConfig
    grid : (N1, N2, N3)
    latent_momentum : float
        EMA momentum of the latent mean and (scalar) scale used to standardise diffusion inputs.
    """

    def __init__(self, cfg: ModelConfig, grid: tuple[int, int, int], latent_momentum: float = 0.05) -> None:
        super().__init__()
        self.cfg = cfg
        self.grid = tuple(int(n) for n in grid)
        d = cfg.autoencoder.latent_dim
        self.autoencoder = Autoencoder(cfg.autoencoder, self.grid)
        self.denoiser = LatentDenoiser(d, cfg.diffusion)
        self.schedule = LinearSchedule(cfg.diffusion.steps, cfg.diffusion.beta_start, cfg.diffusion.beta_end)
        self.latent_momentum = latent_momentum
        self.register_buffer("z_mean", torch.zeros(d))
        self.register_buffer("z_std", torch.ones(d))
        self.register_buffer("z_initialized", torch.zeros((), dtype=torch.bool))

    # -- latents -------------------------------------------------------------------------
    def encode(self, s: torch.Tensor) -> torch.Tensor:
        """State (B, 2, N1, N2, N3) -> latent z (B, d)."""
        return self.autoencoder.encode(s)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent z (B, d) -> state (B, 2, N1, N2, N3)."""
        return self.autoencoder.decode(z)

    def standardize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.z_mean) / self.z_std

    def unstandardize(self, u: torch.Tensor) -> torch.Tensor:
        return u * self.z_std + self.z_mean

    @torch.no_grad()
    def _update_latent_stats(self, z: torch.Tensor) -> None:
        """EMA of the latent mean, and of one scalar scale measured around that running mean.

        One scale for all dimensions: per-dimension scales of near-constant dimensions are tiny
        and would blow standardised values up. Measuring it around the running (lagging) mean
        keeps standardised latents O(1) while the encoder still moves; the scale never drops below
        the current batch's.
        """
        first = not bool(self.z_initialized)
        m = self.latent_momentum
        if first:
            self.z_mean.copy_(z.mean(0))
        else:
            self.z_mean.mul_(1 - m).add_(m * z.mean(0))
        scale = ((z - self.z_mean) ** 2).mean().sqrt().clamp_min(1e-6)
        if first:
            self.z_std.fill_(float(scale))
            self.z_initialized.fill_(True)
        else:  # never below the current batch's scale, so a moving encoder cannot inflate u
            self.z_std.copy_(torch.maximum(self.z_std * (1 - m) + m * scale, scale))

    # -- training ------------------------------------------------------------------------
    def forward(self, s_t: torch.Tensor, s_next: torch.Tensor, loss_cfg: LossConfig,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """All loss terms for a batch of consecutive states; ``total`` is what to minimise.

        The autoencoder terms use s_t; the next latent, the LDM's target, is encoded without
        gradient (it is detached in the LDM loss anyway), which halves the cost of a step.
        """
        z_t = self.encode(s_t)
        recon = self.decode(z_t)
        with torch.no_grad():
            z_next = self.encode(s_next)
        l_ae = reconstruction_loss(recon, s_t, loss_cfg.dot_weight)
        if self.training:
            self._update_latent_stats(torch.cat([z_t.detach(), z_next]))
        l_ldm = self.schedule.loss(self.denoiser, self.standardize(z_next), self.standardize(z_t.detach()), generator)
        out = {"ae": l_ae, "ldm": l_ldm}
        total = l_ae + loss_cfg.lambda_ldm * l_ldm
        if loss_cfg.lambda_sjsd > 0:
            l_sjsd = scaled_jsd(recon[:, 0], s_t[:, 0], scale=loss_cfg.sjsd_scale, bins=loss_cfg.sjsd_bins,
                                value_range=loss_cfg.sjsd_range, bandwidth=loss_cfg.sjsd_bandwidth)
            out["sjsd"] = l_sjsd
            total = total + loss_cfg.lambda_sjsd * l_sjsd
        out["total"] = total
        return out

    # -- generation ----------------------------------------------------------------------
    @torch.no_grad()
    def sample_next(self, z_t: torch.Tensor, sampler: str = "ddim", generator: torch.Generator | None = None,
                    n_steps: int = 20, clip: float | None = 2.0, temperature: float = 1.0) -> torch.Tensor:
        """Sample the next latent z_{t+1} (B, d) given z_t (B, d); see :mod:`ase_ldm.ldm.diffusion` for ``clip``."""
        if sampler not in SAMPLERS:
            raise InvalidInput(f"unknown sampler {sampler!r}; choose from {sorted(SAMPLERS)}")
        cond = self.standardize(z_t)
        if sampler == "ddim":
            u = SAMPLERS["ddim"](self.denoiser, self.schedule, cond, generator, n_steps=n_steps, clip=clip,
                                 temperature=temperature)
        else:
            u = SAMPLERS["ddpm"](self.denoiser, self.schedule, cond, generator, clip=clip, temperature=temperature)
        return self.unstandardize(u)
