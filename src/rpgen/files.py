"""Small file helpers: outputs appear complete or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rpgen.errors import RpgenError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and move it to ``path`` when the block succeeds.

    Refuses an existing ``path`` unless ``overwrite``; on failure nothing is left at ``path``.
    """
    path = Path(path)
    check_output_dir(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_output_dir(path: Path, *, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise RpgenError(f"output directory {path} already exists (pass --overwrite to replace it)")
    if path.exists() and not path.is_dir():
        raise RpgenError(f"output path {path} exists and is not a directory")


def read_json_object(path: Path, *, expected: str = "a JSON object") -> dict[str, Any]:
    """The JSON object in ``path``; one-line errors for invalid JSON and for any other JSON value."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RpgenError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RpgenError(f"{path}: must be {expected}")
    return data
