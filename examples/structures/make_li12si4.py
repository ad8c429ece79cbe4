"""Write a random Li12Si4 starting structure for a Li-Si alloy melt (``li12si4.xyz`` beside this file).

Li3Si at about 17.2 Angstrom^3 per atom (crystalline Li15Si4: 16.1, plus about 7 % on melting):
a cubic cell of 6.50 Angstrom. Atoms are placed at random with at least 2.2 Angstrom between
any two (periodic), so that a short melt at high temperature forgets the starting positions.

Example: python examples/structures/make_li12si4.py && ase-ldm record examples/structures/li12si4.xyz ...
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write


def random_structure(symbols: str = "Li12Si4", a: float = 6.50, dmin: float = 2.2, seed: int = 0) -> Atoms:
    """Random periodic packing of ``symbols`` in a cubic cell of edge ``a`` Angstrom."""
    rng = np.random.default_rng(seed)
    atoms = Atoms(symbols, cell=[a, a, a], pbc=True)
    pos: list[np.ndarray] = []
    for _ in range(len(atoms)):
        for _try in range(10000):
            x = rng.random(3) * a
            d = np.array(pos) - x if pos else np.zeros((0, 3))
            d -= a * np.round(d / a)
            if not len(pos) or np.linalg.norm(d, axis=1).min() >= dmin:
                pos.append(x)
                break
        else:
            raise RuntimeError(f"cannot place {len(atoms)} atoms {dmin} A apart in a {a} A cell")
    atoms.positions = np.array(pos)
    return atoms


if __name__ == "__main__":
    out = Path(__file__).with_name("li12si4.xyz")
    write(out, random_structure())
    print(out)
