"""Circular (periodic) 3D convolutions that run through oneDNN at inference on a CPU.

For a batch of one on one thread PyTorch picks its reference kernels (``slow_conv3d``,
``slow_conv_dilated3d``) for a 3D convolution, 2-3 x slower than oneDNN for the small grids of
this package's networks (measured in BENCHMARKS.md: 8.8 against 3.0 ms for 32 channels on a 15^3
grid; 1.4 against 0.6 ms on a 10^3 grid). Without gradients on a CPU the oneDNN kernel is called
directly on the circularly padded input. Training (gradients on) and other devices take the
module's own path, so weights and state-dict keys are those of :class:`torch.nn.Conv3d`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["circular_conv3d", "CircularConv3d"]


def _fast_path(x: torch.Tensor) -> bool:
    return (not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def circular_conv3d(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a circular-padded convolution, through oneDNN when inferring on a CPU.

    Parameters
    ----------
    conv : nn.Conv3d
        Any 3D convolution; the oneDNN path serves those with ``padding_mode='circular'`` or no
        padding, the others run as they are.
    x : (B, C_in, N1, N2, N3) tensor

    Returns
    -------
    (B, C_out, M1, M2, M3) tensor, equal to ``conv(x)`` to float32 round-off.
    """
    pad = list(conv._reversed_padding_repeated_twice)
    if not _fast_path(x) or (any(pad) and conv.padding_mode != "circular"):
        return conv(x)
    if any(pad):
        x = F.pad(x, pad, mode="circular")
    return torch.ops.aten.mkldnn_convolution(x.contiguous(), conv.weight, conv.bias, [0, 0, 0],
                                             list(conv.stride), list(conv.dilation), conv.groups)


class CircularConv3d(nn.Conv3d):
    """``nn.Conv3d(..., padding_mode='circular')`` whose inference on a CPU goes through oneDNN.

    Takes :class:`torch.nn.Conv3d`'s arguments except ``padding_mode``, which is circular.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs["padding_mode"] = "circular"
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return circular_conv3d(self, x) if _fast_path(x) else super().forward(x)
