"""The circular convolutions (ase_ldm.core.conv): the oneDNN inference path equals nn.Conv3d."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ase_ldm.core.conv import CircularConv3d, circular_conv3d


@pytest.mark.parametrize("n,d", [(15, 1), (15, 2), (15, 4), (12, 2), (23, 4), (10, 1)])
def test_inference_convolution_equals_the_module(n, d):
    """Without gradients on a CPU the circular 3x3x3 convolution runs through oneDNN directly;
    it must give what nn.Conv3d gives (float32 round-off), and with gradients it is the module."""
    torch.manual_seed(n + d)
    conv = nn.Conv3d(8, 6, 3, padding=d, dilation=d, padding_mode="circular")
    x = torch.randn(1, 8, n, n, n)
    with torch.no_grad():
        fast, ref = circular_conv3d(conv, x), conv(x)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    assert not torch.equal(fast, conv(x.roll(1, 2)).detach())  # the comparison sees the data
    y = circular_conv3d(conv, x.requires_grad_())
    assert y.requires_grad and torch.equal(y, conv(x))


@pytest.mark.parametrize("k,stride,pad", [(3, 1, 1), (3, 3, 0), (1, 1, 0)])
def test_circular_module_is_a_conv3d(k, stride, pad):
    """CircularConv3d keeps nn.Conv3d's weights and state-dict keys, and gives its output in
    inference (oneDNN) and in training (the module's path, with gradients)."""
    torch.manual_seed(k + stride)
    ref = nn.Conv3d(4, 5, k, stride=stride, padding=pad, padding_mode="circular")
    mod = CircularConv3d(4, 5, k, stride=stride, padding=pad)
    assert mod.padding_mode == "circular" and set(mod.state_dict()) == set(ref.state_dict())
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 9, 9, 9)
    with torch.inference_mode():
        torch.testing.assert_close(mod(x), ref(x), rtol=1e-5, atol=1e-5)
    y = mod(x.requires_grad_())
    y.sum().backward()
    assert x.grad is not None and torch.equal(y, ref(x))


def test_the_fast_path_runs_and_other_paddings_fall_back():
    """On this CPU inference takes oneDNN (so the comparisons above test it); 'same' padding works,
    and a zero-padded convolution is not turned circular."""
    from ase_ldm.core.conv import _fast_path

    x = torch.randn(1, 3, 8, 8, 8)
    with torch.no_grad():
        assert _fast_path(x) == (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)
        same = nn.Conv3d(3, 2, 3, padding="same", padding_mode="circular")
        torch.testing.assert_close(circular_conv3d(same, x), same(x), rtol=1e-5, atol=1e-5)
        zeros = nn.Conv3d(3, 2, 3, padding=1)
        assert torch.equal(circular_conv3d(zeros, x), zeros(x))
