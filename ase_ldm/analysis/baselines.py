r"""Predictions computed from a reference trajectory alone, to compare models against.

Each baseline predicts frame :math:`t` from earlier reference frames (and, for ``sad``, the
atoms of frame :math:`t`), and is written with frame :math:`t`'s atoms and time so pointwise
metrics against the reference apply:

==========================  =====================================================================
``previous``                :math:`\hat n_t = n_{t-1}` (also accepted as ``persistence``)
``linear``                  :math:`\hat n_t = 2 n_{t-1} - n_{t-2}`
``quadratic``               :math:`\hat n_t = 3 n_{t-1} - 3 n_{t-2} + n_{t-3}`
``sad``                     superposition of free-atom densities at the atoms of frame t (GPAW)
``sad-extrapolate``         ``sad`` at t plus the residual :math:`n - n_\text{sad}` extrapolated
                            quadratically from frames t-3..t-1 (follows the atoms)
==========================  =====================================================================

``D`` is extrapolated with the same coefficients when stored. Extrapolated densities are
clipped at :data:`DENSITY_FLOOR` to stay positive (on the Li16 reference data the clip is
never reached).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..core.extrapolation import COEFFICIENTS, ORDER_NAMES, extrapolate
from ..data.schema import Frame
from ..data.store import DensityDataset
from ..errors import InvalidInput

__all__ = ["BASELINES", "EXTRAPOLATION", "baseline_frames", "DENSITY_FLOOR"]

DENSITY_FLOOR = 1e-10  # electrons/Angstrom^3

#: The time extrapolations, by name (coefficients: :mod:`ase_ldm.core.extrapolation`).
EXTRAPOLATION: dict[str, tuple[float, ...]] = {name: COEFFICIENTS[order] for order, name in ORDER_NAMES.items()}
#: Earlier names of the same guesses.
ALIASES = {"persistence": "previous"}
BASELINES = (*EXTRAPOLATION, "sad", "sad-extrapolate")


def baseline_frames(ref: DensityDataset, kind: str, start: int | None = None, stop: int | None = None
                    ) -> Iterator[Frame]:
    """Yield the baseline's prediction for frames ``start..stop-1`` of ``ref``.

    ``start`` defaults to the first frame that has enough history (1, 2 or 3 frames back).
    """
    kind = ALIASES.get(kind, kind)
    if kind not in BASELINES:
        raise InvalidInput(f"unknown baseline {kind!r}; choose from {', '.join(BASELINES)}")
    coefs = EXTRAPOLATION.get(kind, EXTRAPOLATION["quadratic"] if kind == "sad-extrapolate" else ())
    history, order = len(coefs), len(coefs) - 1
    start = history if start is None else start
    stop = len(ref) if stop is None else stop
    if start < history:
        raise InvalidInput(f"baseline {kind!r} needs {history} earlier frames; start at frame {history} or later")
    sad = _SuperpositionDensity(ref) if kind.startswith("sad") else None
    has_D = ref.has("D")
    for t in range(start, stop):
        target = ref.frame(t)
        past = [ref.frame(t - j) for j in range(1, history + 1)]
        D_asii = None
        if kind == "sad":
            nt, D_asii = sad(target)
        elif kind == "sad-extrapolate":
            nt_sad, D_sad = sad(target)
            residual = extrapolate([p.nt_sR - sad(p)[0] for p in past], order)
            nt = nt_sad + residual
        else:
            nt = extrapolate([p.nt_sR for p in past], order)
        if has_D and kind != "sad":
            D_asii = extrapolate([p.D_asii for p in past], order)
        yield Frame(nt_sR=np.maximum(nt, DENSITY_FLOOR).astype(np.float32), positions=target.positions,
                    cell=target.cell, numbers=target.numbers, time_fs=target.time_fs, D_asii=D_asii,
                    pbc=target.pbc)


class _SuperpositionDensity:
    """GPAW superposition densities for a dataset's frames, cached by frame time."""

    def __init__(self, ref: DensityDataset) -> None:
        from ..data.gpaw_io import calculator_from_provenance

        self.calc = calculator_from_provenance(ref.attrs, ref.grid)
        self._cache: dict[float, tuple[np.ndarray, list[np.ndarray]]] = {}

    def __call__(self, frame: Frame) -> tuple[np.ndarray, list[np.ndarray]]:
        from ase import Atoms

        from ..data.gpaw_io import superposition_density

        key = frame.time_fs
        if key not in self._cache:
            if len(self._cache) > 8:
                self._cache.pop(next(iter(self._cache)))
            atoms = Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell, pbc=frame.pbc)
            self._cache[key] = superposition_density(self.calc, atoms)
        return self._cache[key]
