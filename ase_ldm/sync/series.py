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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import DatasetError, InvalidInput
from .layout import PAWLayout, pack_D
from .prior import PriorEvaluator, RadialPrior
from .symmetry import SymmetryOp, projector_l

__all__ = ["SyncSeries", "series_from_arrays", "series_from_dataset", "save_pack", "load_pack", "layout_from_D"]

PACK_FORMAT = "ase_ldm.syncpack"


def layout_from_D(prior: RadialPrior, numbers: np.ndarray, D_aii: Sequence[Any],
                  l_i: dict[int, list[int]] | None = None) -> PAWLayout:
    """The :class:`PAWLayout` of the prior's species from one frame's per-atom (ni_a, ni_a)
    matrices; refuses species whose atoms differ in their projector counts."""
    species = prior.species_index(numbers)
    ni: dict[int, set[int]] = {}
    for D, s in zip(D_aii, species):
        ni.setdefault(int(s), set()).add(int(np.shape(D)[-1]))
    bad = {prior.numbers[s]: sorted(n) for s, n in ni.items() if len(n) > 1}
    if bad:
        raise DatasetError(f"atoms of one element carry different projector counts {bad}; record the whole "
                           "trajectory with one set of PAW setups")
    absent = [z for s, z in enumerate(prior.numbers) if s not in ni]
    if absent:
        raise DatasetError(f"the prior knows elements {absent} that no atom of the data has")
    counts = tuple(ni[s].pop() for s in range(len(prior.numbers)))
    ls = None
    if l_i is not None and all(z in l_i for z in prior.numbers):
        ls = tuple(tuple(l_i[z]) for z in prior.numbers)
        if [len(x) for x in ls] != list(counts):
            ls = None  # setups other than GPAW's defaults: the angular momenta are unknown
    return PAWLayout(tuple(prior.numbers), counts, ls)


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
    D : (T, Na, nD) float32 packed spin-paired PAW matrices, zero-padded (:mod:`ase_ldm.sync.layout`)
    layout : the species' projector counts and angular momenta
    """

    positions: np.ndarray
    cell: np.ndarray
    numbers: np.ndarray
    p: torch.Tensor
    r: torch.Tensor
    D: torch.Tensor
    layout: PAWLayout

    def __len__(self) -> int:
        return self.p.shape[0]

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(self.p.shape[1:])

    @property
    def species(self) -> np.ndarray:
        """(Na,) species index of each atom (the prior's and the layout's order)."""
        return self.layout.species_index(self.numbers)

    @property
    def frac(self) -> torch.Tensor:
        f = self.positions @ np.linalg.inv(self.cell)
        return torch.as_tensor(f, dtype=torch.float32, device=self.p.device)

    def to(self, device: Any) -> SyncSeries:
        return SyncSeries(self.positions, self.cell, self.numbers, self.p.to(device), self.r.to(device),
                          self.D.to(device), self.layout)

    def subset(self, stop: int) -> SyncSeries:
        """Frames ``[0, stop)``."""
        return SyncSeries(self.positions[:stop], self.cell, self.numbers, self.p[:stop], self.r[:stop],
                          self.D[:stop], self.layout)

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
        species = self.species
        out: dict[str, list[torch.Tensor]] = {k: [] for k in b}
        for i, op in enumerate(ops):
            for k, v in b.items():
                x = v[i]
                if k in ("p", "p_hist", "r_hist", "nt"):
                    x = op.grid(x)
                elif k == "frac":
                    x = op.frac(x)
                elif k in ("D", "D_hist"):
                    x = self.layout.transform(x, op, species)
                out[k].append(x)
        return {k: torch.stack(v) for k, v in out.items()}


def concatenate(parts: Sequence[SyncSeries]) -> tuple[SyncSeries, list[int]]:
    """Trajectories of one system joined into one series, and the first frame of each.

    A history must not reach across a join (:func:`training_steps`); the parts must share the
    cell, the atoms (species in the same order), the grid and the PAW layout.
    """
    first = parts[0]
    for k, part in enumerate(parts[1:], start=1):
        if (part.grid != first.grid or not np.allclose(part.cell, first.cell) or
                not np.array_equal(part.numbers, first.numbers) or part.layout.to_meta() != first.layout.to_meta()):
            raise DatasetError(f"trajectory {k} is another system than trajectory 0 (cell, atoms, grid or PAW "
                               "projectors differ); train on trajectories of one system")
    starts = list(np.cumsum([0] + [len(x) for x in parts[:-1]]).astype(int))
    joined = SyncSeries(np.concatenate([x.positions for x in parts]), first.cell, first.numbers,
                        torch.cat([x.p for x in parts]), torch.cat([x.r for x in parts]),
                        torch.cat([x.D for x in parts]), first.layout)
    return joined, [int(t) for t in starts]


def training_steps(starts: Sequence[int], n_fit: int, history: int, reverse: bool) -> list[tuple[int, bool]]:
    """The (t, reversed) steps of frames ``[0, n_fit)`` whose ``history`` past steps lie inside t's
    own trajectory (``starts``: the first frame of each) and inside the fit frames."""
    bounds = [*starts, n_fit]
    steps: list[tuple[int, bool]] = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        b = min(b, n_fit)
        steps += [(t, False) for t in range(a + history, b)]
        if reverse:
            steps += [(t, True) for t in range(a, b - history)]
    return sorted(steps, key=lambda s: (s[1], s[0]))


def series_from_arrays(prior: RadialPrior, positions: np.ndarray, cell: np.ndarray, numbers: np.ndarray,
                       nt: Any, D: Sequence[Sequence[Any]], *, l_i: dict[int, list[int]] | None = None,
                       chunk: int = 50) -> SyncSeries:
    """Build a series.

    Parameters
    ----------
    nt : (T, N1, N2, N3), an array or lazily sliced, e/Angstrom^3
    D : per frame, per atom the spin-paired (ni_a, ni_a) matrix; a (T, Na, ni, ni) array when
        every atom has the same projector count
    l_i : projector angular momenta by atomic number (:func:`~ase_ldm.sync.symmetry.projector_l`)
    """
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
    if len(D) != T:
        raise DatasetError(f"{len(D)} frames of PAW matrices for {T} frames of positions")
    layout = layout_from_D(prior, numbers, D[0], l_i)
    species = layout.species_index(numbers)
    try:
        padded = np.stack([layout.pad(D_t, species) for D_t in D])
    except InvalidInput as err:
        raise DatasetError(f"PAW matrices: {err}") from None
    return SyncSeries(positions, np.asarray(cell, np.float64), np.asarray(numbers), p, r,
                      pack_D(torch.as_tensor(padded)).float(), layout)


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
    Ds = [[np.asarray(D)[0] for D in ds.D_asii(i)] for i in range(start, stop)]

    class _NT:
        def __getitem__(self, s: Any) -> np.ndarray:
            if isinstance(s, slice):
                return ds.nt_range(start + s.start, start + s.stop)[:, 0]
            return ds.nt(start + s)[0]

    positions = ds.array("positions", start, stop)
    xc = ds.attrs.get("xc", "PBE")
    l_i = projector_l(ds.numbers, xc if isinstance(xc, str) else "PBE")
    return series_from_arrays(prior, positions, cell, ds.numbers, _NT(), Ds, l_i=l_i)


def save_pack(path: str | os.PathLike, series: SyncSeries, prior: RadialPrior, attrs: dict[str, Any]) -> None:
    """Write the compact pack (residual as int16 with a per-frame scale), atomically."""
    r = series.r.double().numpy()
    scale = np.abs(r).reshape(len(r), -1).max(1) / 32000.0
    q = np.round(r / scale[:, None, None, None]).astype(np.int16)
    from ..data.atomic import atomic_output

    with atomic_output(path, overwrite=True) as tmp, open(tmp, "wb") as fd:
        np.savez(fd, format=np.array(PACK_FORMAT), r_q=q, r_scale=scale, positions=series.positions,
                 cell=series.cell, numbers=series.numbers, D=series.D.numpy(),
                 prior=np.array(json.dumps(prior.to_dict())), attrs=np.array(json.dumps(attrs)),
                 layout=np.array(json.dumps(series.layout.to_meta())))


def load_pack(path: str | os.PathLike) -> tuple[SyncSeries, RadialPrior, dict[str, Any]]:
    """Read a pack written by :func:`save_pack`; the prior is recomputed from the positions."""
    try:
        z = np.load(path)
        if str(z["format"]) != PACK_FORMAT:
            raise DatasetError(f"format {z['format']}")
        prior = RadialPrior.from_dict(json.loads(str(z["prior"])))
        q, scale = z["r_q"], z["r_scale"]
        positions, cell, numbers = z["positions"], z["cell"], z["numbers"]
        D, attrs = z["D"], json.loads(str(z["attrs"]))
        if "layout" in z:
            layout = PAWLayout.from_meta(json.loads(str(z["layout"])), prior.numbers)
        else:  # packs before several species: one projector count, one list of angular momenta
            layout = PAWLayout.from_meta({"ni": int(z["ni"]),
                                          "l_i": json.loads(str(z["l_i"])) if "l_i" in z else None}, prior.numbers)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, InvalidInput) as err:
        raise DatasetError(f"{path}: not a readable sync pack ({err}); rebuild it with "
                           "tools/pack_sync_data.py") from None
    ev = PriorEvaluator(prior, numbers, cell, q.shape[1:], dtype=torch.float64)
    p = torch.cat([ev(torch.as_tensor(positions[s:s + 50])).float() for s in range(0, len(q), 50)])
    r = torch.as_tensor(q.astype(np.float32) * scale[:, None, None, None].astype(np.float32))
    return SyncSeries(positions, cell, numbers, p, r, torch.as_tensor(D), layout), prior, attrs
