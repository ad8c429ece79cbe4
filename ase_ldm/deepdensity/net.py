r"""The Deep Density network (``shared/seeds/004``, Sec. 3): a density at a point r as a sum of
contributions of the atoms within a cutoff of it,

.. math:: \rho(r) = \sum_I \rho_I(r), \qquad
          \rho_I = \left(N_I + A_s |r - R_I| + B_s\right) e^{C_s (|r - R_I| - D_s)^2 + E_I},

where (N_I, E_I) = F_s(D_I(r)) come from a fitting network F of atom I's species s applied to a
descriptor of I's neighbourhood that includes the point r as one more "particle" (Eq. 15-19):
:math:`h_I = \sum_J d_{IJ} g(d_{IJ,1})^T` over the neighbours J (atoms and r),
:math:`d_{IJ} = \phi(R_{IJ}) (1, \mathbf{R}_{IJ} / R_{IJ})`, and :math:`D_I = h_I^T h_I[:, :M']`,
invariant to translations, rotations and permutations of like atoms. Periodic images are
included. One departure from the paper: each contribution is multiplied by the smooth cutoff
taper of Eq. 16, so that the density stays continuous when an atom leaves the cutoff.

Units: Angstrom in, electrons / Angstrom^3 out.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import InvalidInput
from .config import DeepDensityConfig

__all__ = ["DeepDensity", "grid_points"]


def _mlp(widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def grid_points(cell: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
    """Cartesian coordinates (N1 N2 N3, 3), Angstrom, of the points i/N of a periodic grid, C order."""
    axes = [np.arange(n) / n for n in grid]
    frac = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return frac @ np.asarray(cell, float)


class DeepDensity(nn.Module):
    """Deep Density for the species ``cfg.numbers``.

    ``forward(positions, numbers, cell, points)``: atoms (Na, 3) Angstrom with atomic numbers
    (Na,), the periodic cell (3, 3), and points (P, 3) Angstrom; returns the density (P,) in
    electrons / Angstrom^3.
    """

    def __init__(self, cfg: DeepDensityConfig) -> None:
        super().__init__()
        if not 0 < cfg.cutoff_smooth < cfg.cutoff:
            raise InvalidInput(f"need 0 < cutoff_smooth < cutoff, got {cfg.cutoff_smooth}, {cfg.cutoff}")
        if not 1 <= cfg.axis <= cfg.embedding[-1]:
            raise InvalidInput(f"axis must be between 1 and the embedding width {cfg.embedding[-1]}")
        self.cfg = cfg
        S, M = len(cfg.numbers), cfg.embedding[-1]
        self.g_atom = nn.ModuleList(_mlp((1, *cfg.embedding)) for _ in range(S * S))  # (s_I, s_J)
        self.g_point = nn.ModuleList(_mlp((1, *cfg.embedding)) for _ in range(S))
        self.fit = nn.ModuleList(_mlp((M * cfg.axis, *cfg.fitting, 2)) for _ in range(S))
        for net in self.fit:  # start from the smooth atomic profile alone (N = E = 0)
            nn.init.zeros_(net[-1].weight)
            nn.init.zeros_(net[-1].bias)
        self.A = nn.Parameter(torch.zeros(S))
        self.B = nn.Parameter(torch.full((S,), 0.006))
        # decay rate -softplus(-C): about 0.05 / A^2 at the start, so that every atom within the
        # cutoff contributes and B sets the mean density (0.01 e/A^3 times ~10 atoms for Li)
        self.C = nn.Parameter(torch.full((S,), 2.97))
        self.D = nn.Parameter(torch.zeros(S))

    def species(self, numbers: torch.Tensor) -> torch.Tensor:
        """Species index of each atom; refuses species the model was not built for."""
        known = torch.as_tensor(self.cfg.numbers, device=numbers.device)
        hit = numbers[:, None] == known[None]
        if not bool(hit.any(1).all()):
            unknown = sorted(set(numbers.tolist()) - set(self.cfg.numbers))
            raise InvalidInput(f"atomic numbers {unknown}: this Deep Density model knows {list(self.cfg.numbers)}")
        return hit.int().argmax(1)

    def _phi(self, R: torch.Tensor) -> torch.Tensor:
        c, cs = self.cfg.cutoff, self.cfg.cutoff_smooth
        taper = torch.where(R < cs, torch.ones_like(R),
                            0.5 * torch.cos(math.pi * (R.clamp(cs, c) - cs) / (c - cs)) + 0.5)
        return taper / (R + self.cfg.delta), taper

    def _images(self, cell: torch.Tensor) -> torch.Tensor:
        """Lattice translations (K, 3) that can bring a neighbour within the cutoff."""
        planes = 1.0 / torch.linalg.inv(cell).norm(dim=0)  # distances between lattice planes
        n = [int(math.ceil(self.cfg.cutoff / float(d))) for d in planes]
        ranges = [torch.arange(-k, k + 1, device=cell.device, dtype=cell.dtype) for k in n]
        return torch.stack(torch.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, 3) @ cell

    def _pairs(self, origins: torch.Tensor, targets: torch.Tensor, images: torch.Tensor,
               exclude_self: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(i, j, vector from origin i to target j or its image) for every pair within the cutoff."""
        vec = targets[None, :, None] + images[None, None] - origins[:, None, None]  # (O, T, K, 3)
        R = vec.norm(dim=-1)
        ok = R < self.cfg.cutoff
        if exclude_self:
            ok &= R > 1e-8
        i, j, k = ok.nonzero(as_tuple=True)
        return i, j, vec[i, j, k]

    def _embed(self, nets: nn.ModuleList, which: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(len(x), self.cfg.embedding[-1])
        for n, net in enumerate(nets):
            sel = which == n
            if bool(sel.any()):
                out[sel] = net(x[sel, None])
        return out

    def forward(self, positions: torch.Tensor, numbers: torch.Tensor, cell: torch.Tensor,
                points: torch.Tensor) -> torch.Tensor:
        S, M = len(self.cfg.numbers), self.cfg.embedding[-1]
        dtype = self.A.dtype
        positions, cell, points = positions.to(dtype), cell.to(dtype), points.to(dtype)
        s = self.species(numbers)
        inv = torch.linalg.inv(cell)
        positions = torch.remainder(positions @ inv, 1.0) @ cell  # atoms and points wrapped into the cell:
        points = torch.remainder(points @ inv, 1.0) @ cell  # the images below then reach every neighbour
        images = self._images(cell)
        # the atoms' own neighbourhoods: h_I = sum_J d_IJ g(phi_IJ)^T, (Na, 4, M)
        i, j, vec = self._pairs(positions, positions, images, exclude_self=True)
        R = vec.norm(dim=-1)
        phi, _ = self._phi(R)
        d = torch.cat([phi[:, None], phi[:, None] * vec / R[:, None]], 1)
        g = self._embed(self.g_atom, s[i] * S + s[j], phi)
        h_atoms = positions.new_zeros(len(positions), 4, M).index_add(0, i, d[:, :, None] * g[:, None, :])
        # each point joins the neighbourhood of every atom within the cutoff
        a, p, vec = self._pairs(positions, points, images, exclude_self=False)
        R = vec.norm(dim=-1)
        phi, taper = self._phi(R)
        d = torch.cat([phi[:, None], phi[:, None] * vec / R.clamp_min(1e-8)[:, None]], 1)
        h = h_atoms[a] + d[:, :, None] * self._embed(self.g_point, s[a], phi)[:, None, :]
        desc = (h.transpose(1, 2) @ h[:, :, : self.cfg.axis]).reshape(len(h), -1)  # (pairs, M M')
        out = points.new_zeros(len(h), 2)
        for n, net in enumerate(self.fit):
            sel = s[a] == n
            if bool(sel.any()):
                out[sel] = net(desc[sel])
        sa = s[a]
        C = -nn.functional.softplus(-self.C[sa])
        rho = (out[:, 0] + self.A[sa] * R + self.B[sa]) * torch.exp(C * (R - self.D[sa]) ** 2 + out[:, 1]) * taper
        return points.new_zeros(len(points)).index_add(0, p, rho)

    @torch.no_grad()
    def density_on_grid(self, positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray,
                        grid: tuple[int, int, int], chunk: int = 4000) -> np.ndarray:
        """The density (N1, N2, N3), electrons / Angstrom^3, on the points i/N of a periodic grid."""
        dev = self.A.device
        pts = torch.as_tensor(grid_points(cell, grid), device=dev)
        args = (torch.as_tensor(positions, device=dev), torch.as_tensor(numbers, device=dev),
                torch.as_tensor(np.asarray(cell, float), device=dev))
        out = torch.cat([self(*args, pts[k:k + chunk]) for k in range(0, len(pts), chunk)])
        return out.reshape(grid).double().cpu().numpy()
