"""Record GPAW AIMD, train the latent diffusion model, roll it out, evaluate it.

    python examples/train_from_gpaw.py [--atoms 16] [--ecut 200] [--steps 60] [--epochs 20] [--out train-output]

Each step skips work already done, so the script can be rerun after an interruption.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ase_ldm.cli.main import main as cli


def run(argv: list[str]) -> None:
    print("$ ase-ldm " + " ".join(argv), flush=True)
    if cli(argv) != 0:
        raise SystemExit(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--atoms", type=int, default=16)
    p.add_argument("--ecut", type=float, default=200.0)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--out", default="train-output")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, runs = out / "md.h5", out / "run"

    if not data.exists():
        run(["record", "--preset", "li-liquid", "--atoms", str(args.atoms), "--ecut", str(args.ecut),
             "--steps", str(args.steps), "--melt-steps", "5", "--equil-steps", "5", "--no-progress", "-o", str(data)])
    config = {"epochs": args.epochs, "batch_size": 8, "test_fraction": 0.25,
              "model": {"autoencoder": {"channels": [4, 8, 16], "latent_dim": 32},
                        "diffusion": {"steps": 100, "hidden": 64, "layers": 2, "embedding_dim": 16}},
              "loss": {"sjsd_bins": 32}}
    (out / "config.json").write_text(json.dumps(config))
    if not (runs / "model.json").exists():
        run(["train", str(data), "-o", str(runs), "--config", str(out / "config.json"), "--no-progress"])
    meta = json.loads((runs / "model.json").read_text())
    start, stop = meta["test_frames"]
    run(["rollout", str(runs), "--init", str(data), "--frame", str(start), "--steps", str(stop - start - 1),
         "--force", "-o", str(out / "rollout.h5")])
    run(["evaluate", str(out / "rollout.h5"), "--reference", str(data), "-o", str(out / "report")])


if __name__ == "__main__":
    main()
