r"""The grid-latent diffusion model as one module: autoencoder, condition encoder, denoiser.

Variables and units:

- ``x``: the standardised log density :math:`(\ln \tilde n - \mu)/\sigma`, with
  :math:`\tilde n` in electrons/Angstrom^3 (buffers ``log_mu``, ``log_sigma``);
- ``u``: the standardised latent :math:`(z - m_c)/s_c` per latent channel (``z_mean``, ``z_std``);
- ``p``: the learned prior density of the atoms (:mod:`ase_ldm.sync.prior`) scaled as
  :math:`(p - \bar p)/s_p` (``prior_mean``, ``prior_std``), encoded by its own periodic patch
  network onto the latent grid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .config import GldmConfig
from .diffusion import CosineSchedule, ddim_sample, ddpm_sample, mean_estimate
from .nets import GridAutoencoder, GridDenoiser

__all__ = ["GridLDM", "served_density"]


class ConditionEncoder(nn.Module):
    """Prior densities (B, 1, N1, N2, N3) -> condition features (B, C, n1, n2, n3)."""

    def __init__(self, patch: int, channels: int, out_channels: int) -> None:
        super().__init__()
        self.patchify = nn.Conv3d(1, channels, patch, stride=patch)
        self.out = nn.Conv3d(channels, out_channels, 1)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return self.out(torch.nn.functional.silu(self.patchify(p)))


class GridLDM(nn.Module):
    """Autoencoder + condition encoder + denoiser + schedule, with the data statistics as buffers."""

    def __init__(self, cfg: GldmConfig) -> None:
        super().__init__()
        self.cfg = cfg
        C = cfg.autoencoder.latent_channels
        self.autoencoder = GridAutoencoder(cfg.autoencoder)
        self.condition = ConditionEncoder(cfg.autoencoder.patch, cfg.denoiser.channels, C)
        self.denoiser = GridDenoiser(cfg.denoiser, C)
        self.schedule = CosineSchedule(cfg.denoiser.steps)
        for name, value in (("log_mu", 0.0), ("log_sigma", 1.0), ("prior_mean", 0.0), ("prior_std", 1.0)):
            self.register_buffer(name, torch.tensor(value))
        self.register_buffer("z_mean", torch.zeros(C))
        self.register_buffer("z_std", torch.ones(C))

    @property
    def history(self) -> int:
        return self.cfg.denoiser.history

    # -- transforms ------------------------------------------------------------------------
    def to_x(self, nt: torch.Tensor) -> torch.Tensor:
        """Densities (B, N1, N2, N3) e/A^3 -> x (B, 1, N1, N2, N3)."""
        return ((nt.clamp(min=1e-12).log() - self.log_mu) / self.log_sigma)[:, None]

    def from_x(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 1, N1, N2, N3) -> densities (B, N1, N2, N3) e/A^3."""
        return torch.exp(x[:, 0] * self.log_sigma + self.log_mu)

    def encode(self, nt: torch.Tensor) -> torch.Tensor:
        """Densities (B, N1, N2, N3) -> standardised latents u (B, C, n1, n2, n3)."""
        z = self.autoencoder.encode(self.to_x(nt))
        return (z - self.z_mean[:, None, None, None]) / self.z_std[:, None, None, None]

    def decode(self, u: torch.Tensor) -> torch.Tensor:
        """Standardised latents (B, C, n1, n2, n3) -> densities (B, N1, N2, N3) e/A^3."""
        z = u * self.z_std[:, None, None, None] + self.z_mean[:, None, None, None]
        return self.from_x(self.autoencoder.decode(z))

    def encode_prior(self, p: torch.Tensor) -> torch.Tensor:
        """Prior densities (B, N1, N2, N3) e/A^3 -> condition features (B, C, n1, n2, n3)."""
        return self.condition(((p - self.prior_mean) / self.prior_std)[:, None])

    # -- the denoiser's condition ----------------------------------------------------------
    def condition_tensors(self, past: torch.Tensor, priors: torch.Tensor, has_past: torch.Tensor,
                          has_atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pack the condition.

        Parameters
        ----------
        past : (B, H, C, n1, n2, n3) standardised past latents, newest first.
        priors : (B, H + 1, N1, N2, N3) prior densities of the target's atoms, then the past steps'.
        has_past : (B, H) 1 where the past latent exists.
        has_atoms : (B,) 1 where the atoms are known.

        Returns
        -------
        past (B, H C, ...), atoms ((B, (H + 1) C, ...)), flags (B, H + 1), masked.
        """
        B, H = past.shape[:2]
        hp = has_past.float()
        past = (past * hp[:, :, None, None, None, None]).flatten(1, 2)
        feats = self.encode_prior(priors.flatten(0, 1)).unflatten(0, (B, H + 1))
        known = torch.cat([has_atoms.float()[:, None], hp * has_atoms.float()[:, None]], dim=1)
        atoms = (feats * known[:, :, None, None, None, None]).flatten(1, 2)
        flags = torch.cat([hp, has_atoms.float()[:, None]], dim=1)
        return past, atoms, flags

    def generate(self, past: torch.Tensor, atoms: torch.Tensor, flags: torch.Tensor, *, mode: str = "mean",
                 n_steps: int = 10, eta: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standardised latents (B, C, n1, n2, n3) of the next step.

        ``mode``: 'mean' (one pass, the conditional mean), 'ddpm' (all K levels) or 'ddim'
        (``n_steps`` levels, fresh noise scaled by ``eta``).
        """
        C = self.denoiser.latent_channels
        shape = (past.shape[0], C, *past.shape[-3:])

        def denoise(z: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            return self.denoiser(z, k, past, atoms, flags)

        if mode == "mean":
            return mean_estimate(denoise, shape, self.denoiser.levels, past.device)
        if mode == "ddpm":
            return ddpm_sample(denoise, self.schedule, shape, generator=generator, device=past.device)
        if mode == "ddim":
            return ddim_sample(denoise, self.schedule, shape, n_steps, eta=eta, generator=generator,
                               device=past.device)
        raise ValueError(f"unknown generation mode {mode!r}; use mean, ddpm or ddim")


def served_density(nt: torch.Tensor, band: torch.Tensor | None, electrons: float, dV: float,
                   hold: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Decoded densities (B, N1, N2, N3) e/A^3 as served: filtered in Fourier space by ``band``
    (rfft half-grid weights: the mask of the plane waves the data contain, where the patch
    decoder's seams lie outside, times the decoder's spectral gain, :mod:`ase_ldm.gldm.spectrum`),
    then by ``hold`` (filtered rfft coefficients -> scaled ones, :mod:`ase_ldm.gldm.hold`),
    kept positive, scaled to ``electrons`` (dV: volume element, A^3)."""
    if band is not None:
        X = torch.fft.rfftn(nt, dim=(-3, -2, -1)) * band
        if hold is not None:
            X = hold(X)
        nt = torch.fft.irfftn(X, s=nt.shape[-3:], dim=(-3, -2, -1))
        nt = nt.clamp(min=1e-6)
    return nt * (electrons / (nt.sum((-3, -2, -1), keepdim=True) * dV))
