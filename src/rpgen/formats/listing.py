"""Listing a checkpoint folder: which entries are checkpoints, in which order.

A checkpoint folder holds ``*.safetensors`` files (``*.pt``/``*.pth`` are read with
``weights_only=True``), or peft adapter folders (:mod:`rpgen.formats.adapter_folders`), or
transformers model folders as ``save_pretrained`` and ``Trainer`` write them
(:mod:`rpgen.formats.model_folders`); one kind per folder. A folder entry counts as one checkpoint
named by the folder. Names sort naturally (``checkpoint-500`` before ``checkpoint-1000``).
:class:`rpgen.data.CheckpointSet` lists a zoo folder once and hands the paths on.
"""

from __future__ import annotations

import re
from pathlib import Path

import rpgen.formats.model_folders as hf
from rpgen.errors import RpgenError
from rpgen.formats.adapter_folders import check_adapter_folders, is_adapter_dir

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")


def natural_key(name: str) -> tuple[str, str]:
    """Sort key that compares digit runs by value (``h.2`` < ``h.10``, ``checkpoint-500`` <
    ``checkpoint-1000``) and agrees with a plain string sort when no two numbers differ in width."""
    return re.sub(r"\d+", lambda m: m.group().rjust(24, "0"), name), name


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoint files directly in ``folder``, or its peft adapter folders, or its transformers
    model folders, in natural order of their names.

    Folders are checked to be complete and to share their config (adapters: base model, rank and
    targets; model folders: config.json).
    """
    folder = Path(folder)
    if not folder.exists():
        raise RpgenError(f"checkpoint folder {folder} does not exist")
    if not folder.is_dir():
        raise RpgenError(f"checkpoint folder {folder} is not a directory")
    entries = sorted(folder.iterdir(), key=lambda p: natural_key(p.name))
    kinds = {"checkpoint files": [p for p in entries if _is_checkpoint_file(p)],
             "peft adapter folders": [p for p in entries if is_adapter_dir(p)],
             "model folders": [p for p in entries if hf.is_model_dir(p) and not is_adapter_dir(p)]}
    if hf.is_single_model(folder) and not kinds["model folders"]:
        raise RpgenError(f"{folder} is one model folder ({hf.MODEL_CONFIG} + weights); give rpgen the folder that "
                         "holds several, e.g. a Trainer output_dir with its checkpoint-N/ folders")
    found = [(kind, paths) for kind, paths in kinds.items() if paths]
    if len(found) > 1:
        (kind_a, a), (kind_b, b) = found[:2]
        raise RpgenError(f"{folder} mixes {kind_a} ({a[0].name}, ...) and {kind_b} ({b[0].name}, ...); "
                         "keep one kind per folder (a model saved at the top of a Trainer output_dir belongs in its "
                         "own folder)")
    if not found:
        raise RpgenError(
            f"no checkpoint files in {folder} (expected {', '.join('*' + s for s in CHECKPOINT_SUFFIXES)}, "
            "peft adapter folders, or model folders as save_pretrained writes them)"
        )
    kind, paths = found[0]
    if kind == "peft adapter folders":
        check_adapter_folders(paths)
    elif kind == "model folders":
        hf.check_model_folders(paths)
    return paths


def _is_checkpoint_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES


def is_checkpoint(path: Path) -> bool:
    """True for what :func:`list_checkpoints` counts: a checkpoint file, a peft adapter folder or a
    model folder."""
    return _is_checkpoint_file(path) or is_adapter_dir(path) or hf.is_model_dir(path)
