"""Pack a dataset for training the synchronised model elsewhere (e.g. a GPU machine without GPAW).

Fits the radial prior to the first ``--train`` frames and writes prior, positions, PAW matrices and
the residual ``nt - prior`` (int16 with a per-frame scale) of frames ``[0, --frames)``.

Example: python tools/pack_sync_data.py bench-output/li16_800K.h5 --train 600 --frames 600 -o runs/li16.syncpack.npz
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ase_ldm.data.store import open_dataset
from ase_ldm.sync.config import SyncTrainConfig
from ase_ldm.sync.series import load_pack, save_pack, series_from_dataset
from ase_ldm.sync.training import load_series


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--train", type=int, required=True, help="frames the prior is fitted to")
    ap.add_argument("--frames", type=int, help="frames to pack (default: all)")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    _, prior, attrs = load_series(args.data, args.train, SyncTrainConfig())
    with open_dataset(args.data) as ds:
        series = series_from_dataset(ds, prior, 0, args.frames)
    save_pack(args.output, series, prior, attrs)
    back, _, _ = load_pack(args.output)
    nt = (series.p + series.r).double()
    err = ((back.p + back.r).double() - nt).abs().sum((1, 2, 3)) / nt.abs().sum((1, 2, 3))
    print(f"{args.output}: {len(series)} frames in {time.perf_counter() - t0:.1f} s; "
          f"quantisation error (rel. L1 of nt) max {float(err.max()):.2e}, mean {float(err.mean()):.2e}; "
          f"prior alone: rel. L1 {float((series.r.abs().sum((1, 2, 3)) / nt.abs().sum((1, 2, 3))).mean()):.4f}")
    np.testing.assert_array_less(err.numpy(), 1e-5)


if __name__ == "__main__":
    main()
