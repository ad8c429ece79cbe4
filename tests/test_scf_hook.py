"""The GPAW hook (ase_ldm.scf.hook) and the providers (ase_ldm.scf.providers), with real GPAW on Li2:
guided MD keeps GPAW's answer, cold starts, refusals."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gpaw")
pytestmark = pytest.mark.gpaw

from ase import units  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402
from conftest import li2  # noqa: E402

from ase_ldm.data.gpaw_io import D_asii_from_gpaw, nt_sR_from_gpaw  # noqa: E402
from ase_ldm.errors import InvalidInput, UnsupportedSetup  # noqa: E402
from ase_ldm.scf.hook import GuidedGPAW, guided_gpaw, start_from_density  # noqa: E402
from ase_ldm.scf.providers import Extrapolate, make_provider  # noqa: E402

GPAW_KW = dict(mode={"name": "pw", "ecut": 200.0}, xc="PBE", kpts=(1, 1, 1),
               occupations={"name": "fermi-dirac", "width": 0.1}, txt=None)


def md_run(provider, steps=5, wfs_extrapolation=-1, magmoms=None, cell=None, **gpaw_kw):
    from ase.md.velocitydistribution import thermalize_momenta

    atoms = li2(rattle=0.1, seed=2)
    if cell is not None:
        atoms.set_cell(cell, scale_atoms=True)
    thermalize_momenta(atoms, 1500, rng=np.random.default_rng(1))
    if magmoms is not None:
        atoms.set_initial_magnetic_moments(magmoms)
    atoms.calc = GuidedGPAW(provider, wfs_extrapolation=wfs_extrapolation, **{**GPAW_KW, **gpaw_kw})
    dyn = VelocityVerlet(atoms, 2 * units.fs)
    out = {"it": [], "E": [], "F": []}
    dyn.attach(lambda: (out["it"].append(atoms.calc.get_number_of_iterations()),
                        out["E"].append(atoms.get_potential_energy()), out["F"].append(atoms.get_forces().copy())))
    dyn.run(steps)
    out["guessed"] = atoms.calc.guessed_steps
    out["nibz"] = len(atoms.calc.dft.ibzwfs.ibz)
    return out


@pytest.fixture(scope="module")
def reference_md():
    return md_run("gpaw")


@pytest.mark.parametrize("provider", ["previous", "extrapolate-quadratic", "sad-extrapolate"])
def test_hook_never_changes_the_converged_answer(reference_md, provider):
    run = md_run(provider)
    # GPAW's default SCF criteria (energy 5e-4 eV/electron, density 1e-4): results agree far below them
    np.testing.assert_allclose(run["E"], reference_md["E"], atol=1e-4)
    np.testing.assert_allclose(np.array(run["F"]), np.array(reference_md["F"]), atol=2e-3)


def test_quadratic_extrapolation_saves_iterations(reference_md):
    run = md_run("extrapolate-quadratic")
    assert np.mean(run["it"][3:]) < np.mean(reference_md["it"][3:])


def test_fresh_start_from_a_supplied_density(gpaw_li2):
    """The injected density really is where the SCF starts: the exact density starts no worse than
    GPAW's superposition and better than a uniform density, and the answer is unchanged."""
    from gpaw import GPAW

    nt, D = nt_sR_from_gpaw(gpaw_li2.calc), D_asii_from_gpaw(gpaw_li2.calc)
    cold = gpaw_li2.calc.get_number_of_iterations()
    iterations = {}
    for label, guess in (("exact", nt), ("uniform", np.full_like(nt, nt.mean()))):
        atoms = gpaw_li2.copy()
        calc = GPAW(**GPAW_KW, symmetry="off")
        start_from_density(calc, atoms, guess, D)
        assert atoms.get_potential_energy() == pytest.approx(gpaw_li2.get_potential_energy(), abs=1e-4)
        iterations[label] = calc.get_number_of_iterations()
    assert iterations["exact"] <= cold
    assert iterations["exact"] < iterations["uniform"]
    # wave functions first: eigensolver steps in the guessed potential before the SCF mixes densities
    atoms = gpaw_li2.copy()
    calc = GPAW(**GPAW_KW, symmetry="off")
    assert start_from_density(calc, atoms, nt, D, fixed_density_steps=3) == 3
    assert atoms.get_potential_energy() == pytest.approx(gpaw_li2.get_potential_energy(), abs=1e-4)
    assert calc.get_number_of_iterations() < iterations["exact"]  # the SCF itself needs fewer
    with pytest.raises(InvalidInput, match="fixed_density_steps"):
        start_from_density(GPAW(**GPAW_KW, symmetry="off"), gpaw_li2.copy(), nt, D, fixed_density_steps=-1)


@pytest.mark.parametrize("setup,spec,match", [
    (dict(mode={"name": "pw", "ecut": 200.0}, symmetry={"point_group": True}), "extrapolate-quadratic",
     "point-group symmetry"),
    # GPAW's default symmetry
    (dict(mode={"name": "pw", "ecut": 200.0}, symmetry={}), "sad-extrapolate", "point-group symmetry"),
    (dict(mode="lcao", basis="sz(dzp)"), "sad-extrapolate+wfs2", "LCAO"),
])
def test_unsupported_setups_are_refused(setup, spec, match):
    from gpaw import GPAW

    from ase_ldm.scf.hook import check_spec, parse_spec

    kw = {**GPAW_KW, "symmetry": "off", **setup}
    name, order = parse_spec(spec)
    with pytest.raises(UnsupportedSetup, match=match):
        guided_gpaw(GPAW(**kw), name, wfs_extrapolation=order)
    if match == "LCAO":  # scf-bench and record refuse it before any GPAW work
        with pytest.raises(UnsupportedSetup, match=match):
            check_spec(spec, "lcao")


@pytest.mark.parametrize("mode", ["lcao", "fd"])
def test_lcao_and_fd_md_keep_gpaw_answer(mode, trained_sync):
    """LCAO (dzp) and FD on the grid of the PW runs: the physics guess and a model (cold start
    included) start the SCF; GPAW's energies and forces are unchanged."""
    from ase_ldm.core.registry import load
    from ase_ldm.scf.providers import ModelProvider

    kw = dict(mode="lcao", basis="dzp") if mode == "lcao" else dict(mode="fd")
    kw.update(gpts=(12, 12, 12), steps=4)
    ref = md_run("gpaw", **kw)
    specs = [("sad-extrapolate", 2 if mode == "fd" else -1), (ModelProvider(load(trained_sync[0], device="cpu")), -1)]
    for provider, order in specs:
        run = md_run(provider, wfs_extrapolation=order, **kw)
        np.testing.assert_allclose(run["E"], ref["E"], atol=1e-4)
        np.testing.assert_allclose(np.array(run["F"]), np.array(ref["F"]), atol=2e-3)
        assert run["guessed"] >= 4  # every MD step (and the model's cold start) started from the guess


def test_spin_polarised_run_needs_a_spin_provider():
    class SpinPairedGuess(Extrapolate):
        def predict(self, atoms):
            guess = super().predict(atoms)
            return None if guess is None else (guess[0].sum(0, keepdims=True), [D[:1] for D in guess[1]])

    atoms = li2()
    atoms.set_initial_magnetic_moments([0.5, 0.5])
    atoms.calc = GuidedGPAW(SpinPairedGuess(2), **GPAW_KW, spinpol=True)
    atoms.get_potential_energy()
    atoms.positions[0] += 0.05
    with pytest.raises(UnsupportedSetup, match="spin"):
        atoms.get_potential_energy()


def test_spin_polarised_md_keeps_gpaw_answer_with_physics_and_model_guesses(trained_sync):
    """Spin-polarised Li2 (initial moments 0.5): the spin-paired model serves the total density and
    the magnetisation is extrapolated; GPAW's energies and forces are unchanged."""
    from ase_ldm.core.registry import load
    from ase_ldm.scf.providers import ModelProvider

    spin = dict(magmoms=[0.5, 0.5], spinpol=True, steps=4)
    ref = md_run("gpaw", **spin)
    model = ModelProvider(load(trained_sync[0], device="cpu"))
    for provider, order in (("sad-extrapolate", 2), (model, -1)):
        run = md_run(provider, wfs_extrapolation=order, **spin)
        np.testing.assert_allclose(run["E"], ref["E"], atol=1e-4)
        np.testing.assert_allclose(np.array(run["F"]), np.array(ref["F"]), atol=2e-3)
        assert run["guessed"] == 4  # every MD step started from the provider's two-channel density
    guess = model.predict(li2(rattle=0.1, seed=2))
    assert guess[0].shape[0] == 2 and [D.shape[0] for D in guess[1]] == [2, 2]


def test_k_point_md_keeps_gpaw_answer_with_extrapolated_wave_functions():
    """kpts=(2, 2, 2) (8 k-points, complex wave functions): the density guess and the wave-function
    extrapolation of every k-point leave GPAW's answer unchanged."""
    kp = dict(kpts=(2, 2, 2), steps=4)
    ref = md_run("gpaw", **kp)
    run = md_run("sad-extrapolate", wfs_extrapolation=2, **kp)
    assert run["guessed"] == 4
    np.testing.assert_allclose(run["E"], ref["E"], atol=1e-4)
    np.testing.assert_allclose(np.array(run["F"]), np.array(ref["F"]), atol=2e-3)
    assert np.mean(run["it"][3:]) < np.mean(ref["it"][3:])


def test_time_reversal_symmetry_is_guided():
    """symmetry={'point_group': False} keeps time reversal (k and -k paired: 4 of the 8 k-points of
    kpts=(2, 2, 2) are kept): the guess and the extrapolated wave functions leave GPAW's answer."""
    kp = dict(kpts=(2, 2, 2), steps=4, symmetry={"point_group": False})
    ref = md_run("gpaw", **kp)
    run = md_run("sad-extrapolate", wfs_extrapolation=2, **kp)
    assert run["guessed"] == 4 and run["nibz"] == 4
    np.testing.assert_allclose(run["E"], ref["E"], atol=1e-4)
    np.testing.assert_allclose(np.array(run["F"]), np.array(ref["F"]), atol=2e-3)
    assert np.mean(run["it"][3:]) < np.mean(ref["it"][3:])


def test_non_orthorhombic_cell_md_keeps_gpaw_answer():
    """A triclinic cell: the physics guess and the wave-function extrapolation are cell-blind."""
    cell = [[3.6, 0.0, 0.0], [0.9, 3.5, 0.0], [-0.6, 0.7, 3.7]]
    ref = md_run("gpaw", steps=4, cell=cell)
    run = md_run("sad-extrapolate", wfs_extrapolation=2, steps=4, cell=cell)
    assert run["guessed"] == 4
    np.testing.assert_allclose(run["E"], ref["E"], atol=1e-4)
    np.testing.assert_allclose(np.array(run["F"]), np.array(ref["F"]), atol=2e-3)
    assert np.mean(run["it"][2:]) < np.mean(ref["it"][2:])


def test_unknown_provider_is_a_clear_error(gpaw_li2):
    with pytest.raises(ValueError, match="unknown provider"):
        make_provider("no-such-provider", gpaw_li2.calc)


def test_model_provider_guides_md_without_changing_the_answer(trained, recorded_long):
    """A trained model as the provider (the tiny model was trained on this Li2 system's grid)."""
    from ase_ldm.data import open_dataset

    with open_dataset(recorded_long) as ds:
        atoms = ds.atoms(9)
    runs = {}
    for provider in ("gpaw", str(trained[0])):
        a = atoms.copy()
        a.set_velocities(atoms.get_velocities())
        a.calc = GuidedGPAW(provider, **GPAW_KW)
        energies = []
        dyn = VelocityVerlet(a, 2 * units.fs)
        dyn.attach(lambda a=a, energies=energies: energies.append(a.get_potential_energy()))
        dyn.run(3)
        runs[provider] = (energies, a.calc)
    np.testing.assert_allclose(runs[str(trained[0])][0], runs["gpaw"][0], atol=1e-4)
    assert runs[str(trained[0])][1].provider.name.startswith("model")
    assert len(runs[str(trained[0])][1].guess_seconds) == 3  # every move asked the model
    assert runs[str(trained[0])][1].guessed_steps >= 2  # and it guessed once it had its history


@pytest.mark.gpaw
def test_guided_gpaw_with_sync_model_keeps_gpaw_answer(trained_sync, recorded_long):
    """MD guided by the model (cold start included) converges to GPAW's own energies and forces."""
    from conftest import guided_md

    from ase_ldm.data import open_dataset

    with open_dataset(recorded_long) as ds:
        attrs, grid = ds.attrs, ds.grid
        atoms0 = ds.atoms(11)
    results = {name: guided_md(atoms0, attrs, grid, name) for name in ("gpaw", str(trained_sync[0]))}
    (e0, f0, _), (e1, f1, guesses) = results["gpaw"], results[str(trained_sync[0])]
    assert guesses == 3  # the cold start and both MD steps were guessed by the model
    np.testing.assert_allclose(e1, e0, atol=2e-3)
    np.testing.assert_allclose(f1, f0, atol=2e-2)


def test_wave_function_extrapolation_aligns_rotated_bands():
    from ase_ldm.scf.hook import extrapolate_wave_functions

    rng = np.random.default_rng(0)
    C0 = rng.normal(size=(4, 50)) + 1j * rng.normal(size=(4, 50))
    Q, _ = np.linalg.qr(rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4)))  # bands mixed and reordered
    # the same subspace one step earlier: extrapolating a constant subspace gives it back
    out = extrapolate_wave_functions([[C0], [Q @ C0]], order=1)[0]
    np.testing.assert_allclose(out, C0, atol=1e-10)
    # a linear drift of the coefficients is continued, whatever rotation the older set carries
    dC = 0.01 * rng.normal(size=C0.shape)
    out = extrapolate_wave_functions([[C0], [Q @ (C0 - dC)]], order=1)[0]
    assert np.abs(out - (C0 + dC)).max() < 0.3 * np.abs(dC).max()  # persistence would be off by dC
    # real wave functions (half sphere, G = 0 first, real there): the rotation found is real
    R0 = C0.copy()
    R0[:, 0] = R0[:, 0].real
    Rot, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    out = extrapolate_wave_functions([[R0], [Rot @ R0]], order=1, real=[True])[0]
    np.testing.assert_allclose(out, R0, atol=1e-10)


@pytest.mark.parametrize("spec", ["gpaw+wfs1", "extrapolate-quadratic+wfs2"])
def test_wave_function_extrapolation_keeps_gpaw_answer(reference_md, spec):
    from ase_ldm.errors import InvalidInput
    from ase_ldm.scf.hook import parse_spec

    name, order = parse_spec(spec)
    run = md_run(name, wfs_extrapolation=order)
    np.testing.assert_allclose(run["E"], reference_md["E"], atol=1e-4)
    np.testing.assert_allclose(np.array(run["F"]), np.array(reference_md["F"]), atol=2e-3)
    from gpaw import GPAW

    calc = GPAW(**GPAW_KW, symmetry="off")
    for bad in (5, 0):
        with pytest.raises(InvalidInput, match="wfs_extrapolation must be"):
            guided_gpaw(calc, "gpaw", wfs_extrapolation=bad)
        assert type(calc).__name__ != "_Guided" and not hasattr(calc, "provider")  # left as it was


def test_auto_provider_serves_the_candidate_closest_so_far():
    from ase.build import bulk

    from ase_ldm.scf.providers import AutoProvider, Extrapolate, Previous

    atoms = bulk("Li", "bcc", a=3.5, cubic=True)
    auto = AutoProvider([Previous(), Extrapolate(1)])  # prefers 'previous' while nothing is scored
    base, slope = np.full((1, 4, 4, 4), 0.05), np.linspace(0, 1e-3, 64).reshape(1, 4, 4, 4)
    D = [np.eye(5)[None] for _ in atoms]
    for t in range(5):  # a density changing linearly in time: linear extrapolation is exact
        guess = auto.predict(atoms)
        nt = base + t * slope
        if t >= 3:
            np.testing.assert_allclose(guess[0], nt)  # the linear candidate is served once it scored better
        auto.observe(atoms, nt, D)
    # step 1: both guess the previous density (one step of history), a tie kept in order of preference
    assert auto.served == [None, "previous", "previous", "extrapolate-linear", "extrapolate-linear"]
    assert auto.scores["extrapolate-linear"] < 0.5 * auto.scores["previous"]  # running averages


def test_auto_provider_keeps_gpaw_answer(reference_md):
    run = md_run("auto")
    np.testing.assert_allclose(run["E"], reference_md["E"], atol=1e-4)
    np.testing.assert_allclose(np.array(run["F"]), np.array(reference_md["F"]), atol=2e-3)


def test_auto_provider_drops_a_failing_candidate_and_never_serves_a_broken_guess():
    from ase.build import bulk

    from ase_ldm.scf.providers import AutoProvider, Extrapolate, Previous, check_provider_name

    class Broken(Extrapolate):  # a real provider whose guesses are NaN
        def predict(self, atoms):
            g = super().predict(atoms)
            return None if g is None else (np.full_like(g[0], np.nan), g[1])

    class Refusing(Previous().__class__):
        name = "refusing"

        def observe(self, atoms, nt_sR, D_asii):
            raise UnsupportedSetup("a spin-polarised run")

    atoms = bulk("Li", "bcc", a=3.5, cubic=True)
    broken = Broken(1)
    broken.name = "broken"
    refusing = Refusing(0)
    refusing.name = "refusing"
    auto = AutoProvider([broken, refusing, Previous()])
    D = [np.eye(5)[None] for _ in atoms]
    for t in range(3):
        auto.predict(atoms)
        auto.observe(atoms, np.full((1, 4, 4, 4), 0.05 + 1e-3 * t), D)
    assert [c.name for c in auto.candidates] == ["broken", "previous"]
    assert "broken" not in auto.served
    for bad in ("", "auto:", "auto:previous", "auto:auto"):
        with pytest.raises(InvalidInput):
            check_provider_name(bad)
