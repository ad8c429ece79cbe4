r"""The shell-amplitude feedback: holds what a sampled rollout serves at the liquid's spectrum.

The rollout gain (:func:`~ase_ldm.gldm.spectrum.fit_rollout_gain`) gives a chain's served
densities the training frames' mean Fourier amplitude per shell of :math:`|G|`, on average over
the calibration chains. A single chain still wanders about that mean: its short-wavelength
amplitude drifts by 5-10 % over 100-step windows, where the AIMD's stays within about 1 %
(BENCHMARKS.md, "The shell-amplitude feedback"). A static gain cannot remove a chain's own
excursions; feedback can.

Per chain, each controlled shell's mean amplitude relative to the mean density,
:math:`a_s(t) = \langle|n_t(G)|\rangle_{G\in s} / n_t(0)` (Fourier coefficients), is followed by an
exponential moving average with relaxation time :math:`\tau` steps,

.. math:: m_s(t) = m_s(t-1) + (a_s(t) - m_s(t-1)) / \tau, \qquad m_s(0) = a_s(0),

and the served spectrum is multiplied by :math:`r_s / m_s(t)`, where :math:`r_s` is the training
frames' mean relative amplitude in that shell (``rollout_fit['target']``). Like a Berendsen thermostat,
it removes the slow excursions (longer than about :math:`\tau` steps) and keeps the fast
fluctuations: with :math:`\tau = 1` every frame would hold exactly :math:`r_s`, a frozen spectrum.

The controlled shells are the rollout gain's fitted ones, ``from_shell`` up to the band's edge
shell (shells of width ``shell_width``, index :math:`\mathrm{rint}(|G|/w)`): below them the mean
amplitude belongs to the configuration of the moment and has no fixed value to hold. The feedback
acts on what a rollout yields only; the chain re-encodes the density of the ``sample`` gain, so its
latents do not change.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InvalidInput
from .spectrum import _band_weights, _shells

__all__ = ["ShellFeedback", "has_feedback"]

#: the factor r_s / m_s is kept within the rollout gain's range
_MAX_FACTOR = 4.0


def has_feedback(gain: dict[str, Any] | None) -> bool:
    """Whether a fitted ``spectral_gain`` holds the feedback's target (a rollout gain fitted with it)."""
    return isinstance(gain, dict) and "rollout" in gain and "target" in (gain.get("rollout_fit") or {})


class ShellFeedback:
    """The feedback of one rollout of ``batch`` chains on one grid (see the module docstring).

    Parameters
    ----------
    gain : a fitted ``spectral_gain`` with a rollout gain fitted with its target (:func:`has_feedback`).
    cell : (3, 3) Angstrom, the rollout's cell.
    grid : (N1, N2, N3) the rollout's grid.
    band_limit : the data's band, 1/A.
    tau : the relaxation time, steps (>= 1).
    device : where the spectra live.
    """

    def __init__(self, gain: dict[str, Any], cell: np.ndarray, grid: tuple[int, int, int], band_limit: float,
                 tau: float, device: torch.device | str = "cpu") -> None:
        if not has_feedback(gain):
            raise InvalidInput("this model's rollout gain has no feedback target; refit it with "
                               "ase_ldm.gldm.calibration.calibrate_rollout_spectrum")
        if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)) or not 1 <= tau < 1e12:
            raise InvalidInput(f"the feedback's relaxation time must be a number of steps >= 1, got {tau!r}")
        fit = gain["rollout_fit"]
        first, target = int(fit["from_shell"]), np.asarray(fit["target"], float)
        kabs, shell = _shells(np.asarray(cell, float), tuple(grid), float(gain["shell_width"]))
        w = _band_weights(tuple(grid), kabs, float(band_limit))
        ns = int(shell.max()) + 1
        count = np.bincount(shell, w, ns)
        controlled = np.zeros(ns, bool)
        controlled[first:first + len(target)] = True
        controlled &= count > 0
        r = np.zeros(ns)
        r[first:first + len(target)] = target[:max(0, ns - first)]
        self.tau = float(tau)
        self._shell = torch.as_tensor(shell, device=device)
        self._w = torch.as_tensor(w, dtype=torch.float64, device=device)
        self._count = torch.as_tensor(np.where(count > 0, count, 1.0), dtype=torch.float64, device=device)
        #: which shells are held (shells,)
        self.controlled = torch.as_tensor(controlled, device=device)
        self._r = torch.as_tensor(r, dtype=torch.float64, device=device)
        self._ns = ns
        #: the moving average of each chain's relative shell amplitudes (B, shells); None before the first step
        self.m: torch.Tensor | None = None

    def shell_amplitudes(self, X: torch.Tensor) -> torch.Tensor:
        """Mean |n(G)| / n(0) per shell (B, shells) of rfft coefficients X (B, N1, N2, N3 // 2 + 1)."""
        a = X.abs().reshape(X.shape[0], -1).double()
        out = torch.zeros(X.shape[0], self._ns, dtype=torch.float64, device=X.device)
        out = out.index_add_(1, self._shell, a * self._w) / self._count
        return out / a[:, :1].clamp(min=1e-300)

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """Update the average with this step's spectra X (B, N1, N2, N3 // 2 + 1) and return them scaled."""
        a = self.shell_amplitudes(X)
        self.m = a if self.m is None else self.m + (a - self.m) / self.tau
        factor = torch.where(self.controlled & (self.m > 0), self._r / self.m.clamp(min=1e-300), 1.0)
        factor = factor.clamp(0.0, _MAX_FACTOR).to(X.real.dtype)
        return X * factor[:, self._shell].reshape(X.shape)
