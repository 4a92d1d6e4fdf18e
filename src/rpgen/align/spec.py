"""Permutation specs: which state_dict axes hold one layer's hidden units (see :mod:`rpgen.align`).

A *group* is a set of hidden units that one permutation reorders everywhere at once: a layer's
output axis, the input axis of every layer reading it, its BatchNorm/LayerNorm vectors, and all
layers joined to it by a residual sum. Keys outside the spec are never permuted; an axis with a
``block`` holds ``units * block`` entries, unit ``c`` owning entries ``c * block ... c * block +
block - 1`` (a Linear reading a flattened ``(C, H, W)`` conv output has ``block = H * W``).

Spec file (JSON; :func:`load_spec` / :func:`save_spec`)::

    {"groups": {"P1": [["conv1.weight", 0], ["bn1.weight", 0], ["bn1.bias", 0],
                       ["bn1.running_mean", 0], ["bn1.running_var", 0], ["conv2.weight", 1]],
                "P2": [["conv2.weight", 0], ..., ["fc.weight", 1, 16]]}}

Each entry is ``[key, axis]`` or ``[key, axis, block]``; the group sizes are read from the
checkpoint the spec is checked against. :func:`spec_from_model` derives the groups by tracing a
model (:mod:`rpgen.align.tracing`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from rpgen.align.tracing import trace_groups
from rpgen.errors import RpgenError
from rpgen.formats.json_files import read_json_object
from rpgen.safety.atomic import write_text_atomic


class PermutedAxis(NamedTuple):
    """Axis ``axis`` of a tensor holds the units of ``group``, ``block`` consecutive entries each."""

    axis: int
    group: str
    block: int = 1


@dataclass(frozen=True)
class PermutationSpec:
    """``groups``: group name -> number of units; ``axes``: state_dict key -> its permuted axes."""

    groups: dict[str, int]
    axes: dict[str, tuple[PermutedAxis, ...]]

    def __post_init__(self) -> None:
        for name, size in self.groups.items():
            if not isinstance(size, int) or size < 1:
                raise RpgenError(f"permutation group {name!r}: size must be a positive integer, got {size!r}")
        for key, axes in self.axes.items():
            for a in axes:
                if a.group not in self.groups:
                    raise RpgenError(f"permutation spec: key {key!r} names unknown group {a.group!r}")
                if a.axis < 0 or a.block < 1:
                    raise RpgenError(f"permutation spec: key {key!r} has axis {a.axis} block {a.block}; "
                                     "axis must be >= 0 and block >= 1")
            if len({a.axis for a in axes}) != len(axes):
                raise RpgenError(f"permutation spec: key {key!r} lists one axis in two groups")

    def members(self) -> dict[str, list[tuple[str, PermutedAxis]]]:
        """Group name -> the (key, axis) pairs it permutes."""
        out: dict[str, list[tuple[str, PermutedAxis]]] = {g: [] for g in self.groups}
        for key, axes in self.axes.items():
            for a in axes:
                out[a.group].append((key, a))
        return out

    def check(self, state_dict: Mapping[str, torch.Tensor], *, where: str | Path) -> None:
        """Raise unless every key exists as a float tensor whose permuted axes have the group's size."""
        for key, axes in self.axes.items():
            if key not in state_dict:
                raise RpgenError(f"{where}: permutation spec names key {key!r}, which the checkpoint does not hold")
            tensor = state_dict[key]
            if not tensor.is_floating_point():
                raise RpgenError(f"{where}: permutation spec names key {key!r}, a {tensor.dtype} tensor; "
                                 "only float tensors can be permuted")
            for a in axes:
                if a.axis >= tensor.dim():
                    raise RpgenError(f"{where}: key {key!r} has {tensor.dim()} axes, the spec permutes axis {a.axis}")
                want = self.groups[a.group] * a.block
                if tensor.shape[a.axis] != want:
                    raise RpgenError(f"{where}: key {key!r} axis {a.axis} has size {tensor.shape[a.axis]}, but group "
                                     f"{a.group!r} has {self.groups[a.group]} units x block {a.block} = {want}")


def save_spec(spec: PermutationSpec, path: str | Path) -> None:
    """Write ``spec`` as a spec file (the format in the module docstring), atomically."""
    groups = {g: [[key, a.axis] + ([a.block] if a.block != 1 else []) for key, a in members]
              for g, members in spec.members().items()}
    write_text_atomic(path, json.dumps({"groups": groups}, indent=1) + "\n")


def load_spec(path: str | Path, state_dict: Mapping[str, torch.Tensor]) -> PermutationSpec:
    """Read a spec file and check it against ``state_dict`` (a checkpoint or its ``meta()``).

    Group sizes come from the state_dict; a group whose axes disagree on the size, an unknown key
    or an axis out of range is one :class:`RpgenError` line naming the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise RpgenError(f"permutation spec file {path} not found")
    data = read_json_object(path, expected='a JSON object {"groups": {name: [[key, axis], ...]}}')
    groups = data.get("groups")
    if set(data) != {"groups"} or not isinstance(groups, dict) or not groups:
        raise RpgenError(f'{path}: must hold exactly one entry "groups": {{name: [[key, axis], ...]}} (non-empty)')
    sizes: dict[str, int] = {}
    axes: dict[str, list[PermutedAxis]] = {}
    for group, entries in groups.items():
        if not isinstance(entries, list) or not entries:
            raise RpgenError(f"{path}: group {group!r} must be a non-empty list of [key, axis] or [key, axis, block]")
        for entry in entries:
            key, axis, block = _entry(entry, path=path, group=group)
            if key not in state_dict:
                raise RpgenError(f"{path}: group {group!r} names key {key!r}, which the checkpoint does not hold")
            shape = tuple(state_dict[key].shape)
            if axis >= len(shape):
                raise RpgenError(f"{path}: group {group!r} permutes axis {axis} of key {key!r}, "
                                 f"which has {len(shape)} axes (shape {list(shape)})")
            if shape[axis] % block:
                raise RpgenError(f"{path}: key {key!r} axis {axis} has size {shape[axis]}, not a multiple of "
                                 f"block {block}")
            size = shape[axis] // block
            if sizes.setdefault(group, size) != size:
                first = next(k for k, v in axes.items() if any(a.group == group for a in v))
                raise RpgenError(f"{path}: group {group!r} has {size} units at key {key!r} axis {axis} but "
                                 f"{sizes[group]} at key {first!r}")
            if any(a.axis == axis for a in axes.get(key, [])):
                raise RpgenError(f"{path}: key {key!r} axis {axis} is listed twice")
            axes.setdefault(key, []).append(PermutedAxis(axis, group, block))
    spec = PermutationSpec(sizes, {k: tuple(v) for k, v in axes.items()})
    spec.check(state_dict, where=path)
    return spec


def _entry(entry: object, *, path: Path, group: str) -> tuple[str, int, int]:
    ok = (isinstance(entry, list) and len(entry) in (2, 3) and isinstance(entry[0], str)
          and all(isinstance(x, int) and not isinstance(x, bool) for x in entry[1:]))
    if not ok or entry[1] < 0 or (len(entry) == 3 and entry[2] < 1):
        raise RpgenError(f"{path}: group {group!r} entry {entry!r} must be [key, axis] or [key, axis, block] "
                         "with axis >= 0 and block >= 1")
    return entry[0], entry[1], entry[2] if len(entry) == 3 else 1


def spec_from_model(model: torch.nn.Module, example_input: torch.Tensor | tuple | None = None) -> PermutationSpec:
    """Derive the permutation groups of ``model`` by tracing it with torch.fx.

    :mod:`rpgen.align.tracing` lists what is supported and what is refused; ``example_input`` (one
    batch, or a tuple of the forward's arguments) gives exact shapes, needed to know the block of
    a flatten that is not read by a Linear and to check every traced axis.
    """
    sizes, entries = trace_groups(model, example_input)
    axes: dict[str, list[PermutedAxis]] = {}
    for key, axis, group, block in entries:
        axes.setdefault(key, []).append(PermutedAxis(axis, group, block))
    spec = PermutationSpec(sizes, {k: tuple(v) for k, v in axes.items()})
    spec.check(model.state_dict(), where=f"model {type(model).__name__}")
    return spec
