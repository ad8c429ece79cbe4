"""Calibrate a model's sampling temperature on its training frames and store it in model.json.

    python tools/calibrate_temperature.py MODEL DATA [--steps 100] [--dry-run]
"""

from __future__ import annotations

import argparse
import json

from ase_ldm.ldm.calibration import calibrate_temperature


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args()
    out = calibrate_temperature(args.model, args.data, steps=args.steps, write=not args.dry_run)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
