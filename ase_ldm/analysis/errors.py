r"""Pointwise errors between a predicted and a reference density on the same grid.

Relative errors as defined by Deep Density (Fiedler et al., eqs. 21-22):

.. math::
    \epsilon_{\ell_1} = \frac{\sum_i |n_i - \hat n_i|}{\sum_i |n_i|}, \qquad
    \epsilon_{\ell_2} = \frac{\left(\sum_i (n_i - \hat n_i)^2\right)^{1/2}}{\left(\sum_i n_i^2\right)^{1/2}}

and the integrated absolute error :math:`\int |\Delta n|\, dV` (electrons), also per electron of the
reference, :math:`\int |\Delta n|\, dV / \int n\, dV`. For a positive reference density on a uniform
grid the per-electron error equals :math:`\epsilon_{\ell_1}`.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInput

__all__ = ["rel_l1", "rel_l2", "integrated_abs_error", "pointwise_errors"]


def _pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, np.float64)
    ref = np.asarray(ref, np.float64)
    if pred.shape != ref.shape:
        raise InvalidInput(f"prediction {pred.shape} and reference {ref.shape} are on different grids")
    return pred, ref


def rel_l1(pred: np.ndarray, ref: np.ndarray) -> float:
    """Relative L1 error (dimensionless; multiply by 100 for %)."""
    pred, ref = _pair(pred, ref)
    return float(np.abs(pred - ref).sum() / np.abs(ref).sum())


def rel_l2(pred: np.ndarray, ref: np.ndarray) -> float:
    """Relative L2 error (dimensionless)."""
    pred, ref = _pair(pred, ref)
    return float(np.sqrt(((pred - ref) ** 2).sum() / (ref**2).sum()))


def integrated_abs_error(pred: np.ndarray, ref: np.ndarray, dV: float) -> float:
    """:math:`\\int |\\Delta n|\\, dV`, electrons, for densities in electrons/Angstrom^3 and dV in Angstrom^3."""
    pred, ref = _pair(pred, ref)
    return float(np.abs(pred - ref).sum() * dV)


def pointwise_errors(pred: np.ndarray, ref: np.ndarray, dV: float) -> dict[str, float]:
    """All pointwise errors of one frame: ``rel_l1``, ``rel_l2``, ``abs_error_e``, ``abs_error_per_electron``."""
    abs_e = integrated_abs_error(pred, ref, dV)
    n_ref = float(np.asarray(ref, np.float64).sum() * dV)
    return {"rel_l1": rel_l1(pred, ref), "rel_l2": rel_l2(pred, ref), "abs_error_e": abs_e,
            "abs_error_per_electron": abs_e / n_ref}
