"""Checkpoint folders: list, load, validate and save state_dicts.

A checkpoint folder holds ``*.safetensors`` files (``*.pt``/``*.pth`` are read with
``weights_only=True``), each a full state_dict with the same keys, shapes and dtypes, or peft
adapter folders (:mod:`rpgen.adapters`), each counted as one checkpoint named by its folder.
Every problem is raised as :class:`RpgenError` naming the file and the key at fault.

Key order: ``.pt``/``.pth`` files keep the order they were saved in; safetensors files
store tensors by name, so ``.safetensors`` state_dicts come back sorted by key.

:func:`open_checkpoints` is the scalable path used by training: it reads only the headers
(structure checks cost no tensor reads) and returns :class:`LazyCheckpoint` mappings that read a
tensor, or a range of its elements, when asked. Memory then does not grow with the number of
checkpoints or their size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rpgen.adapters import check_adapter_folders, is_adapter_dir, weights_file
from rpgen.errors import RpgenError
from rpgen.files import atomic_path
from rpgen.safetensors_io import SafetensorsReader

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")

# key -> (shape, dtype): everything two compatible state_dicts must share.
Structure = dict[str, tuple[tuple[int, ...], torch.dtype]]


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoint files directly in ``folder``, or its peft adapter folders, sorted by name.

    Adapter folders are checked to be complete and to share base model, rank and targets.
    """
    folder = Path(folder)
    if not folder.exists():
        raise RpgenError(f"checkpoint folder {folder} does not exist")
    if not folder.is_dir():
        raise RpgenError(f"checkpoint folder {folder} is not a directory")
    entries = sorted(folder.iterdir(), key=lambda p: p.name)
    paths = [p for p in entries if _is_checkpoint_file(p)]
    adapters = [p for p in entries if is_adapter_dir(p)]
    if paths and adapters:
        raise RpgenError(f"{folder} mixes checkpoint files ({paths[0].name}, ...) and peft adapter folders "
                         f"({adapters[0].name}, ...); keep one kind per folder")
    if adapters:
        check_adapter_folders(adapters)
        return adapters
    if not paths:
        raise RpgenError(
            f"no checkpoint files in {folder} (expected {', '.join('*' + s for s in CHECKPOINT_SUFFIXES)}, "
            "or peft adapter folders)"
        )
    return paths


def _is_checkpoint_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES


def is_checkpoint(path: Path) -> bool:
    """True for what :func:`list_checkpoints` counts: a checkpoint file or a peft adapter folder."""
    return _is_checkpoint_file(path) or is_adapter_dir(path)


def _file_of(path: Path) -> Path:
    """The file holding a checkpoint's tensors: the path itself, or an adapter folder's weights."""
    return weights_file(path) if path.is_dir() else path


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load one checkpoint (file or adapter folder) onto the CPU without unpickling arbitrary objects."""
    path = Path(path)
    file = _file_of(path)
    try:
        if file.suffix.lower() == ".safetensors":
            obj = load_file(file, device="cpu")
        else:
            obj = torch.load(file, weights_only=True, map_location="cpu")
    except Exception as exc:  # any reader failure is the file's fault
        raise RpgenError(f"{path}: not a readable checkpoint ({_short(exc)})") from None
    return _checked_mapping(obj, path)


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
                f"{name}: key {key!r} has dtype {_dtype(tensor.dtype)}, "
                f"expected {_dtype(dtype)} (as in {reference_name})"
            )


def check_finite(state_dict: Mapping[str, torch.Tensor], *, name: str | Path) -> None:
    """Raise if any floating-point tensor holds NaN or Inf."""
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() or tensor.is_complex():
            if not bool(torch.isfinite(tensor).all()):
                kind = "NaN" if bool(torch.isnan(tensor).any()) else "Inf"
                raise RpgenError(f"{name}: key {key!r} contains {kind} values")


def validate_state_dicts(paths: Sequence[Path], state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> None:
    """Check a checkpoint set: at least 2, same structure as the first, all values finite."""
    if len(paths) != len(state_dicts):
        raise ValueError(f"got {len(paths)} paths but {len(state_dicts)} state_dicts")
    if len(paths) < 2:
        where = f" in {Path(paths[0]).parent}" if paths else ""
        raise RpgenError(f"need at least 2 checkpoints{where}, found {len(paths)}")
    reference = structure(state_dicts[0])
    for path, state_dict in zip(paths, state_dicts):
        check_structure(reference, state_dict, name=path, reference_name=paths[0])
        check_finite(state_dict, name=path)


def load_checkpoints(folder: str | Path) -> tuple[list[Path], list[dict[str, torch.Tensor]]]:
    """List, load and validate every checkpoint in ``folder``."""
    paths = list_checkpoints(folder)
    state_dicts = [load_state_dict(p) for p in paths]
    validate_state_dicts(paths, state_dicts)
    return paths, state_dicts


class LazyCheckpoint(Mapping[str, torch.Tensor]):
    """One checkpoint file whose tensors are read when asked, one at a time.

    ``safetensors`` files are read with plain file reads (never the whole file, never a memory
    map); ``.pt``/``.pth`` files are memory-mapped by ``torch.load(mmap=True)`` when saved in
    the zip format (else loaded whole). Indexing returns a fresh tensor and checks that float
    tensors are finite (an :class:`RpgenError` naming the file and key otherwise).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)  # a file, or a peft adapter folder
        self._reader: SafetensorsReader | None = None
        self._tensors: dict[str, torch.Tensor] = {}
        file = _file_of(self.path)
        if file.suffix.lower() == ".safetensors":
            self._reader = SafetensorsReader(file)
            # File order, as safetensors.torch.load_file returns them.
            self._meta = {e.name: torch.empty(e.shape, dtype=e.dtype, device="meta")
                          for e in self._reader.entries.values()}
            if not self._meta:
                raise RpgenError(f"{self.path}: not a readable checkpoint (no tensors)")
        else:
            try:
                obj = torch.load(file, weights_only=True, map_location="cpu", mmap=True)
            except Exception:  # not in the zip format: cannot be mapped, load it whole
                obj = None
            self._tensors = _checked_mapping(obj, self.path) if obj is not None else load_state_dict(self.path)
            self._meta = {k: v.to("meta") for k, v in self._tensors.items()}

    def structure(self) -> Structure:
        return {k: (tuple(v.shape), v.dtype) for k, v in self._meta.items()}

    def meta(self) -> dict[str, torch.Tensor]:
        """Shape and dtype of every tensor, as tensors on the "meta" device (no data)."""
        return dict(self._meta)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._meta:
            raise KeyError(name)
        if self._reader is not None:
            tensor = self._reader.read(name)
        else:
            tensor = self._tensors[name].clone()
        check_finite({name: tensor}, name=self.path)
        return tensor

    def read_flat(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Elements ``start:stop`` of tensor ``name`` flattened (1-D), read without the rest."""
        if self._reader is not None:
            return self._reader.read_flat(name, start, stop)
        return self._tensors[name].reshape(-1)[start:stop].clone()

    def __iter__(self) -> Iterator[str]:
        return iter(self._meta)

    def __len__(self) -> int:
        return len(self._meta)

    def __repr__(self) -> str:
        return f"LazyCheckpoint({str(self.path)!r})"


def open_checkpoints(folder: str | Path) -> list[LazyCheckpoint]:
    """List and open every checkpoint in ``folder``; check the structures from the headers.

    Values are not read here; a NaN or Inf is reported when the tensor holding it is first
    read (training's statistics pass reads every float tensor once).
    """
    paths = list_checkpoints(folder)
    if len(paths) < 2:
        raise RpgenError(f"need at least 2 checkpoints in {Path(folder)}, found {len(paths)}")
    checkpoints = [LazyCheckpoint(p) for p in paths]
    reference = structure(checkpoints[0].meta())
    for ckpt in checkpoints:
        check_structure(reference, ckpt.meta(), name=ckpt.path, reference_name=paths[0])
    return checkpoints


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


def _short(exc: BaseException) -> str:
    """First line of an exception message, capped, for one-line errors."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
