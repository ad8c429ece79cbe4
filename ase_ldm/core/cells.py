"""What a grid model asks of a cell: periodic in 3D, the training cell's axes, the training grid spacing.

Both grid families (the synchronised model and the grid-latent diffusion model) run their
convolutions on the density grid, so a cell is served when its vectors point the training
cell's ways and its grid has the training spacing; any size fits. Units: Angstrom.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidInput, ModelMismatch

__all__ = ["cell_angles", "check_cell", "checked_history", "directions", "grid_for"]


def directions(cell: np.ndarray) -> np.ndarray:
    """The cell vectors as unit vectors, (3, 3)."""
    cell = np.asarray(cell, float)
    return cell / np.linalg.norm(cell, axis=1, keepdims=True)


def cell_angles(cell: np.ndarray) -> np.ndarray:
    """The angles (alpha, beta, gamma) between the cell vectors (b, c), (a, c), (a, b), in degrees."""
    a = directions(cell)
    cos = [a[1] @ a[2], a[0] @ a[2], a[0] @ a[1]]
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def grid_for(cell: np.ndarray, spacing: np.ndarray) -> tuple[int, int, int]:
    """The grid with ``spacing`` (3,) Angstrom on ``cell`` (3, 3): cell lengths / spacing, rounded."""
    n = np.round(np.linalg.norm(np.asarray(cell, float), axis=1) / np.asarray(spacing, float)).astype(int)
    return tuple(int(max(k, 1)) for k in n)  # type: ignore[return-value]


def check_cell(cell: np.ndarray, grid: tuple[int, int, int], trained_cell: np.ndarray, spacing: np.ndarray,
               why_axes: str) -> None:
    """Raise ModelMismatch, saying what to change, unless ``cell`` and ``grid`` fit a grid model
    trained on ``trained_cell`` with grid ``spacing``; ``why_axes`` ends the message about axes."""
    cell = np.asarray(cell, float)
    if cell.shape != (3, 3) or not np.all(np.isfinite(cell)) or np.linalg.matrix_rank(cell) < 3:
        raise ModelMismatch("the model is periodic in 3D: the cell needs three non-zero, independent vectors")
    trained = np.asarray(trained_cell, float)
    if np.abs(directions(cell) - directions(trained)).max() > 0.01:
        raise ModelMismatch(
            f"cell vectors point other ways than the training cell's (angles {cell_angles(cell).round(2).tolist()} "
            f"against {cell_angles(trained).round(2).tolist()} deg, or the cell is rotated): {why_axes}")
    spacing = np.asarray(spacing, float)
    got = np.linalg.norm(cell, axis=1) / np.asarray(grid)
    if np.any(np.abs(got / spacing - 1) > 0.02):
        raise ModelMismatch(f"grid spacing {got.round(4).tolist()} A differs from the model's "
                            f"{spacing.round(4).tolist()} A by more than 2 %; choose gpts = "
                            f"{list(grid_for(cell, spacing))}")


def checked_history(value: Any, history: int) -> int:
    """``value`` as a number of past steps between 0 and ``history``, or InvalidInput."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= history:
        raise InvalidInput(f"max_history must be an integer between 0 and {history}, got {value!r}")
    return int(value)
