"""Frozen dataclass configurations to and from JSON, with the values checked on the way in.

Each model family declares its own configs (:mod:`ase_ldm.ldm.config`, :mod:`ase_ldm.sync.config`);
this module turns a dict read from JSON into such a (nested) dataclass, refusing unknown keys and
values of the wrong type with an :class:`~ase_ldm.errors.InvalidInput` that names the setting.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import asdict
from typing import Any, TypeVar

from ..errors import InvalidInput

__all__ = ["from_dict", "to_json"]

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a (nested) config dataclass from a dict, refusing unknown keys and wrong types."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(cls)
    if not isinstance(data, dict):
        raise InvalidInput(f"{cls.__name__}: expected a JSON object of settings, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise InvalidInput(f"unknown {cls.__name__} settings: {sorted(unknown)}; known: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {key: _checked(cls.__name__, key, hints[key], value) for key, value in data.items()}
    return cls(**kwargs)


def _checked(owner: str, key: str, hint: Any, value: Any) -> Any:
    """``value`` converted to ``hint`` (lists to tuples, ints to floats, dicts to dataclasses)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _checked(owner, key, inner[0], value)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InvalidInput(f"{owner}.{key} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_checked(owner, key, args[0], v) for v in value)
        if len(value) != len(args):
            raise InvalidInput(f"{owner}.{key} must have {len(args)} entries, got {value!r}")
        return tuple(_checked(owner, key, a, v) for a, v in zip(args, value))
    if hint is bool:
        if not isinstance(value, bool):
            raise InvalidInput(f"{owner}.{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{owner}.{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"{owner}.{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise InvalidInput(f"{owner}.{key} must be a string, got {value!r}")
        return value
    return value


def to_json(config: Any) -> str:
    """The config as indented JSON (tuples become lists; :func:`from_dict` restores them)."""
    return json.dumps(asdict(config), indent=1)
