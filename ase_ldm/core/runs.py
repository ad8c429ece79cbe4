"""The skeleton both training loops share: a run directory that can be resumed safely.

A run directory holds ``config.json`` (the training config, the dataset it trains on, and
what else the family needs to restart), ``model.json`` + weights + train state
(:mod:`ase_ldm.core.checkpoint`) and ``history.json`` (one record per epoch). :func:`open_run`
starts a new run or checks that a resumed one gets the same config and the same dataset;
:func:`write_checkpoint` writes a checkpoint and the history atomically, so a run killed at
any moment resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..data.atomic import write_text_atomic
from ..errors import CheckpointError, InvalidInput
from .checkpoint import load_train_state, load_weights, read_meta, save_checkpoint
from .config import from_dict

__all__ = ["dataset_identity", "open_run", "resume_state", "save_run_config", "write_checkpoint"]

T = TypeVar("T")


def dataset_identity(path: str | os.PathLike) -> dict[str, Any]:
    """What identifies a training dataset across paths: its resolved path, size and frame count.

    The path may differ between machines (a pack moved to a GPU machine), so resuming compares
    the file name, the size in bytes and, for datasets, the number of frames.
    """
    p = Path(path).resolve()
    ident: dict[str, Any] = {"path": str(p), "name": p.name, "bytes": p.stat().st_size if p.exists() else None}
    return ident


def open_run(run: Path, cfg_cls: type[T], cfg: T | None, resume: bool, data: str | os.PathLike,
             extra: dict[str, Any] | None = None) -> tuple[T, dict[str, Any]]:
    """Start or resume a run; returns its config and the stored ``extra`` entries.

    New run: refuses a directory that already holds a model, and writes ``config.json``.
    Resume: reads ``config.json``, refuses a different ``cfg`` or another dataset.
    """
    saved = run / "config.json"
    ident = dataset_identity(data)
    if resume:
        if not saved.is_file():
            raise CheckpointError(f"{run}: nothing to resume (no config.json); start without --resume")
        try:
            doc = json.loads(saved.read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{run}/config.json: unreadable ({err}); start a new run directory") from None
        if not isinstance(doc, dict):
            raise CheckpointError(f"{run}/config.json: not a JSON object; start a new run directory")
        stored = from_dict(cfg_cls, doc.get("config", doc))
        if cfg is not None and cfg != stored:
            raise InvalidInput(f"{run}: the given config differs from the run's config.json; resume with the same "
                               "config (or none) or start a new run directory")
        old = doc.get("dataset")
        if old is not None and not isinstance(old, dict):
            raise CheckpointError(f"{run}/config.json: 'dataset' is not an object; start a new run directory")
        if old is not None and (old.get("name"), old.get("bytes")) != (ident["name"], ident["bytes"]):
            raise InvalidInput(f"{run} trains on {old.get('path')} ({old.get('bytes')} bytes), not on {ident['path']} "
                               f"({ident['bytes']} bytes); resume with the same data or start a new run directory")
        return stored, {k: v for k, v in doc.items() if k not in ("config", "dataset")}
    cfg = cfg_cls() if cfg is None else cfg
    if (run / "model.json").exists():
        raise InvalidInput(f"{run} already holds a trained model; use --resume to continue it or another directory")
    return cfg, dict(extra or {})


def save_run_config(run: Path, cfg: Any, data: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write ``config.json`` of a new run (atomically)."""
    run.mkdir(parents=True, exist_ok=True)
    doc = {"config": asdict(cfg), "dataset": dataset_identity(data), **(extra or {})}
    write_text_atomic(run / "config.json", json.dumps(doc, indent=1))


def resume_state(run: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                 sched: Any) -> tuple[dict[str, Any], list[dict[str, Any]], int, dict[str, Any]]:
    """Load the last checkpoint of ``run`` into ``model``, ``opt`` and ``sched``.

    Returns (model.json, history up to the checkpoint, epoch, the whole train state).
    """
    meta = read_meta(run)
    load_weights(run, model, meta)
    state = load_train_state(run, meta)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return meta, list(meta.get("history", []))[: meta["epoch"]], int(meta["epoch"]), state


def write_checkpoint(run: Path, model: torch.nn.Module, meta: dict[str, Any], train_state: dict[str, Any],
                     epoch: int, history: list[dict[str, Any]]) -> None:
    """Checkpoint (weights, train state, model.json with the history) and ``history.json``."""
    save_checkpoint(run, model, {**meta, "history": history}, train_state, epoch=epoch)
    write_text_atomic(run / "history.json", json.dumps(history, indent=1))
