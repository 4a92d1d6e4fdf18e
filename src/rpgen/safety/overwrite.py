"""Where a command may write: never over its own input, and ``--overwrite`` replaces only rpgen's outputs.

An rpgen output is a folder that rpgen wrote, recognised by the files it always writes
(:data:`MARKERS`), a checkpoint zoo of ``rpgen collect`` (every file a safetensors file whose
metadata names its zoo), or a quickstart folder (only :data:`QUICKSTART_ENTRIES`, each one an
rpgen output). An empty folder holds nothing to lose and may be replaced too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from rpgen.errors import RpgenError
from rpgen.safety.locks import other_holder

MARKERS: tuple[tuple[str, ...], ...] = (
    ("config.toml", "run.json"),  # a run directory (rpgen.run_dir: rpgen train)
    ("generation.json",),  # generated models (rpgen generate)
    ("zoo.json",),  # a finished zoo of rpgen collect (digits-tasks, minilm-sentiment)
    ("collect.json",),  # an interrupted digits-tasks collect
    ("align.json",),  # aligned checkpoints (rpgen.align.align_checkpoints)
)
QUICKSTART_ENTRIES = frozenset({"checkpoints", "run", "generated", "report.md"})


def is_rpgen_output(path: str | os.PathLike) -> bool:
    """True if ``path`` is a folder rpgen wrote (or an empty one), which ``--overwrite`` may replace."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    if any(all((path / name).is_file() for name in marker) for marker in MARKERS):
        return True
    entries = [p for p in path.iterdir() if not _is_rpgen_temp(p)]
    if not entries:
        return True
    if {p.name for p in entries} <= QUICKSTART_ENTRIES:
        return all(p.is_file() or is_rpgen_output(p) for p in entries)
    return all(_is_zoo_checkpoint(p) for p in entries)


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
        raise RpgenError(f"--overwrite: {path} was not written by rpgen (not a run, generated models, zoo or "
                         "quickstart folder); refusing to delete it, choose another --out")


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


def _is_zoo_checkpoint(path: Path) -> bool:
    """A safetensors file whose metadata names the zoo that wrote it (``{"zoo": ...}``, rpgen.zoo)."""
    if not (path.is_file() and path.suffix == ".safetensors"):
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as opened:  # the header only
            return "zoo" in (opened.metadata() or {})
    except Exception:  # not a readable safetensors file: not one rpgen wrote
        return False
