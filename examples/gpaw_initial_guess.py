"""Start GPAW's SCF from a supplied density, in a single point and in MD.

1. Single point: converge liquid Li, then start a fresh calculation of the same atoms from
   the converged (nt, D) with `start_from_density`: the SCF needs fewer iterations and ends
   at the same energy.
2. MD: the same NVE run with GPAW's own reuse and with a guided calculator (quadratic
   extrapolation, or any provider), printing the iterations per step saved.

    python examples/gpaw_initial_guess.py [--atoms 16] [--ecut 200] [--steps 6] [--provider extrapolate-quadratic]
"""

from __future__ import annotations

import argparse

import numpy as np
from ase import units
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from gpaw import GPAW

from ase_ldm.data.aimd import li_liquid
from ase_ldm.data.gpaw_io import D_asii_from_gpaw, nt_sR_from_gpaw
from ase_ldm.scf.hook import GuidedGPAW, start_from_density


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--atoms", type=int, default=16)
    p.add_argument("--ecut", type=float, default=200.0)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--provider", default="extrapolate-quadratic")
    args = p.parse_args()
    kw = dict(mode={"name": "pw", "ecut": args.ecut}, xc="PBE", kpts=(1, 1, 1),
              occupations={"name": "fermi-dirac", "width": 0.1}, symmetry="off", txt=None)

    atoms = li_liquid(args.atoms)
    atoms.rattle(0.1, seed=1)
    atoms.calc = GPAW(**kw)
    e_cold = atoms.get_potential_energy()
    cold = atoms.calc.get_number_of_iterations()
    nt, D = nt_sR_from_gpaw(atoms.calc), D_asii_from_gpaw(atoms.calc)
    again = atoms.copy()
    start_from_density(GPAW(**kw), again, nt, D)
    e_warm = again.get_potential_energy()
    warm = again.calc.get_number_of_iterations()
    print(f"single point: cold start {cold} iterations, from the converged density {warm} "
          f"(saved {cold - warm}); energy difference {abs(e_warm - e_cold):.1e} eV")

    thermalize_momenta(atoms, 800, rng=np.random.default_rng(0))
    v0 = atoms.get_velocities()
    iterations = {}
    for provider in ("gpaw", args.provider):
        a = atoms.copy()
        a.set_velocities(v0)
        a.calc = GuidedGPAW(provider, **kw)
        dyn = VelocityVerlet(a, 2.0 * units.fs)
        its: list[int] = []

        def count(dyn=dyn, its=its, a=a) -> None:
            if dyn.nsteps:
                its.append(a.calc.get_number_of_iterations())

        dyn.attach(count, interval=1)
        dyn.run(args.steps)
        iterations[provider] = its
        print(f"MD with {provider:<24} iterations per step {its}  mean {np.mean(its):.2f}")
    saved = np.mean(iterations["gpaw"]) - np.mean(iterations[args.provider])
    print(f"{args.provider} saves {saved:.2f} SCF iterations per MD step")


if __name__ == "__main__":
    main()
