"""The form generated models take: the form of the training checkpoints.

A run records the form when it starts (:func:`keep_form`: the files a generated model needs
beside its weights, copied from the first checkpoint into the run directory) and
:func:`output_form` rebuilds it from the run directory at generation time:

- :class:`FileForm`: ``NNNN.safetensors`` (checkpoint files);
- :class:`AdapterForm`: ``NNNN/`` with ``adapter_config.json`` + ``adapter_model.safetensors``
  (peft adapter folders, :mod:`rpgen.formats.adapter_folders`);
- :class:`ModelFolderForm`: ``NNNN/`` with ``config.json`` (+ ``generation_config.json``) and
  ``model.safetensors``, or the zoo's shards and ``model.safetensors.index.json`` with the same
  key-to-shard assignment (transformers model folders, :mod:`rpgen.formats.model_folders`).

Each form's :meth:`~OutputForm.open` makes one model's entry and says which file each tensor
goes to; :class:`rpgen.generation.ModelWriter` streams the tensors into those files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import rpgen.formats.model_folders as hf
from rpgen.formats.adapter_folders import ADAPTER_CONFIG, ADAPTER_WEIGHTS, copy_adapter_config, is_adapter_dir
from rpgen.formats.json_files import copy_json_object


@dataclass(frozen=True)
class Slot:
    """One generated model's entry: its name in the output folder, the file of each tensor, and
    metadata for every file."""

    name: str
    files: dict[str, Path]
    metadata: dict[str, str] = field(default_factory=dict)


class OutputForm(Protocol):
    def open(self, folder: Path, index: int, names: Sequence[str]) -> Slot:
        """Create generated model ``index``'s entry in ``folder`` (its side files included)."""
        ...


@dataclass(frozen=True)
class FileForm:
    """``NNNN.safetensors``: one file holding every tensor."""

    def open(self, folder: Path, index: int, names: Sequence[str]) -> Slot:
        name = f"{index:04d}.safetensors"
        return Slot(name, dict.fromkeys(names, folder / name))


@dataclass(frozen=True)
class AdapterForm:
    """A peft adapter folder ``NNNN/`` with the run's ``adapter_config.json``."""

    run_dir: Path

    def open(self, folder: Path, index: int, names: Sequence[str]) -> Slot:
        entry = folder / f"{index:04d}"
        entry.mkdir()
        copy_json_object(self.run_dir / ADAPTER_CONFIG, entry / ADAPTER_CONFIG)
        return Slot(entry.name, dict.fromkeys(names, entry / ADAPTER_WEIGHTS))


@dataclass(frozen=True)
class ModelFolderForm:
    """A transformers model folder ``NNNN/`` with the run's config files, sharded like the zoo
    when the run kept a shard index. ``format: pt`` in each file's metadata, as transformers writes it."""

    run_dir: Path

    def open(self, folder: Path, index: int, names: Sequence[str]) -> Slot:
        entry = folder / f"{index:04d}"
        entry.mkdir()
        hf.keep_model_files(self.run_dir, entry)
        if (self.run_dir / hf.SAFE_INDEX).is_file():
            weight_map = hf.read_index(self.run_dir)
            files = {n: entry / weight_map[n] for n in names}
        else:
            files = dict.fromkeys(names, entry / hf.SAFE_WEIGHTS)
        return Slot(entry.name, files, {"format": "pt"})


def keep_form(first_checkpoint: Path, run_dir: Path) -> None:
    """Copy into ``run_dir`` what generated models need to take the checkpoints' form."""
    if is_adapter_dir(first_checkpoint):
        copy_adapter_config(first_checkpoint, run_dir)
    elif hf.is_model_dir(first_checkpoint):
        hf.keep_model_files(first_checkpoint, run_dir)


def output_form(run_dir: Path) -> OutputForm:
    """The form of a run's generated models, from the files :func:`keep_form` left in ``run_dir``."""
    if (run_dir / ADAPTER_CONFIG).is_file():
        return AdapterForm(run_dir)
    if (run_dir / hf.MODEL_CONFIG).is_file():
        return ModelFolderForm(run_dir)
    return FileForm()
