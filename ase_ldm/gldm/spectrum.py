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

A third, optional gain corrects what sampled autonomous rollouts serve:

- ``rollout``: fitted on the model's own sampled rollouts from training frames
  (:func:`fit_rollout_gain`), so that the served densities have the training frames' mean Fourier
  amplitude per shell. A chain's generated latents decode with more short-wavelength structure
  than reconstructions (BENCHMARKS.md, "The rollout gain"), which the ``sample`` gain, fitted on
  reconstructions, cannot see. It multiplies the ``sample`` gain on what a rollout yields only;
  the density the chain re-encodes keeps the ``sample`` gain, so the chain's latents do not change.

Stored in model.json as ``spectral_gain``: ``{"shell_width": w, "mean": [...], "sample": [...],
"frames": [...]}``, with ``"rollout": [...]`` and ``"rollout_fit": {...}`` (the fit's settings)
once fitted (``rollout_fit`` also holds the ``target`` amplitudes and the relaxation time
``hold_steps`` of the rollout's amplitude hold, :mod:`ase_ldm.gldm.hold`); knot s sits at
:math:`|G| = s w`. The rollout gain depends on the chains, so refitting
``mean`` and ``sample``, the latent speed, or the denoiser (a fine-tune) drops it
(:func:`without_rollout_gain`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..core.fourier import band_mask, reciprocal_grid, reciprocal_vectors
from ..errors import CheckpointError, InvalidInput

__all__ = ["GAIN_KINDS", "UnstableSpectrum", "check_spectral_gain", "fit_rollout_gain", "fit_spectral_gain",
           "spectral_filter", "without_rollout_gain"]

#: which gain each use of a decoded density takes (see the module docstring)
GAIN_KINDS = ("mean", "sample", "rollout")
_FITTED = ("mean", "sample")  # always present in a fitted gain; 'rollout' is optional
_CLIP = {"mean": (0.0, 2.0), "sample": (0.0, 4.0), "rollout": (0.0, 4.0)}
_REFIT = {"mean": "calibrate_spectrum", "sample": "calibrate_spectrum", "rollout": "calibrate_rollout_spectrum"}


class UnstableSpectrum(InvalidInput):
    """No shell of the reference's spectrum is stable enough to fit a rollout gain to."""


def without_rollout_gain(gain: dict[str, Any] | None) -> dict[str, Any] | None:
    """``gain`` without its ``rollout`` knots and their fit (a copy), for when the chains change."""
    if gain is not None and not isinstance(gain, dict):
        raise InvalidInput(f"a spectral gain is a dict, got {type(gain).__name__}")
    return None if gain is None else {k: v for k, v in gain.items() if k not in ("rollout", "rollout_fit")}


def _half_weights(grid: tuple[int, int, int]) -> np.ndarray:
    """How often each rfft half-grid point appears in the full FFT grid (1 or 2), (N3 // 2 + 1,)."""
    w = np.full(grid[2] // 2 + 1, 2.0)
    w[0] = 1.0
    if grid[2] % 2 == 0:
        w[-1] = 1.0
    return w


def _band_weights(grid: tuple[int, int, int], kabs: np.ndarray, band_limit: float) -> np.ndarray:
    """Weights of the flat rfft half grid in sums over the full grid, zero outside the band."""
    return np.broadcast_to(_half_weights(grid), (grid[0], grid[1], grid[2] // 2 + 1)).ravel() * (kabs < band_limit)


def _shells(cell: np.ndarray, grid: tuple[int, int, int], width: float) -> tuple[np.ndarray, np.ndarray]:
    """|G| of the rfft half grid (flat) and the shell index rint(|G| / width) of each point."""
    kabs = np.linalg.norm(reciprocal_grid(cell, grid), axis=-1).ravel()
    return kabs, np.rint(kabs / width).astype(np.int64)


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
            kabs, shell = _shells(cell, grid, width)
            # only the band's plane waves count: the served density has nothing outside it
            weights = _band_weights(grid, kabs, band_limit)
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


def fit_rollout_gain(reference_blocks: Iterable[Iterable[np.ndarray]], generated: Iterable[np.ndarray],
                     cell: np.ndarray, band_limit: float, gain: dict[str, Any], max_block_spread: float = 0.02
                     ) -> dict[str, Any]:
    r"""The ``rollout`` knots: generated densities, multiplied by them inside the band, get the
    reference's mean Fourier amplitude :math:`\langle|X(G)|\rangle` per shell of :math:`|G|`.

    The filter is linear in the knots (interpolated in :math:`|G|`, as :func:`spectral_filter`
    applies it), so the knots solve one bounded least-squares problem: per shell :math:`s`,
    :math:`\sum_{G \in s} A(G) \sum_j g_j \phi_j(|G|) = \sum_{G \in s} R(G)`, with :math:`A`, :math:`R`
    the mean amplitudes of the generated and reference densities on the band's plane waves and
    :math:`\phi_j` the interpolation's hat functions.

    Only shells whose mean amplitude is a property of the liquid are fitted. At the smallest
    :math:`|G|` it belongs to the configuration of the moment and differs from one stretch of a
    trajectory to the next (BENCHMARKS.md, "The rollout gain"). Shell ``from_shell`` is the first
    whose mean amplitude varies by less than ``max_block_spread`` (relative standard deviation over
    ``reference_blocks``); it and every shell above it that holds plane waves of the band are
    fitted, the band's partial edge shell included. The knots below it stay 1, as does knot 0 (the
    mean density; the hat of knot ``from_shell`` still reaches into shell ``from_shell - 1``), and
    the knots above the edge shell hold its value.

    Parameters
    ----------
    reference_blocks : iterable of iterables of (N1, N2, N3) e/A^3
        Densities the model trained on, in blocks of consecutive frames (at least 2 blocks).
    generated : iterable of (N1, N2, N3) e/A^3
        What the model's sampled rollouts serve without a ``rollout`` gain, on the same grid.
    cell : (3, 3) Angstrom.
    band_limit : the data's band, 1/A.
    gain : the fitted ``spectral_gain`` (its ``shell_width`` and number of knots are kept).
    max_block_spread : the stationarity threshold above, > 0.

    Returns
    -------
    dict with ``knots`` (list, one per knot of ``gain``), ``from_shell``, ``block_spread`` (the
    relative spread of each shell's mean amplitude over the blocks) and ``target``: the reference's
    mean :math:`|n(G)| / n(0)` (relative to the mean density) in each fitted shell, from
    ``from_shell`` to the edge shell, which the rollout's amplitude hold holds (:mod:`ase_ldm.gldm.hold`).

    Raises
    ------
    UnstableSpectrum
        When no shell is stable to ``max_block_spread`` (too few or too short blocks).
    """
    from scipy.optimize import lsq_linear

    check_spectral_gain(gain)
    cell = np.asarray(cell, float)
    if cell.shape != (3, 3) or not np.all(np.isfinite(cell)) or abs(np.linalg.det(cell)) < 1e-9:
        raise InvalidInput(f"cell must be a finite (3, 3) matrix with nonzero volume, got {cell.tolist()}")
    for name, value in (("band_limit", band_limit), ("max_block_spread", max_block_spread)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 < value < np.inf:
            raise InvalidInput(f"{name} must be a positive number, got {value!r}")
    width, nk = float(gain["shell_width"]), len(gain["mean"])
    grid: list[tuple[int, ...]] = []

    def mean_amplitude(fields: Iterable[np.ndarray], what: str) -> tuple[np.ndarray, int]:
        total, n = None, 0
        for x in fields:
            x = np.asarray(x, np.float64)
            if x.ndim != 3 or (grid and x.shape != grid[0]):
                raise InvalidInput(f"the {what} densities need the one 3D grid of the reference, got {x.shape}")
            if not np.all(np.isfinite(x)):
                raise InvalidInput(f"a {what} density has non-finite values")
            grid[:1] = [x.shape]
            a = np.abs(np.fft.rfftn(x)).ravel()
            total = a if total is None else total + a
            n += 1
        if n == 0:
            raise InvalidInput(f"no {what} densities to fit the rollout gain to")
        return total / n, n

    per = [mean_amplitude(b, "reference") for b in reference_blocks]
    if len(per) < 2:
        raise InvalidInput(f"the rollout gain needs at least 2 blocks of reference frames, got {len(per)}")
    blocks, counts = zip(*per)
    R = np.average(blocks, axis=0, weights=counts)  # the mean over all reference frames
    A, _ = mean_amplitude(generated, "generated")
    kabs, shell = _shells(cell, grid[0], width)
    w = _band_weights(grid[0], kabs, band_limit)
    ns = max(int(shell.max()) + 1, nk)
    per_block = np.array([np.bincount(shell, w * b, ns) for b in blocks])
    mean = per_block.mean(0)
    spread = np.where(mean > 0, per_block.std(0, ddof=1) / np.where(mean > 0, mean, 1.0), 0.0)
    in_band = np.bincount(shell, w, ns) > 0
    stable = np.flatnonzero((spread[1:] < max_block_spread) & (mean[1:] > 0)) + 1
    if len(stable) == 0:
        raise UnstableSpectrum(f"no shell of |G| inside the band has a mean amplitude stable to {max_block_spread} "
                               "over the reference blocks; give more reference frames or a larger max_block_spread")
    first, last = int(stable[0]), int(np.flatnonzero(in_band)[-1])
    if last >= nk:
        raise InvalidInput(f"the band {band_limit} 1/A reaches shell {last}, beyond the gain's {nk} knots")
    # the hat functions of the knots; the knots above the edge shell hold its value (one column)
    u = kabs / width
    j0 = np.floor(u).astype(np.int64)
    f = u - j0
    M = np.zeros((ns, last + 1))
    for j, phi in ((j0, 1 - f), (j0 + 1, f)):
        np.add.at(M, (shell, np.minimum(j, last)), w * A * phi)
    rhs = np.bincount(shell, w * R, ns)
    rows = in_band.copy()
    rows[:first] = False
    empty = np.flatnonzero(rows & (np.bincount(shell, w * A, ns) <= 0))
    if len(empty):
        raise InvalidInput(f"the generated densities hold no amplitude in shell {int(empty[0])} of the band; "
                           "they cannot be scaled to the reference's")
    free = np.arange(first, last + 1)
    g = np.ones(nk)
    fixed = M[rows][:, :first] @ g[:first]
    fit = lsq_linear(M[rows][:, free], rhs[rows] - fixed, bounds=_CLIP["rollout"])
    g[free] = fit.x
    g[last + 1:] = g[last]
    count = np.bincount(shell, w, ns)
    target = rhs[first:last + 1] / np.where(count[first:last + 1] > 0, count[first:last + 1], 1.0) / R[0]
    return {"knots": g.round(6).tolist(), "from_shell": first, "block_spread": spread[:nk].round(5).tolist(),
            "target": [float(f"{t:.6e}") for t in target]}


def check_spectral_gain(gain: Any) -> None:
    """Raise CheckpointError unless ``gain`` is a fitted gain: a positive finite ``shell_width``
    and, for ``mean``, ``sample`` and (where present) ``rollout``, the same number (at least 2) of
    finite, non-negative knots."""
    def bad(why: str, kind: str = "mean") -> CheckpointError:
        return CheckpointError(f"model.json's spectral_gain is damaged ({why}); refit it with "
                               f"ase_ldm.gldm.calibration.{_REFIT[kind]}")

    if not isinstance(gain, dict):
        raise bad(f"a {type(gain).__name__}, not a dict")
    width = gain.get("shell_width")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 1e-6 < width < 1e6:
        raise bad(f"shell_width {width!r}")
    lengths = {}
    for kind in GAIN_KINDS:
        if kind not in _FITTED and kind not in gain:
            continue
        g = gain.get(kind)
        if not isinstance(g, list) or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in g):
            raise bad(f"{kind} is not a list of numbers", kind)
        a = np.asarray(g, float)
        if len(a) < 2 or not np.all(np.isfinite(a)) or np.any(a < 0) or np.any(a > _CLIP[kind][1]):
            raise bad(f"{kind} needs at least 2 knots, each in [0, {_CLIP[kind][1]}] as fitted", kind)
        lengths[kind] = len(a)
    if ("rollout_fit" in gain) != ("rollout" in gain) or not isinstance(gain.get("rollout_fit", {}), dict):
        raise bad("rollout and rollout_fit (a dict) come together", "rollout")
    fit = gain.get("rollout_fit", {})
    if "target" in fit or "hold_steps" in fit:
        target, tau, first = fit.get("target"), fit.get("hold_steps"), fit.get("from_shell")
        if not isinstance(target, list) or not target or any(
                isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1 for t in target):
            raise bad("rollout_fit's target is not a list of relative amplitudes |n(G)| / n(0) in [0, 1]", "rollout")
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 1 <= tau < 1e12:
            raise bad(f"rollout_fit's hold_steps {tau!r} is not a time of at least 1 step", "rollout")
        if isinstance(first, bool) or not isinstance(first, int) or not 1 <= first <= len(gain["mean"]) - len(target):
            raise bad(f"rollout_fit's from_shell {first!r} is not a shell of the gain", "rollout")
    for kind, n in lengths.items():
        if n != lengths["mean"]:
            raise bad(f"{kind} has {n} knots, mean {lengths['mean']}", kind)


def spectral_filter(gain: dict[str, Any] | None, kind: str, cell: np.ndarray, grid: tuple[int, int, int],
                    band_limit: float | None) -> np.ndarray | None:
    """The rfft half-grid weights (N1, N2, N3 // 2 + 1) a decoded density is multiplied by.

    The band mask (|G| < ``band_limit``) times, with a fitted ``gain``, the gain of ``kind``
    interpolated linearly in |G|; ``rollout`` is the ``sample`` gain times the ``rollout`` knots.
    None when there is neither (the decoded density is served as it is).
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
    if kind == "rollout" and "rollout" not in gain:
        raise InvalidInput("this model has no rollout gain; fit it with "
                           "ase_ldm.gldm.calibration.calibrate_rollout_spectrum")
    width = float(gain["shell_width"])
    kabs = np.linalg.norm(reciprocal_grid(cell, tuple(grid)), axis=-1)
    for k in (("sample", "rollout") if kind == "rollout" else (kind,)):
        g = np.asarray(gain[k], float)
        out = out * np.interp(kabs / width, np.arange(len(g)), g, right=g[-1])
    return out

