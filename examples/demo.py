"""The `make demo` job: record liquid Li with GPAW, evaluate, train, roll out.

Steps (each skipped when its output already exists, so an interrupted demo continues):
1. record liquid Li16 (PW 300 eV, 2 fs, Langevin 800 K: the settings of the reference data,
   so the pretrained model applies) into DEMO/li.h5 with `ase-ldm record`;
2. print the dataset summary (`ase-ldm info`) and save a PNG of a density slice;
3. evaluate the persistence baseline against the recording (`ase-ldm baseline`, `evaluate`);
4. train a small latent diffusion model on the recording (`ase-ldm train`, a few minutes);
5. roll out the small model and the pretrained `li16-800K` model from the recording and
   evaluate both against it (`ase-ldm rollout`, `evaluate`);
6. score the pretrained atom-synchronised model's one-step predictions (`ase-ldm predict`), and
   compare SCF iterations per GPAW MD step with GPAW's own reuse and with density providers
   (that model included) as initial guesses (`ase-ldm scf-bench`).

About 12 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ase_ldm.analysis.plots import plot_slices
from ase_ldm.cli.info import format_summary
from ase_ldm.cli.main import main as cli
from ase_ldm.core.registry import pretrained_names
from ase_ldm.data import open_dataset

SMALL_MODEL = {
    "epochs": 25, "batch_size": 8, "lr": 1e-3, "seed": 0, "test_fraction": 0.25,
    "model": {"autoencoder": {"channels": [4, 8, 16, 32], "latent_dim": 32},
              "diffusion": {"steps": 200, "hidden": 128, "layers": 2, "embedding_dim": 32}},
    "loss": {"sjsd_bins": 48},
}


def run_cli(argv: list[str]) -> None:
    print("[demo] ase-ldm " + " ".join(argv), flush=True)
    if cli(argv) != 0:
        raise SystemExit(f"[demo] ase-ldm {argv[0]} failed")


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
        run_cli(["record", "--preset", "li-liquid", "--atoms", str(args.atoms), "--steps", str(args.steps),
                 "--melt-steps", str(args.melt_steps), "--equil-steps", str(args.equil_steps),
                 "--seed", "7", "--force", *common, "-o", str(out)])
    else:  # a previous demo was interrupted: continue it
        run_cli(["record", "--append", "--steps", str(want - have), *common, "-o", str(out)])


def summarize(metrics_path: Path, label: str) -> str:
    m = json.loads(metrics_path.read_text())
    text = f"{label:<28} JSD {m['jsd_histogram']:.2e} bits   S(k) err {m['sk_rel_error']:.3f}"
    if m["computed"]["pointwise"]:
        text += f"   rel. L1 {100 * m['rel_l1_mean']:.3f} %"
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo-output", help="output folder")
    p.add_argument("--atoms", type=int, default=16)
    p.add_argument("--ecut", type=float, default=300.0)
    p.add_argument("--timestep", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=40, help="recorded MD steps")
    p.add_argument("--melt-steps", type=int, default=10)
    p.add_argument("--equil-steps", type=int, default=10)
    p.add_argument("--train-epochs", type=int, default=SMALL_MODEL["epochs"])
    p.add_argument("--scf-steps", type=int, default=4, help="MD steps per provider in the SCF comparison")
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
        n_frames, grid = len(ds), ds.grid
    print(f"[demo] wrote {png}")

    reports = []
    base = out_dir / "persistence.h5"
    run_cli(["baseline", str(data), "--kind", "persistence", "--force", "-o", str(base)])
    run_cli(["evaluate", str(base), "--reference", str(data), "-o", str(out_dir / "eval-persistence")])
    reports.append((out_dir / "eval-persistence" / "metrics.json", "persistence baseline"))

    run = out_dir / "small-model"
    if not (run / "model.json").exists() or json.loads((run / "model.json").read_text())["epoch"] < args.train_epochs:
        cfg_path = out_dir / "small-model.json"
        cfg_path.write_text(json.dumps({**SMALL_MODEL, "epochs": args.train_epochs}))
        resume = ["--resume"] if (run / "config.json").exists() else ["--config", str(cfg_path)]
        run_cli(["train", str(data), "-o", str(run), *resume])
    start = int(n_frames * (1 - SMALL_MODEL["test_fraction"]))
    roll = out_dir / "rollout-small.h5"
    run_cli(["rollout", str(run), "--init", str(data), "--frame", str(start), "--steps", str(n_frames - 1 - start),
             "--force", "-o", str(roll)])
    run_cli(["evaluate", str(roll), "--reference", str(data), "-o", str(out_dir / "eval-small-model")])
    reports.append((out_dir / "eval-small-model" / "metrics.json", "small model rollout"))

    if "li16-800K" in pretrained_names() and grid == (30, 30, 30) and args.atoms == 16:
        roll = out_dir / "rollout-pretrained.h5"
        run_cli(["rollout", "li16-800K", "--init", str(data), "--frame", "1", "--steps", str(n_frames - 2),
                 "--force", "-o", str(roll)])
        run_cli(["evaluate", str(roll), "--reference", str(data), "-o", str(out_dir / "eval-pretrained")])
        reports.append((out_dir / "eval-pretrained" / "metrics.json", "pretrained li16-800K rollout"))
    else:
        print("[demo] pretrained li16-800K applies to Li16 at PW(300) (30^3 grid); skipped for these settings")

    sync = []
    if "li16-800K-sync" in pretrained_names() and grid == (30, 30, 30) and args.atoms == 16:
        # the atom-synchronised model: one-step predictions scored, then used as the SCF guess
        pred = out_dir / "predict-sync.h5"
        run_cli(["predict", "li16-800K-sync", "--data", str(data), "--force", "-o", str(pred)])
        run_cli(["evaluate", str(pred), "--reference", str(data), "-o", str(out_dir / "eval-sync")])
        reports.append((out_dir / "eval-sync" / "metrics.json", "li16-800K-sync one-step predictions"))
        sync = ["--provider", "li16-800K-sync"]
    scf = out_dir / "scf-bench.json"
    run_cli(["scf-bench", str(data), "--frame", str(n_frames - 1 - args.scf_steps), "--steps", str(args.scf_steps),
             "--provider", "extrapolate-quadratic", "--provider", "sad-extrapolate", *sync, "--json", str(scf)])

    print("\n[demo] summary (prediction vs the recorded GPAW trajectory)")
    for path, label in reports:
        print("  " + summarize(path, label))
    print(f"[demo] reports and plots in {out_dir}/eval-*/")
    print("[demo] SCF iterations per MD step (GPAW initial guess):")
    for name, r in json.loads(scf.read_text())["providers"].items():
        print(f"  {name:<24} {r['iterations_per_step']:.2f} iterations, {r['seconds_per_step']:.2f} s per step")


if __name__ == "__main__":
    main()
