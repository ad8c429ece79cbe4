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


def test_network_is_periodic_translation_equivariant():
    net = tiny_sync_net()
    x = {k: v.double() if v.is_floating_point() else v for k, v in random_sync_inputs((8, 10, 12), 3).items()}
    nt, D = net(**x)
    s = (3, 1, 5)
    y = dict(x)
    for k in ("p", "p_hist", "r_hist"):
        y[k] = torch.roll(x[k], s, dims=(-3, -2, -1))
    y["frac"] = x["frac"] + torch.tensor(s, dtype=torch.float64) / torch.tensor([8.0, 10.0, 12.0])
    nt2, D2 = net(**y)
    torch.testing.assert_close(nt2, torch.roll(nt, s, dims=(-3, -2, -1)))
    torch.testing.assert_close(D2, D)


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
