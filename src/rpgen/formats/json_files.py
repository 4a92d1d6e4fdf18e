"""JSON files of a checkpoint folder or run directory, read with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rpgen.errors import RpgenError


def read_json_object(path: Path, *, expected: str = "a JSON object") -> dict[str, Any]:
    """The JSON object in ``path``; one-line errors for invalid JSON and for any other JSON value."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RpgenError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RpgenError(f"{path}: must be {expected}")
    return data
