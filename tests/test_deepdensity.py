"""Deep Density (ase_ldm.deepdensity): symmetries of the network, training on real GPAW frames,
checkpoints that load back without unpickling, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ase_ldm.deepdensity import DeepDensity, DeepDensityConfig, DeepDensityTrainConfig
from ase_ldm.errors import InvalidInput


def _random_net(seed: int = 0) -> DeepDensity:
    torch.manual_seed(seed)
    net = DeepDensity(DeepDensityConfig(numbers=(3, 14), cutoff=3.0, cutoff_smooth=2.0, embedding=(4, 8), axis=2,
                                        fitting=(16, 16))).double()
    for fit in net.fit:  # the trained start is N = E = 0; give the fitting networks something to say
        torch.nn.init.normal_(fit[-1].weight, std=0.5)
    return net


def test_density_is_invariant_under_rotation_translation_permutation_and_lattice_shifts():
    net = _random_net()
    rng = np.random.default_rng(0)
    cell = np.array([[4.0, 0.0, 0.0], [0.7, 3.8, 0.0], [-0.4, 0.5, 4.2]])
    pos = rng.uniform(0, 1, (5, 3)) @ cell
    Z = torch.tensor([3, 3, 14, 3, 14])
    pts = rng.uniform(0, 1, (40, 3)) @ cell
    ref = net(torch.as_tensor(pos), Z, torch.as_tensor(cell), torch.as_tensor(pts))
    assert torch.isfinite(ref).all() and ref.abs().max() > 1e-3
    # rotated and translated together
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    shift = np.array([0.3, -1.1, 2.0])
    moved = net(torch.as_tensor(pos @ Q.T + shift), Z, torch.as_tensor(cell @ Q.T), torch.as_tensor(pts @ Q.T + shift))
    torch.testing.assert_close(moved, ref, rtol=1e-9, atol=1e-12)
    # like atoms swapped, atoms and points moved by lattice vectors
    perm = [3, 1, 4, 0, 2]
    lattice = rng.integers(-2, 3, (5, 3)) @ cell
    swapped = net(torch.as_tensor(pos[perm] + lattice), Z[perm], torch.as_tensor(cell),
                  torch.as_tensor(pts + np.array([1, -1, 2]) @ cell))
    torch.testing.assert_close(swapped, ref, rtol=1e-9, atol=1e-12)
    # a species that changes the answer: Si in place of Li
    other = net(torch.as_tensor(pos), torch.tensor([14, 3, 14, 3, 14]), torch.as_tensor(cell), torch.as_tensor(pts))
    assert (other - ref).abs().max() > 1e-6


def test_unknown_species_and_bad_cutoffs_are_refused():
    net = _random_net()
    with pytest.raises(InvalidInput, match=r"atomic numbers \[11\]"):
        net(torch.zeros(1, 3), torch.tensor([11]), torch.eye(3) * 4, torch.zeros(2, 3))
    with pytest.raises(InvalidInput, match="cutoff_smooth"):
        DeepDensity(DeepDensityConfig(cutoff=3.0, cutoff_smooth=3.5))


@pytest.mark.gpaw
def test_training_on_gpaw_frames_checkpoints_and_resumes(recorded, tmp_path):
    from ase_ldm.data.store import open_dataset
    from ase_ldm.deepdensity.training import load_deep_density, train_deep_density

    cfg = DeepDensityTrainConfig(epochs=6, batch_frames=2, points=300, lr=5e-3, val_frames=1,
                                 model=DeepDensityConfig(embedding=(4, 8), axis=2, fitting=(16, 16)))
    run = tmp_path / "dd"
    first = train_deep_density(recorded, run, cfg, progress=False, stop_after=3)["history"]
    out = train_deep_density(recorded, run, None, resume=True, progress=False)["history"]
    assert [r["epoch"] for r in out] == [1, 2, 3, 4, 5, 6] and out[:3] == first
    assert out[-1]["loss"] < 0.5 * out[0]["loss"]
    meta = json.loads((run / "model.json").read_text())
    assert meta["kind"] == "deepdensity" and meta["epoch"] == 6
    net = load_deep_density(run)
    with open_dataset(recorded) as ds:
        f = ds.frame(3)
        rho = net.density_on_grid(f.positions, f.numbers, f.cell, ds.grid)
    err = np.abs(rho - f.nt_sR[0]).sum() / np.abs(f.nt_sR[0]).sum()
    assert err == pytest.approx(out[-1]["val_rel_l1"], rel=1e-5) and err < 0.5
