"""Hidden units as permutation groups: the union-find of :mod:`rpgen.align.tracing`.

A traced tensor that holds hidden units carries a :class:`Units`: the id of their group, the axis
holding them, its rank and each unit's block. :class:`UnitGroups` joins groups that must move
together (a residual sum, a module called twice), records which state_dict axes each group owns,
and applies the rules of layers with weights and of the vectors that follow their input.
Group ``FIXED`` is everything that must not move.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.fx import Node

FIXED = 0  # union-find id of the units that never move
Entry = tuple[str, int, str, int]  # key, axis, group name, block


@dataclass(frozen=True)
class Units:
    """A traced tensor: its units' group (``FIXED``: none that move), their axis, its number of
    axes (None: unknown), and each unit's block of entries (None: not known until read)."""

    group: int
    dim: int = -1
    ndim: int | None = None
    block: int | None = 1


class Refused(Exception):
    """A node the rules cannot follow: ``Refused(node, why)``."""


class UnitGroups:
    """The groups of one trace: union-find over group ids, their sizes, and the state_dict axes
    (``entries``) each owns; ``calls`` remembers a module's groups so that a second call shares them."""

    def __init__(self) -> None:
        self.parent = [FIXED]  # union-find over group ids
        self.size = [0]
        self.entries: list[tuple[str, int, int, int]] = []  # key, axis, group id, block
        self.calls: dict[str, tuple[int, int]] = {}  # module -> (output group, input group) of its first call

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def new_group(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        return len(self.parent) - 1

    def union(self, a: int, b: int, node: Node) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if FIXED in (ra, rb):
            self.parent[ra if rb == FIXED else rb] = FIXED
            return
        if self.size[ra] != self.size[rb]:
            raise Refused(node, f"joins {self.size[ra]} units with {self.size[rb]} units")
        self.parent[rb] = ra

    def hidden(self, v: Units | None) -> bool:
        return v is not None and self.find(v.group) != FIXED

    def result(self) -> tuple[dict[str, int], list[Entry]]:
        names: dict[int, str] = {}
        entries = []
        for key, axis, group, block in self.entries:
            root = self.find(group)
            if root != FIXED:
                entries.append((key, axis, names.setdefault(root, f"P{len(names) + 1}"), block))
        return {name: self.size[root] for root, name in names.items()}, entries


    # --- layers ----------------------------------------------------------------------------------

    def weighted(self, node: Node, module: nn.Module, x: Units | None, *, read: tuple[int, int, int] | None,
                  out_size: int, out_axis: int = 0, out_dim: int = -1, out_ndim: int | None = None) -> Units:
        """A layer with weights: ``read`` = (weight axis, axis of the input's units, input size) or None."""
        x_group = x.group if self.hidden(x) else FIXED
        block = 1
        if read is not None and x_group != FIXED:
            _, dim, length = read
            if x.dim != dim:
                raise Refused(node, f"reads hidden units from axis {x.dim}, expected {dim}")
            block = self.block(node, x, length)
            if block != 1 and not isinstance(module, nn.Linear):
                raise Refused(node, "reads flattened hidden units")
        if node.target in self.calls:  # called again: the same groups
            out, first_in = self.calls[node.target]
            self.union(first_in, x_group, node)
        else:
            out = self.new_group(out_size)
            self.calls[node.target] = (out, x_group)
            if read is not None:
                self.entries.append((f"{node.target}.weight", read[0], x_group, block))
            self.entries.append((f"{node.target}.weight", out_axis, out, 1))
            if getattr(module, "bias", None) is not None:
                self.entries.append((f"{node.target}.bias", 0, out, 1))
        if out_ndim is None and x is not None:
            out_ndim = x.ndim
        return Units(out, out_dim, ndim=out_ndim)

    def join(self, node: Node, module: nn.Module, x: Units, names: tuple[str, ...], *, block: int) -> Units:
        """A module whose vectors (axis 0) follow its input's units."""
        if node.target in self.calls:
            self.union(self.calls[node.target][1], x.group, node)
            return x
        self.calls[node.target] = (x.group, x.group)
        for name in names:
            if isinstance(getattr(module, name, None), torch.Tensor):
                self.entries.append((f"{node.target}.{name}", 0, x.group, block))
        return x

    def channels(self, node: Node, x: Units, spatial: int | None, num: int | None) -> None:
        """Refuse unless the units are the channels (axis 1 of a batched (B, C, *spatial) tensor)."""
        if x.ndim is not None:
            ok = x.dim == 1 - x.ndim
        else:  # BatchNorm1d and GroupNorm on a tensor of unknown rank: assumed to see the units as channels
            ok = spatial is None or x.dim == -1 - spatial
        if not ok or x.block != 1 or num is not None and num != self.size[self.find(x.group)]:
            raise Refused(node, "does not see the hidden units as its channels")

    def block(self, node: Node, x: Units, length: int) -> int:
        """The block of ``x``'s units when a layer reads ``length`` entries along their axis."""
        size = self.size[self.find(x.group)]
        block = x.block if x.block is not None else length // size
        if size * block != length:
            raise Refused(node, f"reads {length} entries from {size} hidden units")
        return block

    def binary(self, node: Node, ins: list[Units | None]) -> Units:
        """An elementwise sum/product: one group for all operands holding units."""
        tensors = [v for v in ins if v is not None]
        moving = [v for v in tensors if self.hidden(v)]
        if len(moving) < len(tensors):  # with a tensor that must not move: fixed
            for v in moving:
                self.union(v.group, FIXED, node)
            return Units(FIXED)
        first = moving[0]
        blocks = {v.block for v in moving} - {None}
        if any(v.dim != first.dim for v in moving) or len(blocks) > 1:
            raise Refused(node, "combines hidden units on different axes")
        for v in moving[1:]:
            self.union(first.group, v.group, node)
        ndims = {v.ndim for v in moving}
        return replace(first, ndim=ndims.pop() if len(ndims) == 1 else None, block=blocks.pop() if blocks else None)
