"""Resolve a ``path/to/file.py:name`` or ``module:name`` spec to the Python object it names.

Shared by the evaluator contract (:mod:`rpgen.evaluation.evaluator`) and the model factories of
:mod:`rpgen.align`. ``what`` names the role in errors ("evaluator", "model factory"); every
problem is one :class:`RpgenError` line naming the spec.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rpgen.errors import RpgenError, first_line


def resolve_callable(spec: str, *, what: str) -> Callable[..., Any]:
    """The callable that ``path/to/file.py:function`` or ``module:function`` names."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise RpgenError(f"{what} spec {spec!r} must look like path/to/file.py:function or module:function")
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _import_file(Path(target), spec=spec, what=what)
    else:
        module = _import_module(target, spec=spec, what=what)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RpgenError(f"{what} {spec!r}: {target} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RpgenError(f"{what} {spec!r}: {attr!r} is a {type(obj).__name__}, not a function")
    return obj


def _import_file(path: Path, *, spec: str, what: str) -> Any:
    if not path.is_file():
        raise RpgenError(f"{what} {spec!r}: file {path} not found")
    name = f"rpgen_{what.replace(' ', '_')}_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise RpgenError(f"{what} {spec!r}: cannot load {path} as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise RpgenError(f"{what} {spec!r}: importing {path} raised {first_line(exc)}") from None
    return module


def _import_module(name: str, *, spec: str, what: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise RpgenError(f"{what} {spec!r}: module {name!r} is not importable ({exc})") from None
    except Exception as exc:
        raise RpgenError(f"{what} {spec!r}: importing module {name!r} raised {first_line(exc)}") from None
