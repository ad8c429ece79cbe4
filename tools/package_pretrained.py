"""Copy a trained run into ase_ldm/pretrained/NAME as a shipped model (no training state).

    python tools/package_pretrained.py RUN_DIR NAME [--note TEXT]

The weights are copied unchanged; model.json gets the name, the note, and a files entry
without the training state; the checksum is verified by loading the result.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ase_ldm.core.checkpoint import read_meta
from ase_ldm.core.registry import PRETRAINED_DIR, load


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("name")
    p.add_argument("--note", default="")
    args = p.parse_args()
    meta = read_meta(args.run)
    dst = PRETRAINED_DIR / args.name
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    shutil.copy(args.run / meta["files"]["weights"], dst / meta["files"]["weights"])
    meta["files"] = {k: v for k, v in meta["files"].items() if k.startswith("weights")}
    meta["name"] = args.name
    meta["note"] = args.note
    if "path" in meta.get("dataset", {}):
        meta["dataset"]["path"] = Path(meta["dataset"]["path"]).name
    for extra in meta.get("extra_data", []):  # no paths of the training machine in a shipped model
        extra["path"] = Path(extra["path"]).name
    if "autoencoder_from" in meta:
        meta["autoencoder_from"] = Path(meta["autoencoder_from"]).name
    (dst / "model.json").write_text(json.dumps(meta, indent=1))
    model = load(args.name, device="cpu")
    what = f"{type(model).__name__}, species {list(model.species)}, history {model.max_history}"
    size = sum(f.stat().st_size for f in dst.iterdir()) / 1e6
    print(f"{dst}: {size:.1f} MB, {what}, epoch {meta['epoch']}")


if __name__ == "__main__":
    main()
