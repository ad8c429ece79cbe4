"""Trajectories prepared for the synchronised model: prior, residual and PAW matrices per step.

A :class:`SyncSeries` holds one trajectory in memory as torch tensors: the learned prior
``p`` at every step, the residual ``r = nt - p`` and the packed PAW matrices, so training draws
batches by index without touching the disk. It is built from a dataset (:func:`series_from_dataset`)
or from a compact pack (:func:`save_pack` / :func:`load_pack`): the residual stored as int16 with
a per-frame scale (quantisation error about 1e-6 of the density, far below what the model
resolves), which moves the 750-frame reference (41 MB instead of 81 MB) to a training machine
without ASE/GPAW-specific files.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import DatasetError
from .prior import PriorEvaluator, RadialPrior
from .symmetry import SymmetryOp, projector_l, transform_D

__all__ = ["SyncSeries", "series_from_arrays", "series_from_dataset", "save_pack", "load_pack", "D_layout"]

PACK_FORMAT = "ase_ldm.syncpack"


def D_layout(D_asii: list[np.ndarray]) -> int:
    """The common projector count ni of per-atom (S, ni, ni) matrices; refuses mixed counts."""
    sizes = {int(np.shape(D)[-1]) for D in D_asii}
    if len(sizes) != 1:
        raise DatasetError(f"the synchronised model needs the same projector count on every atom, got {sorted(sizes)}")
    return sizes.pop()


@dataclass
class SyncSeries:
    """One trajectory, ready for batches.

    Attributes
    ----------
    positions : (T, Na, 3) float64, Angstrom
    cell : (3, 3) Angstrom
    numbers : (Na,) atomic numbers
    p : (T, N1, N2, N3) float32 prior, e/Angstrom^3
    r : (T, N1, N2, N3) float32 residual ``nt - p``
    D : (T, Na, nD) float32 packed spin-paired PAW matrices
    ni : projector count
    """

    positions: np.ndarray
    cell: np.ndarray
    numbers: np.ndarray
    p: torch.Tensor
    r: torch.Tensor
    D: torch.Tensor
    ni: int
    l_i: list[int] | None = None

    def __len__(self) -> int:
        return self.p.shape[0]

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(self.p.shape[1:])

    @property
    def frac(self) -> torch.Tensor:
        f = self.positions @ np.linalg.inv(self.cell)
        return torch.as_tensor(f, dtype=torch.float32, device=self.p.device)

    def to(self, device: Any) -> SyncSeries:
        return SyncSeries(self.positions, self.cell, self.numbers, self.p.to(device), self.r.to(device),
                          self.D.to(device), self.ni, self.l_i)

    def subset(self, stop: int) -> SyncSeries:
        """Frames ``[0, stop)``."""
        return SyncSeries(self.positions[:stop], self.cell, self.numbers, self.p[:stop], self.r[:stop],
                          self.D[:stop], self.ni, self.l_i)

    def batch(self, t: torch.Tensor, h: torch.Tensor, reverse: torch.Tensor, history: int,
              frac: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Inputs and targets for steps ``t`` with ``h`` past steps, optionally time-reversed.

        History index k (1 ... H) is step ``t - k`` forward, ``t + k`` reversed; indices outside
        the series are clamped (and masked by ``h`` in the model, so they must lie beyond ``h``).
        """
        dev = self.p.device
        t = t.to(dev)
        sign = torch.where(reverse.to(dev), 1, -1)
        k = torch.arange(1, history + 1, device=dev)
        idx = (t[:, None] + sign[:, None] * k[None]).clamp(0, len(self) - 1)
        frac = self.frac if frac is None else frac
        return {"p": self.p[t], "p_hist": self.p[idx], "r_hist": self.r[idx], "h": h.to(dev),
                "frac": frac[t], "D_hist": self.D[idx], "nt": self.p[t] + self.r[t], "D": self.D[t]}

    def augment(self, b: dict[str, torch.Tensor], ops: list[SymmetryOp]) -> dict[str, torch.Tensor]:
        """Apply ``ops[i]`` to sample i of a batch (grids, positions and PAW matrices)."""
        from .net import pack_D, unpack_D

        out: dict[str, list[torch.Tensor]] = {k: [] for k in b}
        for i, op in enumerate(ops):
            for k, v in b.items():
                x = v[i]
                if k in ("p", "p_hist", "r_hist", "nt"):
                    x = op.grid(x)
                elif k == "frac":
                    x = op.frac(x)
                elif k in ("D", "D_hist"):
                    x = pack_D(transform_D(unpack_D(x, self.ni), op, self.l_i))
                out[k].append(x)
        return {k: torch.stack(v) for k, v in out.items()}


def series_from_arrays(prior: RadialPrior, positions: np.ndarray, cell: np.ndarray, numbers: np.ndarray,
                       nt: Any, D: np.ndarray, *, chunk: int = 50) -> SyncSeries:
    """Build a series; ``nt`` is (T, N1, N2, N3) (array or lazily sliced), ``D`` (T, Na, ni, ni)."""
    positions = np.asarray(positions, np.float64)
    T = positions.shape[0]
    grid = tuple(nt[0].shape)
    ev = PriorEvaluator(prior, numbers, cell, grid, dtype=torch.float64)
    p = torch.empty((T, *grid), dtype=torch.float32)
    r = torch.empty((T, *grid), dtype=torch.float32)
    for s in range(0, T, chunk):
        e = min(T, s + chunk)
        pp = ev(torch.as_tensor(positions[s:e]))
        n = torch.as_tensor(np.asarray(nt[s:e], np.float64))
        if not torch.isfinite(n).all():
            raise DatasetError(f"frames {s}-{e - 1}: the density contains NaN or inf")
        p[s:e] = pp.float()
        r[s:e] = (n - pp).float()
    D = np.asarray(D, np.float64)
    from .net import pack_D

    return SyncSeries(positions, np.asarray(cell, np.float64), np.asarray(numbers), p, r,
                      pack_D(torch.as_tensor(D)).float(), int(D.shape[-1]))


def series_from_dataset(ds: Any, prior: RadialPrior, start: int = 0, stop: int | None = None) -> SyncSeries:
    """A series from frames ``start:stop`` of a :class:`~ase_ldm.data.DensityDataset` (spin-summed
    ``nt``; the PAW matrices of the first spin channel, spin-paired data)."""
    stop = len(ds) if stop is None else stop
    if ds.nspins != 1:
        raise DatasetError(f"{ds.path}: the synchronised model is spin-paired; this dataset has {ds.nspins} spins")
    if not ds.has("D"):
        raise DatasetError(f"{ds.path}: no PAW matrices (D) stored; record with GPAW or import a gpw/npz with D")
    cell = ds.cell(start)
    for i in (start, stop - 1):
        if not np.allclose(ds.cell(i), cell):
            raise DatasetError(f"{ds.path}: the cell changes along the trajectory; the model needs a fixed cell")
    Ds = []
    for i in range(start, stop):
        D_asii = ds.D_asii(i)
        D_layout(D_asii)
        Ds.append(np.stack([np.asarray(D)[0] for D in D_asii]))

    class _NT:
        def __getitem__(self, s: Any) -> np.ndarray:
            if isinstance(s, slice):
                return ds.nt_range(start + s.start, start + s.stop)[:, 0]
            return ds.nt(start + s)[0]

    positions = ds.array("positions", start, stop)
    series = series_from_arrays(prior, positions, cell, ds.numbers, _NT(), np.stack(Ds))
    xc = ds.attrs.get("xc", "PBE")
    series.l_i = projector_l(ds.numbers, xc if isinstance(xc, str) else "PBE")
    return series


def save_pack(path: str | os.PathLike, series: SyncSeries, prior: RadialPrior, attrs: dict[str, Any]) -> None:
    """Write the compact pack (residual as int16 with a per-frame scale), atomically."""
    r = series.r.double().numpy()
    scale = np.abs(r).reshape(len(r), -1).max(1) / 32000.0
    q = np.round(r / scale[:, None, None, None]).astype(np.int16)
    from ..data.atomic import atomic_output

    with atomic_output(path, overwrite=True) as tmp, open(tmp, "wb") as fd:
        np.savez(fd, format=np.array(PACK_FORMAT), r_q=q, r_scale=scale, positions=series.positions,
                 cell=series.cell, numbers=series.numbers, D=series.D.numpy(), ni=np.array(series.ni),
                 prior=np.array(json.dumps(prior.to_dict())), attrs=np.array(json.dumps(attrs)),
                 l_i=np.array(json.dumps(series.l_i)))


def load_pack(path: str | os.PathLike) -> tuple[SyncSeries, RadialPrior, dict[str, Any]]:
    """Read a pack written by :func:`save_pack`; the prior is recomputed from the positions."""
    try:
        z = np.load(path)
        if str(z["format"]) != PACK_FORMAT:
            raise DatasetError(f"format {z['format']}")
        prior = RadialPrior.from_dict(json.loads(str(z["prior"])))
        q, scale = z["r_q"], z["r_scale"]
        positions, cell, numbers = z["positions"], z["cell"], z["numbers"]
        D, ni, attrs = z["D"], int(z["ni"]), json.loads(str(z["attrs"]))
        l_i = json.loads(str(z["l_i"])) if "l_i" in z else None
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{path}: not a readable sync pack ({err}); rebuild it with "
                           "tools/pack_sync_data.py") from None
    ev = PriorEvaluator(prior, numbers, cell, q.shape[1:], dtype=torch.float64)
    p = torch.cat([ev(torch.as_tensor(positions[s:s + 50])).float() for s in range(0, len(q), 50)])
    r = torch.as_tensor(q.astype(np.float32) * scale[:, None, None, None].astype(np.float32))
    return SyncSeries(positions, cell, numbers, p, r, torch.as_tensor(D), ni, l_i), prior, attrs
