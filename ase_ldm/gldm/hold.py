r"""The shell-amplitude hold: keeps what a sampled rollout yields at the liquid's spectrum.

The rollout gain (:func:`~ase_ldm.gldm.spectrum.fit_rollout_gain`) gives a chain's served
densities the training frames' mean Fourier amplitude per shell of :math:`|G|`, on average over
the calibration chains. A single chain still wanders about that mean: its short-wavelength
amplitude drifts by 5-10 % over 100-step windows, where the AIMD's stays within about 1 %
(BENCHMARKS.md, "The shell-amplitude hold"). A static gain cannot remove a chain's own
excursions.

Per chain, each held shell's mean amplitude relative to the mean density,
:math:`a_s(t) = \langle|n_t(G)|\rangle_{G\in s} / n_t(0)` (Fourier coefficients of what the chain
yields before the hold), is followed by an exponential moving average with relaxation time
:math:`\tau` steps,

.. math:: m_s(t) = m_s(t-1) + (a_s(t) - m_s(t-1)) / \tau, \qquad m_s(0) = a_s(0),

and the yielded spectrum is multiplied by :math:`r_s / m_s(t)`, where :math:`r_s` is the training
frames' mean relative amplitude in that shell (``rollout_fit['target']``). The held amplitude is
then :math:`r_s\, a_s(t) / m_s(t)`: excursions slower than about :math:`\tau` steps are divided
out, faster fluctuations are kept. The average follows the chain's own, unheld amplitude (the
chain never sees the hold), so this is a moving normalisation, not a feedback loop. With
:math:`\tau = 1` every frame would hold exactly :math:`r_s`: a frozen spectrum. The factor is
capped at 4 (no lower bound: at the band's partial edge shell, whose plane waves the AIMD
hardly fills, it cuts 20-30x on ``li16-800K``). A factor that the cap or the positivity clamp
limits leaves the shell short of :math:`r_s`. The factor is one number per shell, so it steps at
the shells' borders, :math:`|G| = (s + 1/2) w`.

The held shells are the rollout gain's fitted ones, ``from_shell`` up to the band's edge shell
(shells of width ``shell_width`` w, index :math:`\mathrm{rint}(|G|/w)`): below them the mean
amplitude belongs to the configuration of the moment and has no fixed value to hold. The hold
acts on what a rollout yields only; the chain re-encodes the density of the ``sample`` gain, so
its latents do not change.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InvalidInput
from .spectrum import _band_weights, _shells, check_spectral_gain

__all__ = ["AmplitudeHold", "has_hold"]

#: the largest factor r_s / m_s
_MAX_FACTOR = 4.0


def has_hold(gain: dict[str, Any] | None) -> bool:
    """Whether a fitted ``spectral_gain`` holds the amplitude hold's target (a rollout gain fitted with it)."""
    return isinstance(gain, dict) and "rollout" in gain and "target" in (gain.get("rollout_fit") or {})


class AmplitudeHold:
    """The amplitude hold of one rollout's chains on one grid (see the module docstring).

    Parameters
    ----------
    gain : a fitted ``spectral_gain`` with a rollout gain fitted with its target (:func:`has_hold`).
    cell : (3, 3) Angstrom, the rollout's cell.
    grid : (N1, N2, N3) the rollout's grid: the one the target was fitted on.
    band_limit : the data's band, 1/A.
    tau : the relaxation time, steps (>= 1).
    device : where the spectra live.

    Raises
    ------
    InvalidInput
        No target, a bad ``tau``, or a grid whose band holds other shells than the target's.
    CheckpointError
        A damaged ``gain``.
    """

    def __init__(self, gain: dict[str, Any], cell: np.ndarray, grid: tuple[int, int, int], band_limit: float,
                 tau: float, device: torch.device | str = "cpu") -> None:
        if not has_hold(gain):
            raise InvalidInput("this model's rollout gain has no amplitude-hold target; refit it with "
                               "ase_ldm.gldm.calibration.calibrate_rollout_spectrum")
        check_spectral_gain(gain)
        if isinstance(tau, (bool, np.bool_)) or not isinstance(tau, (int, float, np.integer, np.floating)) \
                or not 1 <= tau < 1e12:
            raise InvalidInput(f"the amplitude hold's relaxation time must be a number of steps >= 1, got {tau!r}")
        fit = gain["rollout_fit"]
        first, target = int(fit["from_shell"]), np.asarray(fit["target"], float)
        kabs, shell = _shells(np.asarray(cell, float), tuple(grid), float(gain["shell_width"]))
        w = _band_weights(tuple(grid), kabs, float(band_limit))
        ns = int(shell.max()) + 1
        count = np.bincount(shell, w, ns)
        in_band = np.flatnonzero(count > 0)
        held = np.arange(first, in_band[-1] + 1) if len(in_band) and in_band[-1] >= first else np.arange(0)
        if len(held) != len(target) or np.any(count[held] <= 0):
            raise InvalidInput(f"the amplitude hold's target covers {len(target)} shells from shell {first}, but this "
                               f"grid's band holds shells {first}..{in_band[-1] if len(in_band) else '-'}; it was "
                               "fitted on another grid (a rollout runs on the training grid)")
        controlled = np.zeros(ns, bool)
        controlled[held] = True
        r = np.zeros(ns)
        r[held] = target
        self.tau = float(tau)
        self._shell = torch.as_tensor(shell, device=device)
        self._w = torch.as_tensor(w, dtype=torch.float64, device=device)
        self._count = torch.as_tensor(np.where(count > 0, count, 1.0), dtype=torch.float64, device=device)
        #: which shells are held (shells,)
        self.controlled = torch.as_tensor(controlled, device=device)
        #: the target relative amplitude of each shell (shells,), 0 where not held
        self.target = torch.as_tensor(r, dtype=torch.float64, device=device)
        self._ns = ns
        #: the moving average of each chain's relative shell amplitudes (B, shells); None before the first step
        self.m: torch.Tensor | None = None

    def shell_amplitudes(self, X: torch.Tensor) -> torch.Tensor:
        """Mean |n(G)| / n(0) per shell (B, shells) of rfft coefficients X (B, N1, N2, N3 // 2 + 1)."""
        a = X.abs().reshape(X.shape[0], -1).double()
        out = torch.zeros(X.shape[0], self._ns, dtype=torch.float64, device=X.device)
        out = out.index_add_(1, self._shell, a * self._w) / self._count
        return out / a[:, :1].clamp(min=1e-300)

    def factor(self) -> torch.Tensor:
        """The factor r_s / m_s of each chain and shell (B, shells), 1 where not held; after a step."""
        if self.m is None:
            raise InvalidInput("the amplitude hold has seen no step yet")
        f = torch.where(self.controlled & (self.m > 0), self.target / self.m.clamp(min=1e-300), 1.0)
        return f.clamp(0.0, _MAX_FACTOR)

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """Update the average with this step's spectra X (B, N1, N2, N3 // 2 + 1) and return them scaled."""
        a = self.shell_amplitudes(X)
        self.m = a if self.m is None else self.m + (a - self.m) / self.tau
        return X * self.factor().to(X.real.dtype)[:, self._shell].reshape(X.shape)
