"""Option blocks and helpers that several subcommands share."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from ..errors import InvalidInput

__all__ = ["add_training_options", "training_config"]

T = TypeVar("T")

#: the command-line options of add_training_options and the config fields they set
TRAINING_OVERRIDES = ("epochs", "batch_size", "lr", "seed", "device")


def add_training_options(p: argparse.ArgumentParser, config_name: str) -> None:
    """--config, the common hyperparameters, --device, --resume and --no-progress of a training command."""
    p.add_argument("--config", help=f"JSON file with {config_name} fields (nested blocks allowed)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--resume", action="store_true", help="continue the run in --output")
    p.add_argument("--no-progress", action="store_true")


def training_config(cls: type[T], args: argparse.Namespace, extra: dict[str, Any] | None = None) -> T | None:
    """The config of a new run: ``--config`` (or the defaults) with the options given on the command line.

    Returns None when resuming (the run's own config.json is used), and refuses settings
    given together with ``--resume``.
    """
    over = {k: getattr(args, k) for k in TRAINING_OVERRIDES if getattr(args, k) is not None}
    over.update({k: v for k, v in (extra or {}).items() if v is not None})
    if args.resume:
        if over or args.config:
            raise InvalidInput("--resume uses the run's own config.json; do not change settings when resuming")
        return None
    base: Any = {}
    if args.config:
        path = Path(args.config)
        try:
            base = json.loads(path.read_text())
        except OSError as err:
            raise InvalidInput(f"--config {path}: cannot read it ({err.strerror})") from None
        except ValueError as err:
            raise InvalidInput(f"--config {path}: not valid JSON ({err})") from None
    from ..core.config import from_dict

    cfg = from_dict(cls, base)
    try:
        return dataclasses.replace(cfg, **over)
    except TypeError as err:
        raise InvalidInput(str(err)) from None
