"""SCF iterations of a fresh GPAW calculation (cold start) from different starting densities.

For reference frames, one single point each: GPAW's own start (superposition of free-atom
densities), the synchronised model's cold-start guess from the atoms alone (through the hook's
``cold_start``), and the converged nt + D of that very frame (``start_from_density``: the best
any density guess can do with GPAW's LCAO start). With ``--fixed-density-steps K`` the model's
and the exact start are run again with K eigensolver iterations in the guessed potential before
the SCF; the iterations reported are then K + GPAW's SCF iterations.

    python benchmarks/bench_cold_start.py --data bench-output/li16_800K.h5 --frames 600 650 700 \
        --fixed-density-steps 3
"""

from __future__ import annotations

import argparse
import json
import time

from ase_ldm.data import open_dataset
from ase_ldm.data.gpaw_io import calculator_from_provenance
from ase_ldm.scf.hook import guided_gpaw, start_from_density
from ase_ldm.scf.providers import make_provider


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--frames", type=int, nargs="+", default=[600, 650, 700])
    ap.add_argument("--model", default="li16-800K-sync")
    ap.add_argument("--fixed-density-steps", type=int, default=0)
    ap.add_argument("-o", "--output")
    args = ap.parse_args()
    ds = open_dataset(args.data)
    rows = []
    K = args.fixed_density_steps
    starts = [("gpaw", 0), (args.model, 0), ("converged nt + D", 0)]
    if K:
        starts += [(args.model, K), ("converged nt + D", K)]
    for t in args.frames:
        for start, k in starts:
            atoms = ds.atoms(t)
            calc = calculator_from_provenance(ds.attrs, ds.grid)
            t0 = time.perf_counter()
            if start == "converged nt + D":
                start_from_density(calc, atoms, ds.nt(t), ds.D_asii(t), fixed_density_steps=k)
            else:
                calc = guided_gpaw(calc, make_provider(start, calc), cold_fixed_steps=k)
                atoms.calc = calc
            energy = atoms.get_potential_energy()
            its = k + calc.get_number_of_iterations()
            rows.append({"frame": t, "start": start, "fixed_density_steps": k, "iterations": its,
                         "seconds": time.perf_counter() - t0, "energy_eV": energy})
            print(f"frame {t:4d}  {start:20s} K={k}  {its:3d} iterations  "
                  f"{rows[-1]['seconds']:6.2f} s  E = {energy:.6f} eV", flush=True)
    if args.output:
        with open(args.output, "w") as fd:
            json.dump(rows, fd, indent=1)


if __name__ == "__main__":
    main()
