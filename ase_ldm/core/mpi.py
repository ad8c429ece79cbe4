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
    every rank; any other error is raised on rank 0 as it is and on the others as a
    RuntimeError naming it. Serially this is just the call.
    """
    comm = world()
    if comm.size == 1:
        return func(*args, **kwargs)
    from gpaw.mpi import broadcast

    message: tuple[str, Any] | None = None
    error: BaseException | None = None
    if comm.rank == 0:
        try:
            message = ("ok", func(*args, **kwargs))
        except AseLdmError as err:
            message, error = ("error", err), err
        except Exception as err:  # a bug: its traceback stays on rank 0
            message, error = ("error", RuntimeError(f"rank 0 failed: {type(err).__name__}: {err}")), err
    kind, value = broadcast(message, 0, comm=comm)
    if error is not None:
        raise error
    if kind == "error":
        raise value
    return value
