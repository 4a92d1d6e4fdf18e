"""One checkpoint's tensors: load, read lazily, validate and save state_dicts.

A checkpoint is a file (``*.safetensors``; ``*.pt``/``*.pth`` read with ``weights_only=True``),
a peft adapter folder or a transformers model folder (single or sharded safetensors), each a full
state_dict. Every problem is raised as :class:`RpgenError` naming the file and the key at fault.

Key order (:func:`tensor_order`, the order tokens follow): ``"model"`` (default) is the order
the model defines as far as the files tell it: ``.pt``/``.pth`` files keep the order they were
saved in (the modules' order); a sharded model folder keeps its index file's order when that is
not just sorted; otherwise (safetensors store tensors by name) a numeric-aware natural sort of
the key path, so ``h.2`` comes before ``h.10``. ``"name"`` is a plain sort by key name
(``h.10`` before ``h.2``), for comparison and for runs trained with it.

:class:`LazyCheckpoint` is the scalable path used by training: it reads only the headers
(structure checks cost no tensor reads) and reads a tensor, or a range of its elements, when
asked. Memory then does not grow with the number of checkpoints or their size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file

import rpgen.formats.model_folders as hf
from rpgen.errors import RpgenError, first_line
from rpgen.formats.adapter_folders import is_adapter_dir, weights_file
from rpgen.formats.dtypes import dtype_name
from rpgen.formats.listing import natural_key
from rpgen.formats.safetensors_io import SafetensorsReader
from rpgen.safety.atomic import atomic_path

TensorOrder = Literal["model", "name"]

# key -> (shape, dtype): everything two compatible state_dicts must share.
Structure = dict[str, tuple[tuple[int, ...], torch.dtype]]


def tensor_order(names: Iterable[str], *, order: TensorOrder = "model", recorded: Sequence[str] | None = None
                 ) -> list[str]:
    """The order of a checkpoint's tensors (see the module docstring).

    ``recorded``: an order the files define (a ``.pt`` file's saved order, a model folder's index);
    under ``"model"`` it is kept unless it is just a plain sort, which says nothing about the model.
    """
    names = list(names)
    if order == "name":
        return sorted(names)
    if recorded is not None and list(recorded) != sorted(recorded):
        return list(recorded)
    return sorted(names, key=natural_key)


def _files_of(path: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The files holding a checkpoint's tensors (the path itself, an adapter folder's weights, a
    model folder's weights or shards), and a sharded folder's index (key -> shard file name)."""
    if not path.is_dir():
        return [path], None
    if is_adapter_dir(path):
        return [weights_file(path)], None
    return hf.weight_files(path)


def load_state_dict(path: str | Path, *, order: TensorOrder = "model") -> dict[str, torch.Tensor]:
    """Load one checkpoint (file, adapter folder or model folder) onto the CPU without unpickling
    arbitrary objects; keys in :func:`tensor_order`."""
    path = Path(path)
    files, weight_map = _files_of(path)
    tensors: dict[str, torch.Tensor] = {}
    recorded = None if weight_map is None else list(weight_map)
    for file in files:
        where = path if file == path else file
        try:
            if file.suffix.lower() == ".safetensors":
                part = load_file(file, device="cpu")
            else:
                part = torch.load(file, weights_only=True, map_location="cpu")
                recorded = list(_checked_mapping(part, where))  # the order it was saved in
        except RpgenError:
            raise
        except Exception as exc:  # any reader failure is the file's fault
            reason = first_line(exc, typed=False, limit=160)
            raise RpgenError(f"{where}: not a readable checkpoint ({reason})") from None
        part = _checked_mapping(part, where)
        _check_shard(path, file, part, weight_map)
        tensors.update(part)
    if weight_map is not None:
        _check_index_complete(path, weight_map, tensors)
    return {k: tensors[k] for k in tensor_order(tensors, order=order, recorded=recorded)}


def _check_shard(folder: Path, file: Path, names: Iterable[str], weight_map: Mapping[str, str] | None) -> None:
    """Every tensor of a shard is one the index assigns to that shard."""
    if weight_map is None:
        return
    for name in names:
        if weight_map.get(name) != file.name:
            where = "names no shard for it" if name not in weight_map else f"puts it in {weight_map[name]}"
            raise RpgenError(f"{folder / hf.SAFE_INDEX}: {file.name} holds key {name!r}, but the index {where}")


def _check_index_complete(folder: Path, weight_map: Mapping[str, str], tensors: Mapping[str, object]) -> None:
    missing = next((k for k in weight_map if k not in tensors), None)
    if missing is not None:
        raise RpgenError(f"{folder / hf.SAFE_INDEX}: names key {missing!r}, which {weight_map[missing]} does not hold")


def _checked_mapping(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The state_dict inside a loaded object (plain, or under a "state_dict" key)."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        kind = type(obj).__name__
        raise RpgenError(f"{path}: not a readable checkpoint (holds a {kind}, not a dict of tensors)")
    if not obj:
        raise RpgenError(f"{path}: not a readable checkpoint (no tensors)")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise RpgenError(f"{path}: not a readable checkpoint (key {key!r} is not a string)")
        if not isinstance(value, torch.Tensor):
            raise RpgenError(
                f"{path}: not a readable checkpoint (entry {key!r} is a {type(value).__name__}, not a tensor)"
            )
    return dict(obj)


def structure(state_dict: Mapping[str, torch.Tensor]) -> Structure:
    """The keys, shapes and dtypes of a state_dict."""
    return {k: (tuple(v.shape), v.dtype) for k, v in state_dict.items()}


def check_structure(
    reference: Structure,
    state_dict: Mapping[str, torch.Tensor],
    *,
    name: str | Path,
    reference_name: str | Path,
) -> None:
    """Raise if ``state_dict`` (from file ``name``) differs from ``reference`` in keys, shapes or dtypes."""
    missing = [k for k in reference if k not in state_dict]
    if missing:
        raise RpgenError(f"{name}: missing key {missing[0]!r} (present in {reference_name})")
    extra = [k for k in state_dict if k not in reference]
    if extra:
        raise RpgenError(f"{name}: unexpected key {extra[0]!r} (not in {reference_name})")
    for key, (shape, dtype) in reference.items():
        tensor = state_dict[key]
        if tuple(tensor.shape) != shape:
            raise RpgenError(
                f"{name}: key {key!r} has shape {list(tensor.shape)}, "
                f"expected {list(shape)} (as in {reference_name})"
            )
        if tensor.dtype != dtype:
            raise RpgenError(
                f"{name}: key {key!r} has dtype {dtype_name(tensor.dtype)}, "
                f"expected {dtype_name(dtype)} (as in {reference_name})"
            )


def check_finite(state_dict: Mapping[str, torch.Tensor], *, name: str | Path) -> None:
    """Raise if any floating-point tensor holds NaN or Inf."""
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() or tensor.is_complex():
            if not bool(torch.isfinite(tensor).all()):
                kind = "NaN" if bool(torch.isnan(tensor).any()) else "Inf"
                raise RpgenError(f"{name}: key {key!r} contains {kind} values")


class LazyCheckpoint(Mapping[str, torch.Tensor]):
    """One checkpoint (file, adapter folder or model folder) whose tensors are read when asked,
    one at a time, in :func:`tensor_order`.

    ``safetensors`` files are read with plain file reads (never the whole file, never a memory
    map); a sharded model folder reads each tensor from the shard its index names. ``.pt``/``.pth``
    files are memory-mapped by ``torch.load(mmap=True)`` when saved in the zip format (else loaded
    whole). Indexing returns a fresh tensor and checks that float tensors are finite (an
    :class:`RpgenError` naming the checkpoint and key otherwise).
    """

    def __init__(self, path: str | Path, *, order: TensorOrder = "model") -> None:
        self.path = Path(path)  # a file, a peft adapter folder or a model folder
        self._readers: dict[str, SafetensorsReader] = {}  # tensor name -> reader of the file holding it
        self._tensors: dict[str, torch.Tensor] = {}
        files, weight_map = _files_of(self.path)
        if files[0].suffix.lower() == ".safetensors":
            meta: dict[str, torch.Tensor] = {}
            for file in files:
                reader = SafetensorsReader(file)
                _check_shard(self.path, file, reader.entries, weight_map)
                for e in reader.entries.values():
                    self._readers[e.name] = reader
                    meta[e.name] = torch.empty(e.shape, dtype=e.dtype, device="meta")
            if weight_map is not None:
                _check_index_complete(self.path, weight_map, meta)
            if not meta:
                raise RpgenError(f"{self.path}: not a readable checkpoint (no tensors)")
            recorded = None if weight_map is None else list(weight_map)
            self._meta = {k: meta[k] for k in tensor_order(meta, order=order, recorded=recorded)}
        else:
            try:
                obj = torch.load(files[0], weights_only=True, map_location="cpu", mmap=True)
            except Exception:  # not in the zip format: cannot be mapped, load it whole
                obj = None
            tensors = _checked_mapping(obj, self.path) if obj is not None else load_state_dict(self.path)
            self._tensors = {k: tensors[k] for k in tensor_order(tensors, order=order, recorded=list(tensors))}
            self._meta = {k: v.to("meta") for k, v in self._tensors.items()}

    def structure(self) -> Structure:
        return {k: (tuple(v.shape), v.dtype) for k, v in self._meta.items()}

    def meta(self) -> dict[str, torch.Tensor]:
        """Shape and dtype of every tensor, as tensors on the "meta" device (no data)."""
        return dict(self._meta)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._meta:
            raise KeyError(name)
        if self._readers:
            tensor = self._readers[name].read(name)
        else:
            tensor = self._tensors[name].clone()
        check_finite({name: tensor}, name=self.path)
        return tensor

    def read_flat(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Elements ``start:stop`` of tensor ``name`` flattened (1-D), read without the rest."""
        if self._readers:
            return self._readers[name].read_flat(name, start, stop)
        return self._tensors[name].reshape(-1)[start:stop].clone()

    def __iter__(self) -> Iterator[str]:
        return iter(self._meta)

    def __len__(self) -> int:
        return len(self._meta)

    def __repr__(self) -> str:
        return f"LazyCheckpoint({str(self.path)!r})"


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``state_dict`` as safetensors; the file appears complete or not at all."""
    # Own, contiguous CPU copies: safetensors refuses tensors that share storage.
    tensors = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
