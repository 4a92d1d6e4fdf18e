"""peft adapter folders as checkpoints: read, check and write them.

A peft adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` (what
``PeftModel.save_pretrained`` writes). A checkpoint folder may hold such folders instead of
checkpoint files; each then counts as one checkpoint, named by its folder, whose state_dict is
its ``adapter_model.safetensors``. Every adapter must share the settings that give its weights
their meaning (:data:`MATCHING_FIELDS`: base model, method, rank, targets, ...). Generated
models of an adapter run are written as adapter folders with the training adapters' config
(:mod:`rpgen.formats.output_forms`), so ``PeftModel.from_pretrained(base, folder)`` loads them unchanged.

Nothing here imports peft: the folders are JSON + safetensors.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rpgen.errors import RpgenError
from rpgen.formats.json_files import copy_json_object, read_json_object

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLED_WEIGHTS = "adapter_model.bin"

# adapter_config.json fields that must agree across a zoo: they fix what each weight means.
MATCHING_FIELDS = (
    "peft_type", "base_model_name_or_path", "task_type", "r", "lora_alpha", "use_dora", "use_rslora",
    "target_modules", "modules_to_save", "layers_to_transform", "rank_pattern", "alpha_pattern",
    "fan_in_fan_out", "bias",
)


def is_adapter_dir(path: Path) -> bool:
    """True for a folder that looks like a peft adapter (has adapter_config.json or adapter weights)."""
    return path.is_dir() and any((path / name).is_file() for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS,
                                                                       PICKLED_WEIGHTS))


def weights_file(folder: Path) -> Path:
    """``folder/adapter_model.safetensors``, or a one-line error saying what the folder lacks."""
    path = folder / ADAPTER_WEIGHTS
    if path.is_file():
        return path
    if (folder / PICKLED_WEIGHTS).is_file():
        raise RpgenError(f"{folder}: holds {PICKLED_WEIGHTS} (pickle), which rpgen does not load; "
                         f"save the adapter with safe_serialization=True to get {ADAPTER_WEIGHTS}")
    raise RpgenError(f"{folder}: no {ADAPTER_WEIGHTS} (a peft adapter folder holds {ADAPTER_CONFIG} "
                     f"and {ADAPTER_WEIGHTS})")


def read_adapter_config(folder: Path) -> dict[str, Any]:
    """The parsed ``adapter_config.json`` of an adapter folder."""
    path = folder / ADAPTER_CONFIG
    if not path.is_file():
        raise RpgenError(f"{folder}: no {ADAPTER_CONFIG} (a peft adapter folder holds {ADAPTER_CONFIG} "
                         f"and {ADAPTER_WEIGHTS})")
    return read_json_object(path)


def _comparable(field: str, value: Any) -> Any:
    """A field's value in a form where equal settings compare equal (target lists are sets)."""
    if field in ("target_modules", "modules_to_save") and isinstance(value, list):
        return sorted(value)
    return value


def check_adapter_folders(folders: Sequence[Path]) -> dict[str, Any]:
    """Check that every folder is a complete adapter with the first one's settings; return its config."""
    reference = read_adapter_config(folders[0])
    for folder in folders:
        config = reference if folder == folders[0] else read_adapter_config(folder)
        for field in MATCHING_FIELDS:
            mine, theirs = _comparable(field, config.get(field)), _comparable(field, reference.get(field))
            if mine != theirs:
                raise RpgenError(f"{folder}: {ADAPTER_CONFIG} has {field} = {json.dumps(mine)}, but "
                                 f"{folders[0]} has {json.dumps(theirs)}; all adapters must share base model, "
                                 "method, rank and targets")
        weights_file(folder)
    return reference


def copy_adapter_config(source_folder: Path, dest_folder: Path) -> None:
    """Copy ``adapter_config.json`` from one folder to another (the run keeps the zoo's config)."""
    copy_json_object(source_folder / ADAPTER_CONFIG, dest_folder / ADAPTER_CONFIG)
