"""Lineage: which training run each checkpoint comes from.

A zoo mixes training runs (seeds, hyper-parameters, fine-tunes of one base); checkpoints of one
run lie in one basin, checkpoints of different runs far apart. In code the training runs of a
zoo are its *lineage* (:class:`Lineage`): "run" alone names a run directory
(:mod:`rpgen.run_dir`). rpgen reads the training runs from, in this order:

1. ``runs.json`` in the checkpoint folder, mapping a run name to its checkpoint files; every
   checkpoint listed exactly once::

       {"seed0": ["a.safetensors", "b.safetensors"], "seed1": ["c.safetensors"]}

2. file names that all start with ``rNN_`` (what ``rpgen collect --runs`` writes): one run per
   prefix;
3. otherwise an estimate: checkpoints whose mean squared distance per normalised value is below
   :data:`SAME_RUN_MSD` are joined into one run (single linkage). Measured on the digits zoos:
   checkpoints of one run lie at most 0.05 apart, independent runs about 2.0.

The number of training runs sizes the generator (:mod:`rpgen.training.resolve`); with
``data.states = "run"`` each training run gets one permutation state.

Glossary: ``K`` checkpoints, ``P`` sampled values per checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rpgen.formats.checkpoints import LazyCheckpoint
from rpgen.errors import RpgenError
from rpgen.formats.json_files import read_json_object
from rpgen.data.tokenizer import Layout, standardize

RUNS_FILE = "runs.json"
SAME_RUN_MSD = 0.5
"""Checkpoints closer than this (mean squared distance per normalised value) share a run."""
_SAMPLE_VALUES = 65_536  # values per checkpoint compared by the estimate, spread over its tensors
_PREFIX = re.compile(r"^(r\d+)_")


@dataclass(frozen=True)
class Lineage:
    """The training run of every checkpoint (``index[k]`` in 0..num_runs-1, in order of first
    appearance) and where that came from."""

    index: tuple[int, ...]
    source: str  # "runs.json", "file names rNN_" or "estimated from weight distances"

    @property
    def num_runs(self) -> int:
        return max(self.index) + 1


def find_lineage(folder: str | Path, names: Sequence[str], checkpoints: Sequence[LazyCheckpoint],
                 layout: Layout, *, estimate: bool = True) -> Lineage:
    """The lineage of the checkpoints ``names`` (file names in ``folder``, in training order).

    Without ``estimate``, a folder that declares no runs is one run (a conditional zoo: its
    checkpoints differ by their conditions, so weight distances do not tell runs apart).
    """
    declared = read_runs_file(folder, names)
    if declared is not None:
        return Lineage(_renumber(declared), RUNS_FILE)
    prefixes = [_PREFIX.match(n) for n in names]
    if len(names) > 1 and all(prefixes):
        return Lineage(_renumber([m.group(1) for m in prefixes]), "file names rNN_")
    if not estimate:
        return Lineage((0,) * len(names), "not declared (runs.json or rNN_ file names): one run")
    return Lineage(_renumber(estimate_lineage(checkpoints, layout)), "estimated from weight distances")


def read_runs_file(folder: str | Path, names: Sequence[str]) -> list[str] | None:
    """The run name of every checkpoint from ``folder/runs.json``; None when there is no such file."""
    path = Path(folder) / RUNS_FILE
    if not path.is_file():
        return None
    data = read_json_object(path, expected="a JSON object mapping run name -> list of checkpoint files")
    known = set(names)
    run_of: dict[str, str] = {}
    for run, files in data.items():
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            raise RpgenError(f"{path}: run {run!r} must map to a non-empty list of checkpoint file names")
        for f in files:
            if f not in known:
                raise RpgenError(f"{path}: run {run!r} names {f!r}, which is not a checkpoint file in {Path(folder)}")
            if f in run_of:
                raise RpgenError(f"{path}: {f!r} is listed in runs {run_of[f]!r} and {run!r}; a checkpoint "
                                 "belongs to one run")
            run_of[f] = run
    for name in names:
        if name not in run_of:
            raise RpgenError(f"{path}: checkpoint {name!r} is in no run (every checkpoint must be listed)")
    return [run_of[n] for n in names]


def estimate_lineage(checkpoints: Sequence[LazyCheckpoint], layout: Layout) -> list[int]:
    """A run label per checkpoint: single-linkage groups of checkpoints closer than
    :data:`SAME_RUN_MSD`, compared on the first values of every generated tensor (about 65K values
    per checkpoint in all), each tensor's sample over its own standard deviation across the set."""
    if len(checkpoints) == 1:
        return [0]
    per_tensor = max(16, _SAMPLE_VALUES // len(layout.generated))  # bounds memory: K x ~65K values
    segments = []
    for info in layout.generated:
        seg = torch.stack([standardize(ckpt.read_flat(info.name, 0, min(info.numel, per_tensor)), info)
                           for ckpt in checkpoints])  # (K, n)
        # rescaled by the sample's own spread: the same units whatever the layout's centring
        segments.append((seg - seg.mean()) / seg.std().clamp_min(1e-12))
    x = torch.cat(segments, dim=1)  # (K, P)
    close = (torch.cdist(x, x).pow(2) / x.shape[1]) < SAME_RUN_MSD  # (K, K)
    label = list(range(len(checkpoints)))  # union-find over the close pairs

    def root(i: int) -> int:
        while label[i] != i:
            label[i] = label[label[i]]
            i = label[i]
        return i

    for i, j in close.nonzero().tolist():
        label[root(i)] = root(j)
    return [root(i) for i in range(len(checkpoints))]


def _renumber(labels: Sequence[object]) -> tuple[int, ...]:
    """Labels -> 0, 1, ... in order of first appearance."""
    first: dict[object, int] = {}
    return tuple(first.setdefault(label, len(first)) for label in labels)
