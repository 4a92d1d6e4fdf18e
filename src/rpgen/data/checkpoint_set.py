"""The zoo folder, opened once: :class:`CheckpointSet`.

A checkpoint folder is listed once (:func:`rpgen.formats.listing.list_checkpoints`) and
everything else a command needs of it comes from the one object: the paths and names, the
checkpoints opened lazily (headers only, structures checked against the first), the layout
fitted on them (one streaming pass), the conditions of a conditional zoo (``conditions.json``),
the lineage (which training run each checkpoint comes from) and the form of its entries, which
generated models take. Training, alignment and evaluation take a set; nothing lists the folder
again.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch

from rpgen.data.conditions import read_conditions
from rpgen.data.lineage import Lineage, find_lineage
from rpgen.data.tokenizer import Center, Layout, fit_layout
from rpgen.errors import RpgenError
from rpgen.formats.checkpoints import LazyCheckpoint, TensorOrder, check_structure, structure
from rpgen.formats.listing import list_checkpoints
from rpgen.formats.output_forms import keep_form


class CheckpointSet:
    """The checkpoints of one folder, in natural order of their names; ``order`` is the order of
    their tensors (:func:`rpgen.formats.checkpoints.tensor_order`)."""

    def __init__(self, folder: str | Path, paths: list[Path], *, order: TensorOrder = "model") -> None:
        self.folder = Path(folder)
        self.paths = list(paths)
        self.order = order
        self._layouts: dict[tuple, Layout] = {}

    @classmethod
    def open(cls, folder: str | Path, *, order: TensorOrder = "model") -> CheckpointSet:
        """List ``folder`` (the only time it is listed) and check that its entries are of one kind."""
        return cls(folder, list_checkpoints(folder), order=order)

    @property
    def names(self) -> list[str]:
        """File (or folder) name of every checkpoint: what conditions.json and runs.json name."""
        return [p.name for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    @cached_property
    def checkpoints(self) -> list[LazyCheckpoint]:
        """Every checkpoint opened lazily; structures checked from the headers (no tensor read).

        Values are not read here; a NaN or Inf is reported when the tensor holding it is first
        read (the statistics pass of :meth:`layout` reads every float tensor once).
        """
        if len(self.paths) < 2:
            raise RpgenError(f"need at least 2 checkpoints in {self.folder}, found {len(self.paths)}")
        checkpoints = [LazyCheckpoint(p, order=self.order) for p in self.paths]
        reference = structure(checkpoints[0].meta())
        for ckpt in checkpoints:
            check_structure(reference, ckpt.meta(), name=ckpt.path, reference_name=self.paths[0])
        return checkpoints

    def layout(self, token_size: int, *, center: Center = "tensor", base: str | Path | None = None) -> Layout:
        """The token layout and normalisation statistics of the set (fitted once per token size and
        centre); ``base``: the base model's file or folder, for ``center = "base"``."""
        key = (token_size, center, str(base))
        if key not in self._layouts:
            reference = None if base is None else _open_base(Path(base), self.order)
            self._layouts[key] = fit_layout(self.checkpoints, token_size=token_size, center=center, base=reference)
        return self._layouts[key]

    @cached_property
    def conditions(self) -> torch.Tensor | None:
        """(K, C) condition vectors from ``conditions.json`` (:mod:`rpgen.data.conditions`); None
        when the folder has none."""
        return read_conditions(self.folder, self.names)

    def lineage(self, layout: Layout, *, estimate: bool = True) -> Lineage:
        """The training run of every checkpoint (:func:`rpgen.data.lineage.find_lineage`)."""
        return find_lineage(self.folder, self.names, self.checkpoints, layout, estimate=estimate)

    def keep_form(self, run_dir: Path) -> None:
        """Copy into ``run_dir`` what generated models need to take these checkpoints' form."""
        keep_form(self.paths[0], run_dir)

    def __repr__(self) -> str:
        return f"CheckpointSet({str(self.folder)!r}, {len(self.paths)} checkpoints)"


def _open_base(path: Path, order: TensorOrder) -> LazyCheckpoint:
    """The base model, opened like a checkpoint (a file, an adapter folder or a model folder)."""
    if not path.exists():
        raise RpgenError(f"base model {path} not found")
    try:
        return LazyCheckpoint(path, order=order)
    except RpgenError as e:
        raise RpgenError(f"base model {path}: {e}") from None
