"""The `make demo` job: record a small GPAW AIMD trajectory of liquid Li and look at it.

Steps (each skipped when its output already exists, so the demo can be interrupted and rerun):
1. record liquid Li (N atoms, PW cutoff, Langevin NVT) into DEMO/li.h5 with `ase-ldm record`;
2. print the dataset summary (`ase-ldm info`);
3. save a PNG of a density slice (first frame, last frame, their difference);
4. evaluate the persistence baseline (previous frame) against the recording:
   `ase-ldm baseline` then `ase-ldm evaluate`, into DEMO/eval-persistence/.

Runs in a few minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ase_ldm.analysis.plots import plot_slices
from ase_ldm.cli.info import format_summary
from ase_ldm.cli.main import main as cli
from ase_ldm.data import open_dataset


def record(out: Path, args: argparse.Namespace) -> None:
    have = 0
    if out.exists():
        with open_dataset(out) as ds:
            have = len(ds)
    want = args.steps + 1
    if have >= want:
        print(f"[demo] {out} already has {have} frames")
        return
    common = ["--ecut", str(args.ecut), "--timestep", str(args.timestep), "--temperature", "800"]
    if have == 0:
        argv = ["record", "--preset", "li-liquid", "--atoms", str(args.atoms), "--steps", str(args.steps),
                "--melt-steps", str(args.melt_steps), "--equil-steps", str(args.equil_steps),
                "--seed", "7", "--force", *common, "-o", str(out)]
    else:  # a previous demo was interrupted: continue it
        argv = ["record", "--append", "--steps", str(want - have), *common, "-o", str(out)]
    run_cli(argv)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo-output", help="output folder")
    p.add_argument("--atoms", type=int, default=16)
    p.add_argument("--ecut", type=float, default=200.0)
    p.add_argument("--timestep", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=40, help="recorded MD steps")
    p.add_argument("--melt-steps", type=int, default=10)
    p.add_argument("--equil-steps", type=int, default=10)
    args = p.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / "li.h5"

    record(data, args)
    with open_dataset(data) as ds:
        print(format_summary(ds.summary()))
        first, last = ds.nt(0)[0], ds.nt(-1)[0]
        L = ds.cell(0).diagonal()
        png = out_dir / "density_slice.png"
        plot_slices(png, [first, last, last - first],
                    [f"nt, t = {ds.time_fs[0]:.0f} fs", f"nt, t = {ds.time_fs[-1]:.0f} fs", "difference"],
                    extent_A=(L[0], L[1]), shared_scale=[True, True, False],
                    suptitle=f"{ds.summary()['formula']}: GPAW pseudo-density, middle z plane")
    print(f"[demo] wrote {png}")

    base = out_dir / "persistence.h5"
    run_cli(["baseline", str(data), "--kind", "persistence", "--force", "-o", str(base)])
    run_cli(["evaluate", str(base), "--reference", str(data), "-o", str(out_dir / "eval-persistence")])


def run_cli(argv: list[str]) -> None:
    print("[demo] ase-ldm " + " ".join(argv))
    if cli(argv) != 0:
        raise SystemExit(f"[demo] ase-ldm {argv[0]} failed")


if __name__ == "__main__":
    main()
