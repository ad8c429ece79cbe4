"""Save and load trained models without executing pickled code.

A model directory holds:

* ``model.json`` -- format name and version, the model config, the density transform, grid,
  cell, species, timestep, dataset provenance, the training epoch, and the name and SHA-256
  of the weights file;
* ``weights-eNNNNN.safetensors`` -- the network's tensors (safetensors: no code inside);
* ``train_state-eNNNNN.pt`` -- optimizer, scheduler and RNG states for resuming, loaded with
  ``torch.load(weights_only=True)``.

Saving writes the new weights and train state under new names first, then replaces
``model.json`` atomically, then removes the old files: a run killed at any moment leaves a
``model.json`` that points at complete files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..data.atomic import temporary_path, write_text_atomic
from ..errors import CheckpointError

__all__ = ["CheckpointError", "FORMAT_NAME", "FORMAT_VERSION", "save_checkpoint", "read_meta", "build_model",
           "load_weights", "load_train_state"]

FORMAT_NAME = "ase_ldm.model"
FORMAT_VERSION = 1
#: model.json holds configs and a loss history: far below this
MAX_META_BYTES = 64 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fd:
        for block in iter(lambda: fd.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(run_dir: str | os.PathLike, model: torch.nn.Module, meta: dict[str, Any],
                    train_state: dict[str, Any] | None = None, epoch: int = 0) -> Path:
    """Write weights (+ train state) and ``model.json`` atomically; returns ``model.json``'s path."""
    from safetensors.torch import save_file

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    old = _current_files(run)
    weights = run / f"weights-e{epoch:05d}.safetensors"
    tmp = temporary_path(weights)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp))
    os.replace(tmp, weights)
    files = {"weights": weights.name, "weights_sha256": _sha256(weights)}
    if train_state is not None:
        ts = run / f"train_state-e{epoch:05d}.pt"
        tmp = temporary_path(ts)
        torch.save(train_state, tmp)
        os.replace(tmp, ts)
        files.update(train_state=ts.name, train_state_sha256=_sha256(ts))
    doc = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "epoch": epoch, **meta, "files": files}
    write_text_atomic(run / "model.json", json.dumps(doc, indent=1, default=_jsonable))
    for name in old:
        if name not in files.values():
            (run / name).unlink(missing_ok=True)
    return run / "model.json"


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in model.json")


def _current_files(run: Path) -> list[str]:
    try:
        files = json.loads((run / "model.json").read_text())["files"]
        return [v for k, v in files.items() if not k.endswith("sha256")]
    except (OSError, ValueError, KeyError):
        return []


def read_meta(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``model.json``; raises :class:`CheckpointError` with what to do."""
    run = Path(run_dir)
    path = run / "model.json"
    if not path.exists():
        raise CheckpointError(f"{run}: no model.json; give a run directory written by 'ase-ldm train' "
                              "or a pretrained model name")
    if not path.is_file() or path.stat().st_size > MAX_META_BYTES:
        raise CheckpointError(f"{path}: not a regular file of at most {MAX_META_BYTES} bytes; "
                              "give a run directory written by ase-ldm")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable or truncated JSON ({err})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(meta).__name__}; the file is damaged")
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not an ase_ldm model (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: model format version {meta.get('format_version')}, this ase_ldm reads "
                              f"version {FORMAT_VERSION}; use the matching ase_ldm release or retrain")
    return meta


def _checked_file(run: Path, meta: dict[str, Any], key: str) -> Path:
    files = meta.get("files", {})
    if not isinstance(files, dict) or key not in files:
        raise CheckpointError(f"{run}/model.json names no {key} file")
    name = files[key]
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise CheckpointError(f"{run}/model.json: {key} file {name!r} is not a plain file name inside the run "
                              "directory; model.json was edited or damaged")
    path = run / name
    if not path.exists():
        raise CheckpointError(f"{path}: missing; the run directory is incomplete")
    if path.is_symlink() or not path.is_file():
        raise CheckpointError(f"{path}: not a regular file; the run directory is damaged")
    if _sha256(path) != files.get(f"{key}_sha256"):
        raise CheckpointError(f"{path}: checksum differs from model.json; the file was modified or truncated. "
                              "Restore it or retrain")
    return path


def build_model(run_dir: str | os.PathLike, meta: dict[str, Any], factory: Any) -> torch.nn.Module:
    """Build ``factory()`` for the checkpoint and load its weights, refusing oversized descriptions.

    The network is first built on torch's ``meta`` device (no memory) and its tensor shapes are
    compared with the header of the weights file, so a damaged or hostile ``model.json`` (say,
    a grid of 10^5 points per axis) is refused before anything is allocated.
    """
    from safetensors import SafetensorError, safe_open

    run = Path(run_dir)
    path = _checked_file(run, meta, "weights")
    try:
        with torch.device("meta"):
            probe = factory()
    except (ArithmeticError, LookupError, TypeError, ValueError, RuntimeError, MemoryError) as err:
        raise CheckpointError(f"{run}/model.json describes no valid network ({err})") from None
    try:
        with safe_open(str(path), framework="pt") as fd:
            shapes = {k: tuple(fd.get_slice(k).get_shape()) for k in fd.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read the weights ({err})") from None
    want = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    if want != shapes:
        diff = sorted(set(want.items()) ^ set(shapes.items()))[:3]
        raise CheckpointError(f"{path}: weights do not fit the network model.json describes (e.g. {diff}); "
                              "the files belong to different runs or were modified")
    stored = sum(math.prod(s) for s in shapes.values())
    total = sum(t.numel() for t in (*probe.parameters(), *probe.buffers()))
    if total > 4 * stored + (1 << 24):
        raise CheckpointError(f"{run}/model.json describes a network of {total} numbers for {stored} stored "
                              "weights; the description is damaged")
    model = factory()
    load_weights(run, model, meta)
    return model


def load_weights(run_dir: str | os.PathLike, model: torch.nn.Module, meta: dict[str, Any] | None = None) -> None:
    """Load the safetensors weights into ``model`` (strict: every tensor must fit)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run = Path(run_dir)
    meta = read_meta(run) if meta is None else meta
    path = _checked_file(run, meta, "weights")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read the weights ({err})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the model in model.json ({str(err)[:300]})") from None


def load_train_state(run_dir: str | os.PathLike, meta: dict[str, Any]) -> dict[str, Any]:
    """The optimizer/scheduler/RNG state for resuming, loaded with ``weights_only=True``."""
    path = _checked_file(Path(run_dir), meta, "train_state")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise CheckpointError(f"{path}: cannot read the training state ({err})") from None
