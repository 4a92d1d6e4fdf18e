"""Where a command may write: never over its own input, and ``--overwrite`` replaces only rpgen's outputs.

Every folder rpgen writes holds a provenance file (:data:`PROVENANCE`, written by :func:`mark`):
the entries it held when rpgen finished writing it and the names rpgen may add to it later (a
run's states, an evaluation's report). ``--overwrite`` replaces a folder only when it has that
file and holds nothing else: a file of the user's beside rpgen's outputs keeps the whole folder.
An empty folder holds nothing to lose and may be replaced too.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from rpgen.errors import RpgenError
from rpgen.safety.locks import other_holder

PROVENANCE = ".rpgen"
_MAX_PROVENANCE_BYTES = 1 << 20


def mark(folder: str | os.PathLike, *, later: Sequence[str] = ()) -> None:
    """Write ``folder``'s provenance file: its entries now, and ``later`` (names or glob patterns)
    that rpgen may add after it was written (its temporary names are always allowed)."""
    folder = Path(folder)
    entries = sorted(p.name for p in folder.iterdir() if p.name != PROVENANCE)
    record = {"written_by": "rpgen", "entries": entries, "later": list(later)}
    (folder / PROVENANCE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def is_rpgen_output(path: str | os.PathLike) -> bool:
    """True if ``path`` is a folder rpgen wrote and holds nothing else (or an empty one), which
    ``--overwrite`` may replace."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    entries = [p for p in path.iterdir() if p.name != PROVENANCE]
    if not entries and not (path / PROVENANCE).exists():
        return True
    allowed = _provenance(path)
    if allowed is None:
        return False
    return all(_is_rpgen_temp(p) or (any(fnmatch.fnmatchcase(p.name, a) for a in allowed)
                                     and not (p.is_dir() and (p / PROVENANCE).exists() and not is_rpgen_output(p)))
               for p in entries)  # an rpgen output inside (a quickstart's run) is checked in turn


def _provenance(path: Path) -> list[str] | None:
    """The names the provenance file of ``path`` allows, or None when it has none (or a damaged one)."""
    record = path / PROVENANCE
    try:
        if record.is_symlink() or not record.is_file() or record.stat().st_size > _MAX_PROVENANCE_BYTES:
            return None
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("written_by") != "rpgen":
        return None
    entries, later = data.get("entries"), data.get("later")
    if not all(isinstance(x, list) and all(isinstance(n, str) for n in x) for x in (entries, later)):
        return None
    return [*later, *map(_literal, entries)]


def _literal(name: str) -> str:
    """A glob pattern that matches ``name`` only."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def check_replaceable(path: str | os.PathLike) -> None:
    """Raise unless ``--overwrite`` may delete ``path`` (it is an rpgen output)."""
    path = Path(path)
    if path.is_symlink():
        raise RpgenError(f"--overwrite: {path} is a symbolic link; name the folder itself")
    holder = other_holder(path)
    if holder is not None:
        raise RpgenError(f"--overwrite: {path} is in use by {holder}; wait for it to finish or stop it")
    if not path.is_dir():
        raise RpgenError(f"output path {path} exists and is not a directory")
    if not is_rpgen_output(path):
        raise RpgenError(f"--overwrite: {path} was not written by rpgen, or holds files rpgen did not write "
                         f"(no {PROVENANCE} file lists them); refusing to delete it, choose another --out")


def check_not_overlapping(out: str | os.PathLike, inputs: Mapping[str, str | os.PathLike]) -> None:
    """Raise if ``out`` is, contains or sits inside one of ``inputs`` ({"checkpoint folder": path, ...}).

    Paths are compared after resolving symbolic links and ``..``.
    """
    target = Path(out).resolve()
    for what, path in inputs.items():
        source = Path(path).resolve()
        if target == source:
            raise RpgenError(f"--out {out} is the {what} {path}; write the output somewhere else")
        if source in target.parents:
            raise RpgenError(f"--out {out} is inside the {what} {path}; write the output somewhere else")
        if target in source.parents:
            raise RpgenError(f"--out {out} contains the {what} {path}; write the output somewhere else")


def _is_rpgen_temp(path: Path) -> bool:
    """rpgen's own temporary names: ``.NAME.XXXX.partial`` folders, ``.NAME.XXXX.tmp`` files, ``.NAME.lock``."""
    return path.name.startswith(".") and path.name.endswith((".partial", ".tmp", ".lock"))
