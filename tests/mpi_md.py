"""Guided GPAW MD of Li2, run serially or under ``mpiexec -n N`` by tests/test_mpi.py.

Usage: python tests/mpi_md.py PROVIDER[+wfsK] GPAW_KWARGS_JSON OUT_JSON

Rank 0 writes the iterations, energies and forces of every step and the GPAW parallelisation
(ranks, domains, k-point groups) to OUT_JSON.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from ase import units
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from conftest import li2
from gpaw.mpi import world

from ase_ldm.scf.hook import GuidedGPAW, parse_spec


def main() -> None:
    (provider, wfs_order), kwargs, out = parse_spec(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
    atoms = li2(rattle=0.1, seed=2)
    thermalize_momenta(atoms, 1500, rng=np.random.default_rng(1))
    kwargs = {"mode": {"name": "pw", "ecut": 200.0}, **kwargs}
    calc = GuidedGPAW(provider, wfs_extrapolation=wfs_order, xc="PBE",
                      occupations={"name": "fermi-dirac", "width": 0.1}, txt=None, **kwargs)
    atoms.calc = calc
    rec: dict = {"iterations": [], "energy": [], "forces": []}

    def observe() -> None:
        rec["iterations"].append(calc.get_number_of_iterations())
        rec["energy"].append(atoms.get_potential_energy())
        rec["forces"].append(atoms.get_forces().tolist())

    dyn = VelocityVerlet(atoms, 2 * units.fs)
    dyn.attach(observe)
    dyn.run(4)
    density = calc.dft.density
    rec["ranks"] = world.size
    rec["domains"] = density.nt_sR.desc.comm.size
    rec["guesses"] = calc.guessed_steps
    if world.rank == 0:
        with open(out, "w") as fd:
            json.dump(rec, fd)


if __name__ == "__main__":
    main()
