"""Checkpoint folders: list, load, validate and save state_dicts.

A checkpoint folder holds ``*.safetensors`` files (``*.pt``/``*.pth`` are read with
``weights_only=True``), each a full state_dict with the same keys, shapes and dtypes.
Every problem is raised as :class:`RpgenError` naming the file and the key at fault.

Key order: ``.pt``/``.pth`` files keep the order they were saved in; safetensors files
store tensors by name, so ``.safetensors`` state_dicts come back sorted by key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rpgen.errors import RpgenError
from rpgen.files import atomic_path

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")

# key -> (shape, dtype): everything two compatible state_dicts must share.
Structure = dict[str, tuple[tuple[int, ...], torch.dtype]]


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoint files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.exists():
        raise RpgenError(f"checkpoint folder {folder} does not exist")
    if not folder.is_dir():
        raise RpgenError(f"checkpoint folder {folder} is not a directory")
    paths = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES),
        key=lambda p: p.name,
    )
    if not paths:
        raise RpgenError(
            f"no checkpoint files in {folder} (expected {', '.join('*' + s for s in CHECKPOINT_SUFFIXES)})"
        )
    return paths


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load one checkpoint onto the CPU without unpickling arbitrary objects."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            obj = load_file(path, device="cpu")
        else:
            obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # any reader failure is the file's fault
        raise RpgenError(f"{path}: not a readable checkpoint ({_short(exc)})") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        kind = type(obj).__name__
        raise RpgenError(f"{path}: not a readable checkpoint (holds a {kind}, not a dict of tensors)")
    if not obj:
        raise RpgenError(f"{path}: not a readable checkpoint (no tensors)")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
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
