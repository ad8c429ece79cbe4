"""SCF iterations of a fresh GPAW calculation (cold start) from different starting densities.

For reference frames, one single point each: GPAW's own start (superposition of free-atom
densities), the synchronised model's cold-start guess from the atoms alone (through the hook's
``cold_start``), and the converged nt + D of that very frame (``start_from_density``: the best
any density guess can do with GPAW's LCAO start). With ``--fixed-density-steps K`` the model's
and the exact start are run again with K eigensolver iterations in the guessed potential before
the SCF; the iterations reported are then K + GPAW's SCF iterations. ``--noise L [L ...]`` also
starts from the converged nt + D with noise added to nt at relative L1 levels L, in the band
|k| = 1-4 1/A where the models' errors lie (the same K): how accurate a cold-start density must be.

    python benchmarks/bench_cold_start.py --data bench-output/li16_800K.h5 --frames 600 650 700 \
        --fixed-density-steps 3
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ase_ldm.core.fourier import reciprocal_grid
from ase_ldm.data import open_dataset
from ase_ldm.data.gpaw_io import calculator_from_provenance
from ase_ldm.scf.hook import guided_gpaw, start_from_density
from ase_ldm.scf.providers import make_provider


def band_noise(nt_sR: np.ndarray, cell: np.ndarray, level: float, seed: int, k_band=(1.0, 4.0)) -> np.ndarray:
    """nt (nspins, N1, N2, N3) plus Gaussian noise in the band ``k_band`` (1/A) at relative L1 ``level``."""
    rng = np.random.default_rng(seed)
    kabs = np.linalg.norm(reciprocal_grid(cell, nt_sR.shape[1:]), axis=-1)
    out = np.array(nt_sR, np.float64)
    for s in range(len(out)):
        X = np.fft.rfftn(rng.standard_normal(out.shape[1:]))
        X[(kabs < k_band[0]) | (kabs > k_band[1])] = 0
        noise = np.fft.irfftn(X, s=out.shape[1:], axes=(0, 1, 2))
        out[s] += level * np.abs(out[s]).sum() / np.abs(noise).sum() * noise
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--frames", type=int, nargs="+", default=[600, 650, 700])
    ap.add_argument("--model", default="li16-800K-sync")
    ap.add_argument("--fixed-density-steps", type=int, default=0)
    ap.add_argument("--noise", type=float, nargs="*", default=[],
                    help="relative L1 levels of band noise on the converged nt (with K fixed-density steps)")
    ap.add_argument("--no-model", action="store_true", help="skip the model's starts")
    ap.add_argument("-o", "--output")
    args = ap.parse_args()
    ds = open_dataset(args.data)
    rows = []
    K = args.fixed_density_steps
    model = [] if args.no_model else [args.model]
    starts = [("gpaw", 0), *[(m, 0) for m in model], ("converged nt + D", 0)]
    if K:
        starts += [*[(m, K) for m in model], ("converged nt + D", K)]
    starts += [(f"converged nt + {level:g} noise + D", K) for level in args.noise]
    for t in args.frames:
        for start, k in starts:
            atoms = ds.atoms(t)
            calc = calculator_from_provenance(ds.attrs, ds.grid)
            t0 = time.perf_counter()
            if start == "converged nt + D":
                start_from_density(calc, atoms, ds.nt(t), ds.D_asii(t), fixed_density_steps=k)
            elif start.startswith("converged nt + "):
                level = float(start.split()[3])
                nt = band_noise(ds.nt(t), ds.cell(t), level, seed=t)
                start_from_density(calc, atoms, nt, ds.D_asii(t), fixed_density_steps=k)
            else:
                calc = guided_gpaw(calc, make_provider(start, calc), cold_fixed_steps=k)
                atoms.calc = calc
            energy = atoms.get_potential_energy()
            its = k + calc.get_number_of_iterations()
            rows.append({"frame": t, "start": start, "fixed_density_steps": k, "iterations": its,
                         "seconds": time.perf_counter() - t0, "energy_eV": energy})
            print(f"frame {t:4d}  {start:32s} K={k}  {its:3d} iterations  "
                  f"{rows[-1]['seconds']:6.2f} s  E = {energy:.6f} eV", flush=True)
    if args.output:
        with open(args.output, "w") as fd:
            json.dump(rows, fd, indent=1)


if __name__ == "__main__":
    main()
