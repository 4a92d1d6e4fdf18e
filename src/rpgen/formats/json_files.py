"""JSON files of a checkpoint folder or run directory, read with one-line errors.

A side file is read only when it is a regular file inside its folder (a symbolic link is
refused: it could point anywhere on the machine), at most :data:`MAX_JSON_BYTES` long and parsed
in full; it is written anew from the parsed value (:func:`copy_json_object`), never copied byte
for byte, so an output holds nothing but the JSON rpgen read and ordinary permissions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rpgen.errors import RpgenError

MAX_JSON_BYTES = 64 << 20  # a side file (config.json, runs.json, conditions.json) is kilobytes; a shard index MBs


def read_json_object(path: Path, *, expected: str = "a JSON object") -> dict[str, Any]:
    """The JSON object in ``path``; one-line errors for a link, an oversized or special file, invalid
    JSON, nesting too deep to parse and any other JSON value."""
    path = Path(path)
    if path.is_symlink():
        raise RpgenError(f"{path}: is a symbolic link; rpgen reads side files only from the folder itself")
    if path.exists() and not path.is_file():  # checked before opening: opening a named pipe would block
        raise RpgenError(f"{path}: not a regular file")
    try:
        with path.open("rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_JSON_BYTES:
                raise RpgenError(f"{path}: larger than {MAX_JSON_BYTES >> 20} MB")
            data = json.loads(f.read(MAX_JSON_BYTES + 1).decode("utf-8"))
    except OSError as exc:
        raise RpgenError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RpgenError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise RpgenError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise RpgenError(f"{path}: must be {expected}")
    return data


def copy_json_object(source: Path, dest: Path) -> None:
    """Write the JSON object of ``source`` to ``dest`` (checked as :func:`read_json_object` reads it)."""
    data = read_json_object(source)
    try:
        text = json.dumps(data, indent=2)
    except (RecursionError, ValueError):
        raise RpgenError(f"{source}: not valid JSON (nested too deeply)") from None
    Path(dest).write_text(text + "\n", encoding="utf-8")
