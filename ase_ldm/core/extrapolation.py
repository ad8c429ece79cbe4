r"""Polynomial extrapolation in time: the one table of coefficients.

From the last :math:`h` values :math:`x_{t-1}, x_{t-2}, \dots` of a quantity sampled at equal
time steps, the polynomial of degree :math:`h - 1` through them predicts

.. math:: \hat x_t = \sum_{k=1}^{h} c^{(h)}_k x_{t-k}, \qquad
          c^{(1)} = (1),\; c^{(2)} = (2, -1),\; c^{(3)} = (3, -3, 1).

Used by the SCF providers (densities and PAW matrices), the analysis baselines, and the
synchronised model (the residual it corrects).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInput

__all__ = ["COEFFICIENTS", "ORDER_NAMES", "coefficients", "extrapolate", "weight_table"]

#: Coefficients on (x_{t-1}, x_{t-2}, ...) by polynomial order (0: previous value).
COEFFICIENTS: dict[int, tuple[float, ...]] = {0: (1.0,), 1: (2.0, -1.0), 2: (3.0, -3.0, 1.0)}

#: The names by which the command line and the providers call each order.
ORDER_NAMES = {0: "previous", 1: "linear", 2: "quadratic"}


def coefficients(available: int, order: int = 2) -> tuple[float, ...]:
    """The coefficients for ``order``, lowered to what ``available`` past values allow (>= 1)."""
    if order not in COEFFICIENTS:
        raise InvalidInput(f"extrapolation order must be one of {sorted(COEFFICIENTS)}, got {order}")
    if available < 1:
        raise InvalidInput("extrapolation needs at least one past value")
    return COEFFICIENTS[min(order, available - 1)]


def extrapolate(past: Sequence[Any], order: int = 2) -> Any:
    """Extrapolate from ``past`` (newest first): arrays, or lists of arrays combined item by item.

    Returns float64 arrays (complex128 for complex input), or a list of them.
    """
    coefs = coefficients(len(past), order)
    return _combine(coefs, list(past)[: len(coefs)])


def _combine(coefs: tuple[float, ...], items: list) -> Any:
    if isinstance(items[0], list):
        return [_combine(coefs, [it[a] for it in items]) for a in range(len(items[0]))]
    return sum(c * _promoted(x) for c, x in zip(coefs, items))


def _promoted(x: Any) -> np.ndarray:
    """float64 for real arrays, complex128 for complex ones (wave functions)."""
    x = np.asarray(x)
    return x.astype(np.result_type(x.dtype, np.float64), copy=False)


def weight_table(history: int) -> np.ndarray:
    """Weights ``W[h, k-1] = c^(h)_k``, shape (history + 1, history): row h extrapolates from h
    past values (row 0, a cold start, is zero; orders above quadratic stay quadratic)."""
    w = np.zeros((history + 1, history))
    for h in range(1, history + 1):
        c = COEFFICIENTS[min(h - 1, max(COEFFICIENTS))]
        w[h, : len(c)] = c
    return w
