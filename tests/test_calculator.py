"""The ASE DensityCalculator: contract, stepping, synchronisation, refusals, recording."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.verlet import VelocityVerlet

from ase_ldm.calculator import DensityCalculator
from ase_ldm.data import open_dataset
from ase_ldm.errors import ModelMismatch

pytest.importorskip("gpaw")


def gpaw_calc():
    from conftest import tiny_settings

    from ase_ldm.data.aimd import make_gpaw

    return make_gpaw(tiny_settings())


def start_atoms(recorded_long, frame=8):
    with open_dataset(recorded_long) as ds:
        return ds.atoms(frame)


def test_md_pulls_a_density_every_step(trained, recorded_long, tmp_path):
    run, _ = trained
    atoms = start_atoms(recorded_long)
    calc = DensityCalculator(str(run), calc=gpaw_calc(), timestep_fs=2.0, record=str(tmp_path / "pred.h5"),
                             device="auto")
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, 2.0 * units.fs)
    densities, energies = [], []
    dyn.attach(lambda: (densities.append(calc.get_pseudo_density()), energies.append(atoms.get_potential_energy())))
    dyn.run(3)
    assert len(densities) == 4 and densities[0].shape == (12, 12, 12)
    assert all(d.min() > 0 for d in densities)
    count = densities[0].sum() * calc.model.dV
    for d in densities:
        assert d.sum() * calc.model.dV == pytest.approx(count, rel=1e-5)  # electron count kept
    assert not np.allclose(densities[1], densities[0])  # the model advanced
    assert calc.get_property("pseudo_density") is not None
    np.testing.assert_allclose(calc.get_pseudo_density(spin=0) * 2, densities[-1])
    assert calc.get_pseudo_density(gridrefinement=2).shape == (24, 24, 24)
    # results cached per state: same atoms, no new model step
    assert calc.calculation_required(atoms, ["pseudo_density"]) is False
    steps = calc._model_steps
    np.testing.assert_array_equal(calc.get_pseudo_density(), densities[-1])
    assert calc._model_steps == steps
    # the ASE contract
    assert DensityCalculator.implemented_properties == ["energy", "free_energy", "forces", "stress", "pseudo_density",
                                                        "pseudo_density_std"]
    json.dumps(calc.todict())
    from ase.io import Trajectory

    with Trajectory(tmp_path / "md.traj", "w") as traj:
        traj.write(atoms)
    calc.close()
    with open_dataset(tmp_path / "pred.h5") as ds:
        assert len(ds) == 4
        np.testing.assert_allclose(ds.nt(3)[0], densities[-1], rtol=1e-6)


def test_resync_every_step_serves_gpaws_density(trained, recorded_long):
    from ase_ldm.data.gpaw_io import nt_sR_from_gpaw

    atoms = start_atoms(recorded_long)
    inner = gpaw_calc()
    calc = DensityCalculator(str(trained[0]), calc=inner, resync_every=1)
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, 2.0 * units.fs)
    dyn.run(2)
    np.testing.assert_allclose(calc.get_pseudo_density(), nt_sR_from_gpaw(inner).sum(0), rtol=1e-6)


def test_stride_and_timestep_mismatch(trained, recorded_long):
    with pytest.raises(ModelMismatch, match="timestep"):
        DensityCalculator(str(trained[0]), timestep_fs=1.5)
    calc = DensityCalculator(str(trained[0]), calc=gpaw_calc(), timestep_fs=1.0, stride=2)
    atoms = start_atoms(recorded_long)
    atoms.calc = calc
    seen = []
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    dyn.attach(lambda: seen.append(calc.get_pseudo_density()))
    dyn.run(4)
    assert np.array_equal(seen[1], seen[0])  # half a model step: the same density
    assert not np.array_equal(seen[2], seen[1])  # a full model step: a new one
    assert calc._model_steps == 2


def test_mismatched_atoms_are_refused(trained, recorded_long):
    from ase.build import bulk

    calc = DensityCalculator(str(trained[0]), calc=gpaw_calc())
    na = bulk("Na", "bcc", a=3.635, cubic=True)
    na.calc = calc
    with pytest.raises(ModelMismatch, match="differ from the model"):
        na.get_potential_energy()
    atoms = start_atoms(recorded_long)
    atoms.set_cell(atoms.cell * 1.05, scale_atoms=True)
    atoms.calc = calc
    with pytest.raises(ModelMismatch, match="cell"):
        atoms.get_potential_energy()


def test_without_force_calculator(trained, recorded_long):
    with open_dataset(recorded_long) as ds:
        n_prev, n = ds.nt(7), ds.nt(8)
        atoms = ds.atoms(8)
    calc = DensityCalculator(str(trained[0]))
    atoms.calc = calc
    with pytest.raises(ModelMismatch, match="synchronize"):
        calc.get_property("pseudo_density", atoms)
    calc.synchronize(n_prev, n)
    np.testing.assert_allclose(calc.get_property("pseudo_density", atoms), n[0], rtol=1e-6)
    with pytest.raises(PropertyNotImplementedError, match="no force calculator"):
        atoms.get_potential_energy()


def test_density_calculator_with_sync_model(trained_sync, synthetic_long):
    """Any force calculator + the synchronised model: a density per MD step from the atoms alone."""
    from ase import Atoms, units
    from ase.calculators.lj import LennardJones
    from ase.md.verlet import VelocityVerlet

    from ase_ldm.calculator import DensityCalculator
    from ase_ldm.data import open_dataset
    from ase_ldm.errors import ModelMismatch
    from ase_ldm.sync.predictor import SyncPredictor

    run, _ = trained_sync
    with open_dataset(synthetic_long) as ds:
        atoms = ds.atoms(5)
        grid = ds.grid
    atoms.calc = DensityCalculator(str(run), calc=LennardJones(sigma=2.5, epsilon=0.05, rc=3.5), device="cpu")
    atoms.get_potential_energy()
    dens = [atoms.calc.get_pseudo_density()]
    expect, _ = SyncPredictor.load(run, device="cpu", max_history=0).predict(atoms.positions, atoms.numbers,
                                                                                atoms.cell[:], grid)
    np.testing.assert_allclose(dens[0], expect, rtol=1e-6)
    dyn = VelocityVerlet(atoms, 2.0 * units.fs)
    dyn.attach(lambda: dens.append(atoms.calc.get_pseudo_density()))
    dyn.run(2)
    assert dens[0].shape == grid and all(np.all(d > 0) for d in dens)
    assert np.abs(dens[-1] - dens[0]).sum() > 0  # the density follows the moving atoms
    bad = Atoms("Li2", positions=atoms.positions, cell=atoms.cell[:] * 1.04, pbc=True)
    bad.calc = DensityCalculator(str(run), device="cpu")
    with pytest.raises(ModelMismatch, match="grid spacing"):
        bad.calc.get_property("pseudo_density", bad)
    na = Atoms("LiNa", positions=atoms.positions, cell=atoms.cell[:], pbc=True)
    na.calc = DensityCalculator(str(run), device="cpu")
    with pytest.raises(ModelMismatch, match="atomic numbers"):
        na.calc.get_property("pseudo_density", na)


def test_calculator_refusals_are_ase_setup_errors(trained, trained_sync, synthetic_long):
    from ase.calculators.calculator import CalculatorSetupError

    from ase_ldm.calculator import CalculatorMismatch

    with pytest.raises(CalculatorSetupError, match="timestep_fs must be a positive number"):
        DensityCalculator(str(trained[0]), timestep_fs=float("nan"))
    with pytest.raises(CalculatorMismatch, match="stride 4 if that is an integer"):
        DensityCalculator(str(trained[0]), timestep_fs=0.5)  # 4 MD steps per model step need stride=4
    calc = DensityCalculator(str(trained[0]), timestep_fs=0.5, stride=4)
    with pytest.raises(CalculatorSetupError, match="attach the calculator"):
        calc.get_pseudo_density()
    with open_dataset(synthetic_long) as ds:
        atoms = ds.atoms(3)
    atoms.positions[0, 0] = np.nan
    sync = DensityCalculator(str(trained_sync[0]))
    atoms.calc = sync
    with pytest.raises(CalculatorSetupError, match="non-finite positions"):
        sync.get_property("pseudo_density", atoms)


def test_calculator_parameters_are_json_and_todict_round_trips(trained_sync):
    import json

    calc = DensityCalculator(str(trained_sync[0]))
    d = calc.todict()
    assert json.loads(json.dumps(d))["model"] == str(trained_sync[0])
    assert DensityCalculator.implemented_properties == ["energy", "free_energy", "forces", "stress", "pseudo_density",
                                                        "pseudo_density_std"]


def test_synchronize_before_the_first_calculation_and_stride_with_an_atoms_only_model(trained, trained_sync,
                                                                                       synthetic_long):
    with open_dataset(synthetic_long) as ds:
        n_prev, n = ds.nt(7), ds.nt(8)
        atoms = ds.atoms(8)
        later = ds.atoms(9)
    calc = DensityCalculator(str(trained[0]))
    calc.synchronize(n_prev, n)  # attached nowhere yet: observed at the first calculation
    atoms.calc = calc
    np.testing.assert_allclose(calc.get_property("pseudo_density", atoms), n[0], rtol=1e-6)
    # an atoms-only model serves each new state its own density, whatever the stride
    every = DensityCalculator(str(trained_sync[0]))
    strided = DensityCalculator(str(trained_sync[0]), stride=2)
    for a in (atoms, later):
        np.testing.assert_allclose(strided.get_property("pseudo_density", a), every.get_property("pseudo_density", a))
