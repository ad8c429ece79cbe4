"""The synchronised network (ase_ldm.sync.net): periodic equivariance, supercells, cold start, PAW packing."""

from __future__ import annotations

import pytest
import torch
from conftest import random_sync_inputs, tiny_sync_net

from ase_ldm.sync.net import pack_D, sample_at_atoms, unpack_D


def test_sample_at_atoms_is_periodic_trilinear():
    feat = torch.arange(4 * 5 * 6, dtype=torch.float64).reshape(1, 1, 4, 5, 6)
    frac = torch.tensor([[[1 / 4, 2 / 5, 3 / 6], [1.0 + 1 / 4, -3 / 5, 3 / 6], [1 / 8, 2 / 5, 3 / 6]]],
                        dtype=torch.float64)
    out = sample_at_atoms(feat, frac)[0, :, 0]
    assert float(out[0]) == pytest.approx(float(feat[0, 0, 1, 2, 3]), abs=1e-9)
    assert float(out[1]) == pytest.approx(float(feat[0, 0, 1, 2, 3]), abs=1e-9)  # wrapped into the cell
    assert float(out[2]) == pytest.approx(0.5 * float(feat[0, 0, 0, 2, 3] + feat[0, 0, 1, 2, 3]), abs=1e-9)


def test_pack_D_roundtrip():
    A = torch.randn(3, 5, 5, dtype=torch.float64)
    D = A + A.transpose(-1, -2)
    assert torch.equal(unpack_D(pack_D(D), 5), D)


def _check_shift_equivariance(net, x, nt, D, s):
    """Shifting density grids by ``s`` steps and atoms with them shifts nt and leaves D."""
    y = dict(x)
    for k in ("p", "p_hist", "r_hist"):
        y[k] = torch.roll(x[k], s, dims=(-3, -2, -1))
    y["frac"] = x["frac"] + torch.tensor(s, dtype=torch.float64) / torch.tensor(x["p"].shape[1:], dtype=torch.float64)
    nt2, D2 = net(**y)
    torch.testing.assert_close(nt2, torch.roll(nt, s, dims=(-3, -2, -1)))
    torch.testing.assert_close(D2, D)


def test_network_is_periodic_translation_equivariant():
    net = tiny_sync_net()
    x = {k: v.double() if v.is_floating_point() else v for k, v in random_sync_inputs((8, 10, 12), 3).items()}
    nt, D = net(**x)
    _check_shift_equivariance(net, x, nt, D, (3, 1, 5))


def test_coarse_network_is_equivariant_to_coarse_grid_steps_and_band_limited():
    """With coarsen=2 the correction lives on the coarse band and follows shifts by two fine steps."""
    from ase_ldm.core.fourier import fourier_resample

    net = tiny_sync_net(coarsen=2)
    x = {k: v.double() if v.is_floating_point() else v for k, v in random_sync_inputs((12, 10, 14), 3).items()}
    nt, D = net(**x)
    w = net.coef[x["h"]].double()
    base = x["p"] + torch.einsum("bk,bk...->b...", w, x["r_hist"])
    delta = nt - base
    assert float(delta.detach().abs().max()) > 0
    # the correction holds only plane waves of the (6, 5, 7) coarse grid
    torch.testing.assert_close(fourier_resample(fourier_resample(delta, (6, 5, 7)), (12, 10, 14)), delta)
    _check_shift_equivariance(net, x, nt, D, (2, 4, -6))


def test_network_runs_on_a_supercell_and_gives_the_tiled_answer():
    """A 2x1x1 supercell with the atoms repeated gets the tiled density and the same D per atom."""
    net = tiny_sync_net()
    x = {k: v.double() if v.is_floating_point() else v for k, v in random_sync_inputs((10, 8, 8), 2).items()}
    nt, D = net(**x)
    y = dict(x)
    for k in ("p", "p_hist", "r_hist"):
        y[k] = torch.cat([x[k], x[k]], dim=-3)
    f = x["frac"].clone()
    f[..., 0] = f[..., 0] / 2
    f2 = f.clone()
    f2[..., 0] += 0.5
    y["frac"] = torch.cat([f, f2], dim=1)
    y["species"] = torch.zeros(4, dtype=torch.long)
    y["D_hist"] = torch.cat([x["D_hist"], x["D_hist"]], dim=2)
    nt2, D2 = net(**y)
    torch.testing.assert_close(nt2, torch.cat([nt, nt], dim=-3))
    torch.testing.assert_close(D2, torch.cat([D, D], dim=1))


def test_cold_start_ignores_history():
    net = tiny_sync_net()
    x = {k: v.double() if v.is_floating_point() else v for k, v in random_sync_inputs((8, 8, 8), 2).items()}
    x["h"] = torch.tensor([0])
    nt, D = net(**x)
    x["r_hist"] = x["r_hist"] * 7
    x["D_hist"] = x["D_hist"] + 3
    nt2, D2 = net(**x)
    torch.testing.assert_close(nt, nt2)
    torch.testing.assert_close(D, D2)


def test_network_refuses_a_grid_zero_times_coarser():
    from ase_ldm.errors import InvalidInput
    from ase_ldm.sync.config import SyncConfig
    from ase_ldm.sync.layout import PAWLayout
    from ase_ldm.sync.net import SyncNet

    with pytest.raises(InvalidInput, match="coarsen"):
        SyncNet(SyncConfig(channels=4, dilations=(1,), coarsen=0), PAWLayout((3,), (5,)))
