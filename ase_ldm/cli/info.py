"""Describe a dataset: frames, grid, species, time span, units, electron counts, provenance.

Example: ase-ldm info li16.h5 [--json]
"""

from __future__ import annotations

import argparse
import json


class CLICommand:
    __doc__ = __doc__

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("data", nargs="+", help="dataset file(s)")
        p.add_argument("--json", action="store_true", help="print JSON")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..data.store import open_dataset

        for path in args.data:
            with open_dataset(path) as ds:
                s = ds.summary()
            if args.json:
                print(json.dumps(s, indent=1, default=str))
                continue
            print(format_summary(s))
        return 0


def format_summary(s: dict) -> str:
    t, q = s["time_fs"], s["electron_count"]
    lines = [
        f"{s['path']}",
        f"  frames         {s['frames']}",
        f"  atoms          {s['atoms']} ({s['formula']})",
        f"  grid           {' x '.join(map(str, s['grid']))}, {s['spins']} spin channel(s)",
        f"  cell (A)       {s['cell_A']}",
        f"  time (fs)      {t[0]:.3f} .. {t[1]:.3f}, every {s['frame_interval_fs']} fs" if t else "  time           -",
        f"  electrons(nt)  {q[0]:.5f} .. {q[1]:.5f}  (integral of nt, incl. pseudo-core)" if q else "",
        f"  arrays         {', '.join(s['arrays'])}",
        "  units          " + "; ".join(f"{k}: {v}" for k, v in s["units"].items()),
        "  provenance",
    ]
    for key, value in sorted(s["provenance"].items()):
        lines.append(f"    {key:<22} {value}")
    return "\n".join(line for line in lines if line)
