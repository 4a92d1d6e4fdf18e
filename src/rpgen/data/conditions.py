"""Condition vectors: what a conditional generator is asked to produce (e.g. a task description).

A checkpoint folder may hold ``conditions.json``, mapping every checkpoint file name to a list of
numbers, all of the same length ``C``::

    {"a.safetensors": [0, 1, 1, 0], "b.safetensors": [1, 0, 0, 1]}

``rpgen train`` then builds a *conditional* generator: a small learned encoder maps each vector to
the generator's input in place of the permutation state, and ``rpgen generate --condition`` asks for
models for any vector, seen in training or not. When every training value is 0 or 1 the run is
*binary*, and generation refuses non-binary conditions.

On the command line a condition is a bit string (``0101000011``) or comma-separated numbers
(``0.1,0.5,2``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from rpgen.errors import RpgenError
from rpgen.formats.json_files import read_json_object

CONDITIONS_FILE = "conditions.json"


def read_conditions(folder: str | Path, checkpoint_names: Sequence[str]) -> torch.Tensor | None:
    """(K, C) float32 conditions of the checkpoints named ``checkpoint_names`` (in that order),
    from ``folder/conditions.json``; None when the folder has no such file.

    Every checkpoint must be listed, every listed name must be a checkpoint, and every value a
    non-empty list of finite numbers of one common length.
    """
    path = Path(folder) / CONDITIONS_FILE
    if not path.is_file():
        return None
    data = read_json_object(path, expected="a JSON object mapping checkpoint file -> list of numbers")
    names = set(checkpoint_names)
    for name in data:
        if name not in names:
            raise RpgenError(f"{path}: names {name!r}, which is not a checkpoint file in {Path(folder)}")
    rows = []
    for name in checkpoint_names:
        if name not in data:
            raise RpgenError(f"{path}: checkpoint {name!r} has no condition (every checkpoint must be listed)")
        rows.append(_vector(data[name], where=f"{path}: {name!r}"))
    length = len(rows[0])
    for name, row in zip(checkpoint_names, rows):
        if len(row) != length:
            raise RpgenError(f"{path}: {name!r} has a condition of length {len(row)}, "
                             f"expected {length} (as {checkpoint_names[0]!r})")
    return torch.tensor(rows, dtype=torch.float32)


def write_conditions(path: str | Path, conditions: dict[str, Sequence[float]]) -> None:
    """Write a ``conditions.json`` (file name -> vector); the caller makes the write atomic."""
    Path(path).write_text(json.dumps({k: [float(v) for v in vec] for k, vec in conditions.items()}) + "\n",
                          encoding="utf-8")


def is_binary(conditions: torch.Tensor) -> bool:
    """True when every value is exactly 0 or 1."""
    return bool(((conditions == 0) | (conditions == 1)).all())


def parse_condition(text: str) -> list[float]:
    """``"0101"`` -> [0, 1, 0, 1]; ``"0.1,0.5"`` -> [0.1, 0.5]."""
    text = text.strip()
    if text and set(text) <= {"0", "1"}:
        return [float(c) for c in text]
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise RpgenError(f"--condition {text!r}: expected a bit string like 0101000011 or comma-separated "
                             f"numbers like 0.1,0.5; {part.strip()!r} is not a number") from None
        if not math.isfinite(value):
            raise RpgenError(f"--condition {text!r}: {part.strip()!r} is not a finite number")
        values.append(value)
    return values


def check_conditions(conditions: Sequence[Sequence[float]], *, dim: int, binary: bool) -> None:
    """Raise unless every condition has length ``dim`` (and only 0/1 values when ``binary``)."""
    for vec in conditions:
        shown = _show(vec)
        if len(vec) != dim:
            raise RpgenError(f"condition {shown} has length {len(vec)}; this run's conditions have length {dim}")
        if binary and any(v not in (0.0, 1.0) for v in vec):
            raise RpgenError(f"condition {shown} is not binary; this run was trained on 0/1 conditions only")


def _vector(value: object, *, where: str) -> list[float]:
    if not isinstance(value, list) or not value:
        raise RpgenError(f"{where} must map to a non-empty list of numbers, got {_short(value)}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise RpgenError(f"{where} holds {v!r}, not a finite number")
        out.append(float(v))
    return out


def _show(vec: Sequence[float]) -> str:
    if all(v in (0.0, 1.0) for v in vec):
        return "".join(str(int(v)) for v in vec)
    return ",".join(f"{v:g}" for v in vec)


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
