r"""From densities to the model's state and back.

The paper maps the log-normal-like density to a near-standard-normal field,

.. math:: x = \frac{\log n - \mu}{\sigma}, \qquad n = \exp(\sigma x + \mu) > 0,

with :math:`\mu, \sigma` the mean and standard deviation of :math:`\log n` over the training set
(n in electrons/Angstrom^3). The state of frame t has two channels: :math:`x_t` and its time
derivative by a backward difference, standardised by its own training-set scale,

.. math:: \dot x_t = \frac{x_t - x_{t-1}}{\Delta t\, s_{\dot x}}.

Electron count: the decoder is free to change the integral of n. Generated frames are
renormalised to a target count (by default the count of the frame the rollout starts from).
In GPAW data the integral of ``nt`` itself moves by about 0.07 % over a trajectory (part of
the charge sits in the PAW compensation charges), so a fixed count is right to that level;
only a model that also predicts ``D`` can make the count exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..errors import InvalidInput

__all__ = ["LogNormalTransform", "fit_transform", "renormalize"]


@dataclass(frozen=True)
class LogNormalTransform:
    """Log-standardisation of densities and the scale of their time derivative.

    Parameters
    ----------
    mu, sigma : float
        Mean and standard deviation of :math:`\\log n` (n in electrons/Angstrom^3) over the training frames.
    dt_fs : float
        Time between frames, fs.
    dot_scale : float
        Standard deviation of :math:`(x_t - x_{t-1}) / \\Delta t` over the training frames, 1/fs.
    x_min, x_max : float
        Range to which generated x is clamped before the exponential (the training range
        widened by one unit when fitted; +-8 otherwise), so a poor prediction cannot underflow
        to zero or overflow to infinity.
    """

    mu: float
    sigma: float
    dt_fs: float
    dot_scale: float
    x_min: float = -8.0
    x_max: float = 8.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def forward(self, n: torch.Tensor) -> torch.Tensor:
        """Density (e/Angstrom^3, positive) to the standardised log field ``x``."""
        return (torch.log(n) - self.mu) / self.sigma

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised log field ``x`` (clamped to [x_min, x_max]) to a positive density in e/Angstrom^3."""
        return torch.exp(x.clamp(self.x_min, self.x_max) * self.sigma + self.mu)

    def state(self, n_prev: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """The two-channel state ``(x_t, xdot_t)`` from two consecutive densities.

        Parameters
        ----------
        n_prev, n : (B, N1, N2, N3) tensors
            Densities of frames t-1 and t (spins summed), electrons/Angstrom^3.

        Returns
        -------
        (B, 2, N1, N2, N3) tensor
        """
        x_prev, x = self.forward(n_prev), self.forward(n)
        return torch.stack([x, (x - x_prev) / (self.dt_fs * self.dot_scale)], dim=1)

    def density(self, state: torch.Tensor) -> torch.Tensor:
        """Density (B, N1, N2, N3) in e/Angstrom^3 from a state's first channel."""
        return self.inverse(state[:, 0])


def fit_transform(frames: Iterable[np.ndarray], dt_fs: float) -> LogNormalTransform:
    """Fit the transform to consecutive training densities (spins summed), streaming.

    Parameters
    ----------
    frames : iterable of (N1, N2, N3) arrays
        Consecutive training densities, electrons/Angstrom^3, strictly positive.
    dt_fs : float
        Time between frames, fs.
    """
    s1 = s2 = d2 = 0.0
    count = nd = 0
    lo, hi = np.inf, -np.inf
    prev = None
    for n in frames:
        n = np.asarray(n, np.float64)
        if n.min() <= 0 or not np.all(np.isfinite(n)):
            raise InvalidInput("training densities must be finite and strictly positive (use nt, not the "
                             "compensated density)")
        log_n = np.log(n)
        lo, hi = min(lo, log_n.min()), max(hi, log_n.max())
        s1 += log_n.sum()
        s2 += (log_n**2).sum()
        count += log_n.size
        if prev is not None:
            d2 += ((log_n - prev) ** 2).sum()
            nd += log_n.size
        prev = log_n
    if nd == 0:
        raise InvalidInput("need at least two consecutive frames to fit the transform")
    mu = s1 / count
    sigma = float(np.sqrt(max(s2 / count - mu**2, 1e-30)))
    # d(log n)/dt standardised by sigma: (x_t - x_{t-1}) / dt has variance d2/nd / (sigma dt)^2
    dot_scale = float(np.sqrt(d2 / nd)) / (sigma * dt_fs)
    return LogNormalTransform(mu=float(mu), sigma=sigma, dt_fs=float(dt_fs), dot_scale=dot_scale,
                              x_min=float((lo - mu) / sigma) - 1.0, x_max=float((hi - mu) / sigma) + 1.0)


def renormalize(n: torch.Tensor, count: torch.Tensor | float, dV: float) -> torch.Tensor:
    """Scale densities (B, N1, N2, N3) so that each integrates to ``count`` electrons (dV in Angstrom^3)."""
    current = n.sum(dim=(1, 2, 3)) * dV
    target = torch.as_tensor(count, dtype=n.dtype, device=n.device)
    return n * (target / current).view(-1, 1, 1, 1)
