"""Dataclasses to JSON and back, by their type hints: no hand-written `d["key"]` parsing.

    to_json(cfg)              -> dicts, lists, strings and numbers (Paths as strings, tuples as lists)
    from_json(CLIPConfig, d)  -> the dataclass, nested ones and tuples rebuilt; unknown keys refused

A file written by a newer openwit with a setting this one does not know fails loudly, naming the
key, instead of training without it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal


def to_json(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        back = {v: k for k, v in getattr(obj, "JSON_NAMES", {}).items()}
        return {back.get(f.name, f.name): to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple | list):
        return [to_json(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    return obj


def from_json(cls: type, data: Any) -> Any:
    """`cls` from a mapping. A class whose files spell some keys differently says so in a
    `JSON_NAMES` class attribute ({file key: field name}, e.g. open_clip's `vision_cfg`)."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    names = getattr(cls, "JSON_NAMES", {})
    data = {names.get(k, k): v for k, v in data.items()}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {unknown}")
    try:
        return cls(**{k: _convert(hints[k], v) for k, v in data.items()})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{cls.__name__}: {e}") from None


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise ValueError(f"{value!r} fits none of {tp} ({'; '.join(errors)})")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{value!r} is not one of {args}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v) for v in value)
        if len(args) != len(value):
            raise ValueError(f"expected {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v) for a, v in zip(args, value))
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping, got {value!r}")
        return {_convert(args[0], k): _convert(args[1], v) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_json(tp, value)
    if tp is Path:
        if not isinstance(value, str | Path):
            raise TypeError(f"expected a path, got {value!r}")
        return Path(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    if tp in (int, bool, str) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise TypeError(f"expected {tp.__name__}, got {value!r}")
    return value
