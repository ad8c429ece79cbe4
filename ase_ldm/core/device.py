"""Where torch work runs: the one place that resolves ``device='auto'``."""

from __future__ import annotations

import os

import torch

from ..errors import InvalidInput

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA if available else CPU; under torchrun, the local rank's GPU.

    Raises
    ------
    InvalidInput
        An unknown device name, or CUDA asked for where none is available.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise InvalidInput(f"device {device!r}: use 'auto', 'cpu' or 'cuda'")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInput(f"device {device!r}: no CUDA device is available here; use 'cpu' or 'auto'")
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}")
    return torch.device(device)
