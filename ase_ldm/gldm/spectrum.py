r"""The decoder's spectral gain: a radial filter fitted to the autoencoder's systematic error.

The patch decoder puts wrong power at short wavelengths. On the Li16 reference it has up to 10x
the data's power at :math:`|G|` = 10-12 1/A, anti-correlated with the data there, and loses
power near 7 1/A (BENCHMARKS.md). A radial gain per shell of :math:`|G|` corrects it, fitted once on the
autoencoder's reconstructions of training frames :math:`x \to \hat x`:

- ``mean``: the Wiener gain :math:`g = \mathrm{Re}\langle X \hat X^*\rangle / \langle|\hat X|^2\rangle`,
  which minimises the squared error of a served mean (calculators, SCF guesses, the spread);
- ``sample``: the amplitude gain :math:`g = (\langle|X|^2\rangle / \langle|\hat X|^2\rangle)^{1/2}`,
  which gives generated densities the data's power per shell (autonomous rollouts, the paper's
  statistics).

Both are clipped (``mean`` to [0, 2], ``sample`` to [0, 4]) and applied only inside the data's
plane-wave band (``band_limit``); every shell holding plane waves of the band is fitted, the
edge shell included, and the gain is held beyond it. The gains are a function of :math:`|G|` (knots every
``shell_width`` 1/A), so they serve any cell with the training grid spacing.

Stored in model.json as ``spectral_gain``: ``{"shell_width": w, "mean": [...], "sample": [...],
"frames": [...]}``; knot s sits at :math:`|G| = s w`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..core.fourier import band_mask, reciprocal_grid, reciprocal_vectors
from ..errors import CheckpointError, InvalidInput

__all__ = ["GAIN_KINDS", "check_spectral_gain", "fit_spectral_gain", "spectral_filter"]

#: which gain each use of a decoded density takes (see the module docstring)
GAIN_KINDS = ("mean", "sample")
_CLIP = {"mean": (0.0, 2.0), "sample": (0.0, 4.0)}


def _half_weights(grid: tuple[int, int, int]) -> np.ndarray:
    """How often each rfft half-grid point appears in the full FFT grid (1 or 2), (N3 // 2 + 1,)."""
    w = np.full(grid[2] // 2 + 1, 2.0)
    w[0] = 1.0
    if grid[2] % 2 == 0:
        w[-1] = 1.0
    return w


def fit_spectral_gain(pairs: Iterable[tuple[np.ndarray, np.ndarray]], cell: np.ndarray, band_limit: float,
                      frames: list[int] | None = None) -> dict[str, Any]:
    """Fit the shell gains from (data, reconstruction) pairs.

    Parameters
    ----------
    pairs : iterable of (x_R, xhat_R)
        Densities (N1, N2, N3), e/A^3: a training frame and its reconstruction (encoded, decoded,
        band-projected), all on one grid of ``cell``.
    cell : (3, 3) Angstrom.
    band_limit : float
        The data's band, 1/A; the gains are 1 outside it (where the served density is zero).
    frames : the frame indices, recorded with the fit (without them: the number of pairs).

    Returns
    -------
    dict for model.json's ``spectral_gain`` (see the module docstring).
    """
    cell = np.asarray(cell, float)
    width = float(np.linalg.norm(reciprocal_vectors(cell), axis=1).min())
    num = den = power = None
    shell = weights = None
    n = 0
    for x, xhat in pairs:
        x, xhat = np.asarray(x, np.float64), np.asarray(xhat, np.float64)
        if x.shape != xhat.shape or x.ndim != 3:
            raise InvalidInput(f"a spectral fit needs pairs of densities of one grid, got {x.shape}, {xhat.shape}")
        if shell is None:
            grid = x.shape
            kabs = np.linalg.norm(reciprocal_grid(cell, x.shape), axis=-1)
            shell = np.rint(kabs / width).astype(np.int64).ravel()
            # only the band's plane waves count: the served density has nothing outside it
            weights = (np.broadcast_to(_half_weights(x.shape), kabs.shape) * (kabs < band_limit)).ravel()
            ns = int(shell.max()) + 1
            num, den, power = np.zeros(ns), np.zeros(ns), np.zeros(ns)
        elif x.shape != grid:
            raise InvalidInput(f"all pairs need the grid {grid}, got {x.shape}")
        X, Xh = np.fft.rfftn(x).ravel(), np.fft.rfftn(xhat).ravel()
        num += np.bincount(shell, weights * (X * Xh.conj()).real, ns)
        den += np.bincount(shell, weights * np.abs(Xh) ** 2, ns)
        power += np.bincount(shell, weights * np.abs(X) ** 2, ns)
        n += 1
    if n == 0:
        raise InvalidInput("no frames to fit the spectral gain to")
    # a shell is fitted where it holds plane waves of the band (its edge shell only partly)
    in_band = np.bincount(shell, weights, ns) > 0
    inside = in_band & (den > 0)
    inside[0] = False  # the mean density: the count normalisation fixes it
    if not inside.any():
        raise InvalidInput(f"no shell of |G| inside the band {band_limit} 1/A holds power to fit")
    last = int(np.flatnonzero(inside)[-1])
    gains = {}
    d = np.where(inside, den, 1.0)
    for kind, g in (("mean", num / d), ("sample", np.sqrt(power / d))):
        g = np.where(inside, np.clip(g, *_CLIP[kind]), 1.0)
        g[last + 1:] = g[last]  # beyond the band the mask zeroes the density; hold the edge's gain
        gains[kind] = g.round(6).tolist()
    return {"shell_width": width, **gains, "frames": list(frames) if frames is not None else n}


def check_spectral_gain(gain: Any) -> None:
    """Raise CheckpointError unless ``gain`` is a fitted gain: a positive finite ``shell_width``
    and, for each kind, as many finite, non-negative knots (at least 2) as the other kind."""
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"model.json's spectral_gain is damaged ({why}); refit it with "
                               "ase_ldm.gldm.calibration.calibrate_spectrum")

    if not isinstance(gain, dict):
        raise bad(f"a {type(gain).__name__}, not a dict")
    width = gain.get("shell_width")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 1e-6 < width < 1e6:
        raise bad(f"shell_width {width!r}")
    lengths = set()
    for kind in GAIN_KINDS:
        g = gain.get(kind)
        if not isinstance(g, list) or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in g):
            raise bad(f"{kind} is not a list of numbers")
        a = np.asarray(g, float)
        if len(a) < 2 or not np.all(np.isfinite(a)) or np.any(a < 0):
            raise bad(f"{kind} needs at least 2 finite, non-negative knots")
        lengths.add(len(a))
    if len(lengths) != 1:
        raise bad("mean and sample have different numbers of knots")


def spectral_filter(gain: dict[str, Any] | None, kind: str, cell: np.ndarray, grid: tuple[int, int, int],
                    band_limit: float | None) -> np.ndarray | None:
    """The rfft half-grid weights (N1, N2, N3 // 2 + 1) a decoded density is multiplied by.

    The band mask (|G| < ``band_limit``) times, with a fitted ``gain``, the gain of ``kind``
    interpolated linearly in |G|. None when there is neither (the decoded density is served as it is).
    """
    if kind not in GAIN_KINDS:
        raise InvalidInput(f"unknown spectral gain {kind!r}; use one of {GAIN_KINDS}")
    if band_limit is None:
        return None
    cell = np.asarray(cell, float)
    out = band_mask(cell, tuple(grid), float(band_limit)).astype(np.float64)
    if gain is None:
        return out
    check_spectral_gain(gain)
    g, width = np.asarray(gain[kind], float), float(gain["shell_width"])
    kabs = np.linalg.norm(reciprocal_grid(cell, tuple(grid)), axis=-1)
    return out * np.interp(kabs / width, np.arange(len(g)), g, right=g[-1])

