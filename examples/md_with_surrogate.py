"""MD with GPAW forces that pulls an ML-predicted pseudo-density at every step.

The DensityCalculator wraps GPAW (energy, forces) and a trained density model; an observer
attached to the dynamics pulls one density per step and writes it as a cube file, and the
calculator records all of them as a dataset. The shipped li16-800K (grid-latent diffusion)
serves the mean density of each step's atoms, with its uncertainty when --samples K is given;
a model that needs history (li16-800K-paper) is synchronised from GPAW's density at the first
step and every --resync steps.

    python examples/md_with_surrogate.py [--model li16-800K] [--atoms 16] [--ecut 300] [--steps 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ase import units
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from ase_ldm.calculator import DensityCalculator
from ase_ldm.data.aimd import AIMDSettings, li_liquid, make_gpaw
from ase_ldm.data.importers import write_cube


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="li16-800K", help="pretrained name or run directory")
    p.add_argument("--atoms", type=int, default=16)
    p.add_argument("--ecut", type=float, default=300.0)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--resync", type=int, default=0, help="resynchronise from GPAW every N model steps")
    p.add_argument("--samples", type=int, default=0, help="samples per step for the density uncertainty (0: none)")
    p.add_argument("--out", default="md-surrogate-output")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    atoms = li_liquid(args.atoms)
    atoms.rattle(0.1, seed=1)
    thermalize_momenta(atoms, 800, rng=np.random.default_rng(0))
    calc = DensityCalculator(args.model, calc=make_gpaw(AIMDSettings(ecut=args.ecut)),
                             resync_every=args.resync, samples=args.samples, record=str(out / "predicted.h5"))
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, calc.model.timestep_fs * units.fs)

    def pull_density() -> None:
        n = calc.get_pseudo_density()  # e/Angstrom^3, shape of the model's grid
        write_cube(out / f"density_{dyn.nsteps:04d}.cube", atoms, n)
        spread = f"  uncertainty {calc.get_density_uncertainty():.2%}" if args.samples else ""
        print(f"step {dyn.nsteps:3d}  E = {atoms.get_potential_energy():.4f} eV  "
              f"electrons(nt) = {n.sum() * atoms.get_volume() / n.size:.4f}{spread}", flush=True)

    dyn.attach(pull_density, interval=1)
    dyn.run(args.steps)
    calc.close()
    print(f"wrote {args.steps + 1} cube files and {out / 'predicted.h5'}")


if __name__ == "__main__":
    main()
