"""What limits the SCF guess: replay reference frames with exact or predicted nt and D.

Positions are set frame by frame from a reference trajectory (as in shared/GPAW_NOTES.md), and
before each SCF the hook injects a guess that takes nt and D either from the provider or from
the reference frame itself (the converged answer). The iterations per frame then show how much
the remaining error of nt and of D each costs. ``--wfs -1 2`` runs every variant twice: with
GPAW's move of the wave functions (-1) and with their quadratic extrapolation in time (2), so
the floors (exact nt + D) of both starts of the wave functions stand side by side.

    python benchmarks/bench_replay.py --data bench-output/li16_800K.h5 --start 600 --frames 12
    python benchmarks/bench_replay.py --data bench-output/li16_800K.h5 --start 600 --frames 12 --wfs -1 2
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from ase_ldm.data import open_dataset
from ase_ldm.data.gpaw_io import calculator_from_provenance
from ase_ldm.scf.hook import guided_gpaw
from ase_ldm.scf.providers import make_provider


class Mixed:
    """A provider whose nt and/or D are replaced by the reference frame's."""

    def __init__(self, base, ds, exact_nt: bool, exact_D: bool) -> None:
        self.base, self.ds, self.exact_nt, self.exact_D = base, ds, exact_nt, exact_D
        self.frame = None
        self.name = f"{base.name}{' + exact nt' if exact_nt else ''}{' + exact D' if exact_D else ''}"

    def observe(self, atoms, nt_sR, D_asii):
        self.base.observe(atoms, nt_sR, D_asii)

    def predict(self, atoms):
        guess = self.base.predict(atoms)
        if guess is None or self.frame is None:
            return guess
        nt, D = guess
        if self.exact_nt:
            nt = self.ds.nt(self.frame).astype(np.float64)
        if self.exact_D:
            D = [np.asarray(x, np.float64) for x in self.ds.D_asii(self.frame)]
        return nt, D

    def reset(self):
        self.base.reset()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--start", type=int, default=600)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--model", default="li16-800K-sync")
    ap.add_argument("--symmetry-average", type=int, default=0,
                    help="also run the model averaged over this many symmetry operations")
    ap.add_argument("--only-model", action="store_true", help="run only the model variants")
    ap.add_argument("--wfs", type=int, nargs="+", default=[-1],
                    help="wave-function starts to run each variant with: -1 GPAW's move, K extrapolation order")
    ap.add_argument("--variants", nargs="+", help="run only these (names as printed without ' + wfsK', e.g. gpaw)")
    ap.add_argument("-o", "--output")
    args = ap.parse_args()
    ds = open_dataset(args.data)
    variants = [("gpaw", False, False), ("sad-extrapolate", False, False), (args.model, False, False),
                (args.model, True, False), (args.model, False, True), (args.model, True, True)]
    if args.only_model:
        variants = []
    if args.symmetry_average > 1:
        variants.append((f"{args.model}@{args.symmetry_average}", False, False))
    out = {}
    for (name, ent, eD), wfs in [(v, k) for k in args.wfs for v in variants]:
        calc = calculator_from_provenance(ds.attrs, ds.grid)
        if "@" in name:
            from ase_ldm import load
            from ase_ldm.scf.providers import ModelProvider

            model, k = name.split("@")
            base = ModelProvider(load(model, device="cpu", symmetry_average=int(k)))
            base.name = f"model:{model} averaged over {k} symmetry operations"
        else:
            base = make_provider(name, calc)
        prov = Mixed(base, ds, ent, eD)
        if args.variants and prov.name not in args.variants:
            continue
        if wfs >= 0:
            prov.name += f" + wfs{wfs}"
        calc = guided_gpaw(calc, prov, wfs_extrapolation=wfs)
        prov.base.cold_start = False  # replay: every variant starts cold the same way
        atoms = ds.atoms(args.start)
        atoms.calc = calc
        its = []
        for t in range(args.start, args.start + args.frames):
            prov.frame = t
            atoms.positions = ds.array("positions", t, t + 1)[0]
            atoms.get_potential_energy()
            its.append(int(calc.get_number_of_iterations()))
        out[prov.name] = its
        steady = its[4:]
        print(f"{prov.name:45s} {' '.join(map(str, its))}   mean after 4 frames {np.mean(steady):.2f}", flush=True)
    if args.output:
        with open(args.output, "w") as fd:
            json.dump({"frames": [args.start, args.start + args.frames], "iterations": out}, fd, indent=1)


if __name__ == "__main__":
    main()
