"""Symmetry operations of the synchronised model's augmentation, checked against real GPAW."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ase_ldm.sync.symmetry import SymmetryOp, projector_l, symmetry_ops, transform_D


def test_symmetry_ops_count():
    assert len(symmetry_ops(np.eye(3) * 4.0, (12, 12, 12))) == 48
    assert len(symmetry_ops(np.diag([4.0, 4.0, 5.0]), (12, 12, 15))) == 16
    assert len(symmetry_ops(np.diag([4.0, 4.0, 4.0]), (12, 12, 16))) == 16
    # a skewed cell keeps the identity and the inversion only
    assert symmetry_ops(np.array([[4.0, 0, 0], [1.0, 4.0, 0], [0, 0, 4.0]]), (12, 12, 12)) == [
        SymmetryOp((0, 1, 2), (1, 1, 1)), SymmetryOp((0, 1, 2), (-1, -1, -1))]


def test_op_is_a_map_of_grid_points():
    """op.grid moves the value at fractional f to op.frac(f), for every grid point."""
    N = (4, 6, 6)
    x = torch.arange(np.prod(N), dtype=torch.float64).reshape(N)
    op = SymmetryOp((0, 2, 1), (-1, 1, -1))
    y = op.grid(x)
    Np = np.array([N[p] for p in op.perm])
    for idx in np.ndindex(*N):
        f = torch.tensor(np.array(idx) / np.array(N))
        g = np.round((op.frac(f).numpy() % 1.0) * Np).astype(int) % Np
        assert y[tuple(g)] == x[idx]


@pytest.mark.gpaw
def test_transformed_density_and_D_match_gpaw():
    """GPAW at the transformed positions gives the transformed nt (grid op) and D (M D M^T)."""
    pytest.importorskip("gpaw")
    from ase import Atoms
    from gpaw import GPAW, PW

    from ase_ldm.data.gpaw_io import D_asii_from_gpaw, nt_sR_from_gpaw

    L = 4.2
    pos = np.array([[0.31, 0.52, 0.77], [2.05, 2.61, 1.93]])
    assert projector_l(np.array([3, 14, 3])) == {3: [0, 1, 1, 1, 0], 14: [0, 1, 1, 1, 0, 1, 1, 1, 2, 2, 2, 2, 2]}
    l_i = projector_l(np.array([3, 3]))[3]

    def run(positions, cell):
        atoms = Atoms("Li2", positions=positions, cell=cell, pbc=True)
        atoms.wrap()
        atoms.calc = GPAW(mode=PW(200), xc="PBE", occupations={"name": "fermi-dirac", "width": 0.1},
                          symmetry="off", txt=None, convergence={"density": 1e-7, "eigenstates": 1e-10})
        atoms.get_potential_energy()
        return nt_sR_from_gpaw(atoms.calc)[0], np.stack([D[0] for D in D_asii_from_gpaw(atoms.calc)])

    # a cubic cell's rotation, and the inversion of a triclinic cell (its only operation besides
    # the identity), both checked against GPAW at the transformed positions
    skewed = np.array([[L, 0, 0], [0.9, L, 0], [-0.6, 0.7, L]])
    for cell, op in ((np.eye(3) * L, SymmetryOp((2, 0, 1), (-1, 1, -1))), (skewed, symmetry_ops(skewed, (1,) * 3)[1])):
        nt, D = run(pos, cell)
        nt2, D2 = run(pos @ op.R.T, cell)
        expect = op.grid(torch.as_tensor(nt)).numpy()
        assert np.abs(nt2 - expect).sum() / np.abs(nt2).sum() < 1e-5
        np.testing.assert_allclose(D2, transform_D(D, op, l_i), atol=2e-5)
        # and the p block does change: the test would catch a wrong harmonic order
        assert np.abs(transform_D(D, op, l_i) - D).max() > 1e-3


def test_inverse_undoes_every_op():
    x = torch.randn(2, 6, 6, 6, dtype=torch.float64)
    f = torch.rand(5, 3, dtype=torch.float64)
    D = torch.randn(4, 5, 5, dtype=torch.float64)
    l_i = [0, 1, 1, 1, 0]
    for op in symmetry_ops(np.eye(3) * 3.0, (6, 6, 6)):
        inv = op.inverse()
        assert torch.equal(inv.grid(op.grid(x)), x)
        torch.testing.assert_close(torch.remainder(inv.frac(op.frac(f)), 1.0), f)
        torch.testing.assert_close(transform_D(transform_D(D, op, l_i), inv, l_i), D)
        np.testing.assert_allclose(inv.R @ op.R, np.eye(3))


@pytest.mark.gpaw
def test_projector_rotation_uses_gpaw_for_any_l_and_agrees_with_the_p_block_without_it(monkeypatch):
    pytest.importorskip("gpaw")
    from ase_ldm.sync import symmetry

    ops = symmetry_ops(np.eye(3) * 4.0, (8, 8, 8))
    l_i = (0, 1, 1, 1, 2, 2, 2, 2, 2)  # s, p and d: what Si's or O's 13 projectors hold
    with_gpaw = [symmetry.projector_rotation(op, l_i) for op in ops]
    for op, M in zip(ops, with_gpaw):
        np.testing.assert_allclose(M @ M.T, np.eye(9), atol=1e-12)  # orthogonal
        np.testing.assert_allclose(M @ symmetry.projector_rotation(op.inverse(), l_i), np.eye(9), atol=1e-12)
    symmetry.projector_rotation.cache_clear()
    monkeypatch.setattr(symmetry, "_gpaw_rotation", lambda: None)
    try:
        for op, M in zip(ops, with_gpaw):  # without GPAW: the same s and p blocks
            np.testing.assert_allclose(symmetry.projector_rotation(op, l_i[:4]), M[:4, :4], atol=1e-12)
        assert not symmetry.can_rotate(list(l_i)) and symmetry.can_rotate([0, 1, 1, 1])
        with pytest.raises(symmetry.InvalidInput, match="needs GPAW"):
            symmetry.projector_rotation(ops[1], l_i)
    finally:
        symmetry.projector_rotation.cache_clear()
