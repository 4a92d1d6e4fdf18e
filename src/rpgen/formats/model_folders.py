"""Hugging Face model folders as checkpoints: read, check and write them.

A model folder is what ``PreTrainedModel.save_pretrained`` writes, and what ``transformers.Trainer``
saves as ``checkpoint-N/``: ``config.json`` and ``model.safetensors``, or shards
``model-0000k-of-0000n.safetensors`` named by ``model.safetensors.index.json``. A checkpoint folder
may hold such folders instead of checkpoint files; each then counts as one checkpoint, named by
its folder. Files beside the weights (``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``,
``trainer_state.json``, ``training_args.bin``, tokenizer files) are ignored and never opened.
A folder with only pickled weights (``pytorch_model.bin``) is refused with the way to convert it.

Every model folder must share the first one's ``config.json`` except :data:`IGNORED_FIELDS`, which
do not change what a weight means. Runs trained on model folders keep the first folder's
``config.json`` (and ``generation_config.json``, and the shard index when the zoo was sharded);
:mod:`rpgen.formats.output_forms` writes each generated model as a folder with those files, so
``AutoModel...from_pretrained(folder)`` loads it unchanged. Tied weights are saved once by
``save_pretrained``, so they are generated once and written once.

Nothing here imports transformers: the folders are JSON + safetensors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rpgen.errors import RpgenError
from rpgen.formats.json_files import copy_json_object, read_json_object

MODEL_CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")
SHARD = re.compile(r"model-\d+-of-\d+\.safetensors")
PICKLED_SHARD = re.compile(r"pytorch_model-\d+-of-\d+\.bin")

# config.json fields that may differ across a zoo: provenance and the dtype the folder was saved
# in (the tensors' own dtypes are checked key by key).
IGNORED_FIELDS = frozenset({"_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash",
                            "_attn_implementation_autoset"})


def is_model_dir(path: Path) -> bool:
    """True for a folder that looks like a saved transformers model (config.json or model weights)."""
    if not path.is_dir():
        return False
    if any((path / name).is_file() for name in (MODEL_CONFIG, SAFE_WEIGHTS, SAFE_INDEX, *PICKLED)):
        return True
    return any(SHARD.fullmatch(p.name) or PICKLED_SHARD.fullmatch(p.name) for p in path.iterdir())


def is_single_model(folder: Path) -> bool:
    """True when ``folder`` is itself one model folder: config.json beside model weights."""
    return (folder / MODEL_CONFIG).is_file() and any((folder / name).is_file()
                                                     for name in (SAFE_WEIGHTS, SAFE_INDEX, *PICKLED))


def weight_files(folder: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The safetensors files of a model folder, and its index's ``weight_map`` (key -> shard file
    name, in the index's order; None unless sharded).

    One-line errors: pickled weights only (with the conversion to run), a missing or broken
    index, shards the index names that are not there.
    """
    index = folder / SAFE_INDEX
    if index.is_file():
        weight_map = read_index(folder)
        files = list(dict.fromkeys(weight_map.values()))
        for name in files:
            if not (folder / name).is_file():
                raise RpgenError(f"{index}: names shard {name}, which is not in {folder}")
        return [folder / name for name in files], weight_map
    if (folder / SAFE_WEIGHTS).is_file():
        return [folder / SAFE_WEIGHTS], None
    if any((folder / name).is_file() for name in PICKLED) or any(PICKLED_SHARD.fullmatch(p.name)
                                                                 for p in folder.iterdir()):
        raise RpgenError(f"{folder}: holds only pickled weights (pytorch_model*.bin), which rpgen does not load; "
                         "convert it with transformers: AutoModel.from_pretrained(folder).save_pretrained(folder, "
                         "safe_serialization=True) writes model.safetensors")
    if any(SHARD.fullmatch(p.name) for p in folder.iterdir()):
        raise RpgenError(f"{folder}: has model-*-of-*.safetensors shards but no {SAFE_INDEX}")
    raise RpgenError(f"{folder}: no {SAFE_WEIGHTS} (a model folder holds {MODEL_CONFIG} and {SAFE_WEIGHTS}, "
                     f"or shards and {SAFE_INDEX})")


def read_index(folder: Path) -> dict[str, str]:
    """``weight_map`` of ``folder/model.safetensors.index.json``: key -> shard file name, in file order."""
    path = folder / SAFE_INDEX
    weight_map = read_json_object(path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(k, str) and isinstance(v, str) and Path(v).name == v for k, v in weight_map.items()):
        raise RpgenError(f"{path}: missing key weight_map (an object of tensor name -> shard file name)")
    return weight_map


def read_model_config(folder: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a model folder."""
    path = folder / MODEL_CONFIG
    if not path.is_file():
        raise RpgenError(f"{folder}: no {MODEL_CONFIG} (a model folder holds {MODEL_CONFIG} and {SAFE_WEIGHTS}, "
                         "as save_pretrained writes them)")
    return read_json_object(path)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if k not in IGNORED_FIELDS}
    if isinstance(out.get("architectures"), list):
        out["architectures"] = sorted(map(str, out["architectures"]))
    return out


def check_model_folders(folders: Sequence[Path]) -> dict[str, Any]:
    """Check that every folder is a complete model folder with the first one's config; return it."""
    reference = _comparable(read_model_config(folders[0]))
    for folder in folders:
        weight_files(folder)
        config = _comparable(read_model_config(folder))
        for field in sorted(set(reference) | set(config)):
            if config.get(field) != reference.get(field):
                raise RpgenError(f"{folder}: {MODEL_CONFIG} has {field} = {json.dumps(config.get(field))}, but "
                                 f"{folders[0]} has {json.dumps(reference.get(field))}; all model folders must share "
                                 f"their config (except {', '.join(sorted(IGNORED_FIELDS))})")
    return reference


def keep_model_files(source_folder: Path, dest_folder: Path) -> None:
    """Copy what generated folders need from the zoo's first folder into a run directory:
    config.json, generation_config.json when present, and the shard index when sharded."""
    for name in (MODEL_CONFIG, GENERATION_CONFIG, SAFE_INDEX):
        if (source_folder / name).is_file() or (source_folder / name).is_symlink():
            copy_json_object(source_folder / name, dest_folder / name)
