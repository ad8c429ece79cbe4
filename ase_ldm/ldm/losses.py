r"""Training losses: reconstruction, soft histogram and the scaled Jensen-Shannon divergence.

Soft histogram (Chiang et al., Sec. 2.2): each value :math:`x_i` contributes to every bin
:math:`b` (centre :math:`c_b`) with a Gaussian kernel,

.. math:: p_b = \frac{\sum_i \exp(-(x_i - c_b)^2 / 2h^2)}{\sum_{b'} \sum_i \exp(-(x_i - c_{b'})^2 / 2h^2)},

which is differentiable in :math:`x`. The scaled JSD is :math:`c \cdot \mathrm{JSD}(p, q)` with
natural logarithms, so :math:`0 \le \mathrm{sJSD} \le c \ln 2`.
"""

from __future__ import annotations

import torch

__all__ = ["soft_histogram", "jsd", "scaled_jsd", "reconstruction_loss"]


def soft_histogram(x: torch.Tensor, centers: torch.Tensor, bandwidth: float, cutoff: float = 3.0) -> torch.Tensor:
    """Gaussian-kernel histogram of all values of ``x`` (any shape) -> probabilities (bins,).

    ``centers`` must be evenly spaced. Kernels are truncated at ``cutoff`` bandwidths, so each
    value touches only the few bins around it (7 for a bandwidth of one bin spacing): the
    cost is linear in the number of values, not values x bins.
    """
    v = x.reshape(-1)
    nbins = centers.numel()
    c0, spacing = centers[0], centers[1] - centers[0]
    reach = int(torch.ceil(torch.as_tensor(cutoff * bandwidth / float(spacing))).item())
    nearest = torch.round((v.detach() - c0) / spacing).long()
    hist = torch.zeros(nbins, dtype=x.dtype, device=x.device)
    for offset in range(-reach, reach + 1):
        b = nearest + offset
        ok = (b >= 0) & (b < nbins)
        bb = b[ok]
        w = torch.exp(-0.5 * ((v[ok] - centers[bb]) / bandwidth) ** 2)
        hist = hist.index_add(0, bb, w)
    return hist / hist.sum().clamp_min(torch.finfo(hist.dtype).tiny)


def jsd(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Jensen-Shannon divergence (nats) of two probability vectors."""
    m = 0.5 * (p + q)
    kl_pm = torch.sum(p * (torch.log(p + eps) - torch.log(m + eps)))
    kl_qm = torch.sum(q * (torch.log(q + eps) - torch.log(m + eps)))
    return 0.5 * (kl_pm + kl_qm)


def scaled_jsd(x_pred: torch.Tensor, x_true: torch.Tensor, *, scale: float, bins: int,
               value_range: tuple[float, float], bandwidth: float = 1.0) -> torch.Tensor:
    """sJSD between the soft histograms of predicted and true values.

    ``bandwidth`` is in units of the bin spacing.
    """
    centers = torch.linspace(value_range[0], value_range[1], bins, device=x_pred.device, dtype=x_pred.dtype)
    h = bandwidth * (value_range[1] - value_range[0]) / (bins - 1)
    return scale * jsd(soft_histogram(x_pred, centers, h), soft_histogram(x_true, centers, h))


def reconstruction_loss(s_pred: torch.Tensor, s_true: torch.Tensor, dot_weight: float) -> torch.Tensor:
    """Mean squared error of the state: density channel plus ``dot_weight`` times the derivative channel."""
    err = (s_pred - s_true) ** 2
    return err[:, 0].mean() + dot_weight * err[:, 1].mean()
