"""How a value read from TOML or ``--set`` is checked against a config field's type hint.

Errors name the key and say what the field accepts: ``config sample.temperature = 'hot' must be
a number or 'auto'``.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

from rpgen.errors import RpgenError


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field type ``hint``; convert where lossless."""
    origin = get_origin(hint)
    if origin is Literal:
        if value not in get_args(hint):
            choices = ", ".join(repr(a) for a in get_args(hint))
            raise RpgenError(f"config {key} = {value!r} is not one of {choices}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise RpgenError(f"config {key} = {value!r} must be a list")
        (item,) = get_args(hint)[:1]
        return tuple(coerce(key, v, item) for v in value)
    if origin in (typing.Union, types.UnionType):  # the first member the value fits, e.g. a number or "auto"
        for member in get_args(hint):
            try:
                return coerce(key, value, member)
            except RpgenError:
                pass
        raise RpgenError(f"config {key} = {value!r} must be {' or '.join(describe(m) for m in get_args(hint))}")
    if hint is bool:
        if not isinstance(value, bool):
            raise RpgenError(f"config {key} = {value!r} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RpgenError(f"config {key} = {value!r} must be an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RpgenError(f"config {key} = {value!r} must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise RpgenError(f"config {key} = {value!r} must be a string")
        return value
    raise TypeError(f"unsupported config type {hint}")  # pragma: no cover


def describe(hint: Any) -> str:
    """What a value of a config field type looks like, for errors: 'a number', "'auto'"."""
    if get_origin(hint) is Literal:
        return " or ".join(repr(a) for a in get_args(hint))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))
