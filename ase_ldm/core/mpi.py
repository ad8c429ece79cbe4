"""The MPI world of a GPAW run, seen from ase_ldm: which rank writes, and how rank 0's result reaches all.

Under ``mpiexec -n N`` or ``gpaw -P N`` every rank runs the same script. Files are written and
progress is shown by rank 0 only. What rank 0 finds (a file's state, a check that fails) reaches
the other ranks through :func:`from_root`, so that every rank goes on, or raises, together: no
rank is left waiting in a collective call for a rank that stopped. Without GPAW, or on one rank,
everything here is serial and costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import AseLdmError

__all__ = ["world", "is_root", "from_root"]

T = TypeVar("T")


class _Serial:
    """The world of a process without GPAW's MPI: one rank."""

    rank = 0
    size = 1


def world() -> Any:
    """GPAW's world communicator (``gpaw.mpi.world``), or a one-rank stand-in without GPAW."""
    try:
        from gpaw.mpi import world as gpaw_world
    except ImportError:
        return _Serial()
    return gpaw_world


def is_root() -> bool:
    """Whether this process is rank 0, the one that writes files and prints."""
    return world().rank == 0


def from_root(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``func(*args, **kwargs)`` run on rank 0 only; its result, or its error, on every rank.

    The result must pickle. An :class:`~ase_ldm.errors.AseLdmError` raised on rank 0 is raised on
    every rank; any other error (an interrupt, a result that does not pickle, a bug) is raised on
    rank 0 as it is and on the others as a RuntimeError naming it, so that no rank is left
    waiting. Serially this is just the call.
    """
    comm = world()
    if comm.size == 1:
        return func(*args, **kwargs)
    import pickle

    from gpaw.mpi import broadcast_bytes

    if comm.rank != 0:
        kind, value = pickle.loads(broadcast_bytes(None, 0, comm=comm))
        if kind == "error":
            raise value
        return value
    error: BaseException | None = None
    try:
        value = func(*args, **kwargs)
        payload = pickle.dumps(("ok", value), pickle.HIGHEST_PROTOCOL)
    except BaseException as err:  # every rank must hear of it, whatever it is
        error = err
        shared = err if isinstance(err, AseLdmError) else RuntimeError(
            f"rank 0 failed: {type(err).__name__}: {err}")
        try:
            payload = pickle.dumps(("error", shared), pickle.HIGHEST_PROTOCOL)
        except Exception:
            payload = pickle.dumps(("error", RuntimeError(f"rank 0 failed: {type(err).__name__}: {err}")))
    broadcast_bytes(payload, 0, comm=comm)
    if error is not None:
        raise error
    return value
