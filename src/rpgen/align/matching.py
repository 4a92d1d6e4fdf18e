"""Canonical checkpoints: permute hidden units to match a reference (Git Re-Basin weight matching).

Permuting a layer's hidden units (its output rows, the next layer's input columns, the
normalisation vectors between them) leaves what a network computes unchanged, so independent
runs differ by an arbitrary permutation on top of their real differences. Weight matching
(Ainsworth et al. 2022, "Git Re-Basin", Algorithm 2) picks, for every checkpoint, the permutation
that brings its weights closest to one reference checkpoint; a generator then sees one
canonical form instead of many symmetric copies.

- :class:`PermutationSpec` says which axes each permutation moves: :func:`spec_from_model`
  derives it by tracing a model (:mod:`rpgen.align.trace` lists what is supported), and a spec
  file (:func:`load_spec` / :func:`save_spec`, format in :mod:`rpgen.align.spec`) covers the rest.
- :func:`weight_matching` finds the permutations, :func:`permute` applies them,
  :func:`align_checkpoints` does both for a checkpoint folder.
- :func:`load_model_factory` and :func:`check_matches` build the model to trace from a
  ``module:factory`` or ``path/file.py:factory`` spec.
- :func:`interpolate`: the midpoint of two checkpoints (the classic test of alignment).

Shapes: n = units of a group, m = the other entries of a tensor seen from one of its axes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from rpgen.align.spec import (
    PermutationSpec,
    PermutedAxis,
    load_spec,
    save_spec,
    spec_from_model,
)
from rpgen.callables import resolve_callable
from rpgen.formats.checkpoints import list_checkpoints, load_state_dict, open_checkpoints, save_state_dict
from rpgen.errors import RpgenError, first_line
from rpgen.safety.atomic import atomic_dir
from rpgen.safety.overwrite import check_not_overlapping
from rpgen.display import progress_bar
from rpgen.formats.safetensors_io import SafetensorsReader

__all__ = [
    "PermutationSpec",
    "PermutedAxis",
    "align_checkpoints",
    "check_matches",
    "interpolate",
    "load_model_factory",
    "load_spec",
    "permute",
    "save_spec",
    "spec_from_model",
    "weight_distance",
    "weight_matching",
]

SUMMARY = "align.json"  # written beside the aligned checkpoints
STATS = (".running_mean", ".running_var")  # permuted, but not matched on (not weights)


def _index(perm: Tensor, block: int) -> Tensor:
    """Indices along an axis of ``n * block`` entries that move unit ``perm[i]`` to position ``i``."""
    if block == 1:
        return perm
    return (perm[:, None] * block + torch.arange(block)).reshape(-1)  # (n * block,)


def permute(state_dict: Mapping[str, Tensor], spec: PermutationSpec, perms: Mapping[str, Tensor]
            ) -> dict[str, Tensor]:
    """``state_dict`` with every group's units reordered: unit ``perms[g][i]`` becomes unit ``i``.

    Keys outside the spec are returned as they are; permuted tensors keep their dtype and are
    contiguous.
    """
    for group, size in spec.groups.items():
        perm = perms.get(group)
        if perm is None or perm.shape != (size,) or not torch.equal(perm.sort().values, torch.arange(size)):
            raise ValueError(f"perms[{group!r}] must be a permutation of {size} units")
    out = dict(state_dict)
    for key, axes in spec.axes.items():
        tensor = state_dict[key]
        for a in axes:
            tensor = tensor.index_select(a.axis, _index(perms[a.group].to(tensor.device), a.block))
        out[key] = tensor.contiguous()
    return out


def _view(tensor: Tensor, a: PermutedAxis) -> Tensor:
    """(n, m): the tensor seen from axis ``a``, one row per unit (a unit's block in its row)."""
    return tensor.movedim(a.axis, 0).reshape(tensor.shape[a.axis] // a.block, -1)


def weight_matching(reference: Mapping[str, Tensor], other: Mapping[str, Tensor], spec: PermutationSpec, *,
                    max_iter: int = 100, seed: int = 0) -> dict[str, Tensor]:
    """Permutations (one LongTensor per group) that bring ``other`` closest to ``reference``.

    Coordinate descent: for each group in a random order, with the other groups' permutations
    held, maximise ``sum over the group's (key, axis) of <reference, permuted other>`` exactly
    (``linear_sum_assignment`` on the n x n similarity); stop after a sweep where no group
    improves, or after ``max_iter`` sweeps. Works in float64; only the spec's float tensors count,
    and BatchNorm running statistics (keys ending in ``running_mean``/``running_var``) are
    permuted by :func:`permute` but not matched on: they are not weights, and the original
    algorithm matches parameters only. The result permutes ``other`` with :func:`permute`.
    """
    members = {g: [(k, a) for k, a in m if not k.endswith(STATS)] for g, m in spec.members().items()}
    keys = {k for m in members.values() for k, _ in m}
    ref = {k: reference[k].detach().to("cpu", torch.float64) for k in keys}
    oth = {k: other[k].detach().to("cpu", torch.float64) for k in keys}
    perms = {g: torch.arange(n) for g, n in spec.groups.items()}
    rng = np.random.default_rng(seed)
    names = list(spec.groups)
    for _ in range(max_iter):
        improved = False
        for g in (names[i] for i in rng.permutation(len(names))):
            n = spec.groups[g]
            similarity = torch.zeros(n, n, dtype=torch.float64)  # (n, n): reference unit i vs other unit j
            for key, a in members[g]:
                moved = oth[key]
                for b in spec.axes[key]:
                    if b.axis != a.axis:  # every other axis as currently permuted
                        moved = moved.index_select(b.axis, _index(perms[b.group], b.block))
                similarity += _view(ref[key], a) @ _view(moved, a).T  # (n, m) @ (m, n)
            row, col = linear_sum_assignment(similarity.numpy(), maximize=True)
            new = torch.as_tensor(col[np.argsort(row)], dtype=torch.long)
            before = similarity[torch.arange(n), perms[g]].sum()
            after = similarity[torch.arange(n), new].sum()
            if after > before + 1e-12 * max(1.0, abs(float(before))):
                perms[g], improved = new, True
        if not improved:
            break
    return perms


def weight_distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """L2 distance over all float tensors (float64)."""
    total = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a if a[k].is_floating_point())
    return total ** 0.5


def interpolate(a: Mapping[str, Tensor], b: Mapping[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """``(1 - alpha) * a + alpha * b`` for every float tensor (BatchNorm running statistics too);
    other tensors (``num_batches_tracked``) are taken from ``a``."""
    if set(a) != set(b):
        raise RpgenError(f"cannot interpolate state_dicts with different keys (e.g. {min(set(a) ^ set(b))!r})")
    return {k: torch.lerp(v, b[k].to(v.dtype), alpha) if v.is_floating_point() else v for k, v in a.items()}


def align_checkpoints(checkpoint_dir: str | Path, out_dir: str | Path, spec: PermutationSpec | str | Path, *,
                      reference: int | str = 0, max_iter: int = 100, seed: int = 0, overwrite: bool = False,
                      progress: bool = True, runs: Sequence[int] | None = None) -> dict:
    """Write every checkpoint of ``checkpoint_dir`` into ``out_dir`` aligned to one of them.

    ``spec``: a :class:`PermutationSpec` or a spec file; ``reference``: the reference checkpoint's
    index or file name (written unchanged); ``overwrite`` replaces an earlier aligned folder (never
    anything rpgen did not write). Files keep their names (as ``.safetensors``, with their
    metadata plus ``aligned_to``); ``out_dir`` appears complete or not at all and also holds
    ``align.json``, the summary returned: the reference, each checkpoint's weight distance
    (:func:`weight_distance`) to the reference before and after alignment, and the seconds taken.
    Only checkpoint files (state_dicts) are supported, not peft adapter or model folders.

    ``runs`` (the training run of each checkpoint, in folder order): checkpoints of one run share
    their hidden units' identity, so each run is matched once (on its first checkpoint) and that
    permutation moves all of its checkpoints; the reference's run is left as it is. Matching every
    checkpoint alone can permute two epochs of one run differently (measured on the 10-run digits
    zoo: a generator with one state per run then ended at loss 0.09 instead of 0.0004).
    """
    start = time.perf_counter()
    folder = next((p for p in list_checkpoints(checkpoint_dir) if p.is_dir()), None)
    if folder is not None:
        raise RpgenError(f"{folder}: align_checkpoints reads checkpoint files (state_dicts), not adapter or model "
                         "folders")
    checkpoints = open_checkpoints(checkpoint_dir)
    paths = [c.path for c in checkpoints]
    stems = [p.stem for p in paths]
    twin = next((p for p in paths if stems.count(p.stem) > 1), None)
    if twin is not None:
        raise RpgenError(f"{twin}: another checkpoint of {checkpoint_dir} has the name {twin.stem!r}, and both would "
                         f"be written as {twin.stem}.safetensors")
    names = [p.name for p in paths]
    if isinstance(reference, str):
        if reference not in names:
            raise RpgenError(f"reference {reference!r} is not a checkpoint of {checkpoint_dir} ({names[0]}, ...)")
        reference = names.index(reference)
    if not 0 <= reference < len(paths):
        raise RpgenError(f"reference index {reference} is out of range for {len(paths)} checkpoints")
    if not isinstance(spec, PermutationSpec):
        spec = load_spec(spec, checkpoints[reference].meta())
    spec.check(checkpoints[reference].meta(), where=paths[reference])
    check_not_overlapping(out_dir, {"checkpoint folder": checkpoint_dir})
    ref_path = paths[reference]
    ref = load_state_dict(ref_path)
    summary: dict = {"reference": ref_path.name, "groups": spec.groups, "distance_before": {}, "distance_after": {}}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp, progress_bar(enabled=progress, show_loss=False) as bar:
        task = bar.add_task("aligning", total=len(paths))
        run_perms: dict[int, dict[str, Tensor] | None] = {}  # training run -> its permutation (None: the reference's)
        if runs is not None:
            run_perms[runs[reference]] = None
        for i, path in enumerate(paths):
            state_dict = ref if path == ref_path else load_state_dict(path)
            run = runs[i] if runs is not None else -1 - i  # without runs, every checkpoint is matched alone
            if run not in run_perms:
                run_perms[run] = (None if path == ref_path
                                  else weight_matching(ref, state_dict, spec, max_iter=max_iter, seed=seed))
            perms = run_perms[run]
            aligned = state_dict if perms is None else permute(state_dict, spec, perms)
            summary["distance_before"][path.name] = weight_distance(state_dict, ref)
            summary["distance_after"][path.name] = weight_distance(aligned, ref)
            metadata = {**_metadata(path), "aligned_to": ref_path.name}
            save_state_dict(aligned, tmp / f"{path.stem}.safetensors", metadata=metadata)
            bar.advance(task)
        summary["seconds"] = round(time.perf_counter() - start, 3)
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def _metadata(path: Path) -> dict[str, str]:
    """A safetensors file's metadata ({} for other files)."""
    if path.suffix.lower() != ".safetensors":
        return {}
    reader = SafetensorsReader(path)
    try:
        return dict(reader.metadata)
    finally:
        reader.close()


def load_model_factory(spec: str) -> nn.Module:
    """The model that ``module:factory`` or ``path/file.py:factory`` builds (called with no arguments)."""
    factory = resolve_callable(spec, what="model factory")
    try:
        model = factory()
    except Exception as exc:
        raise RpgenError(f"model factory {spec!r} raised {first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise RpgenError(f"model factory {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def check_matches(model: nn.Module, state_dict: Mapping[str, Tensor], path: str | Path) -> None:
    """Raise unless ``model``'s state_dict has the keys and shapes of checkpoint ``path``."""
    expected = model.state_dict()
    for key in [*expected, *(k for k in state_dict if k not in expected)]:
        if key not in state_dict:
            raise RpgenError(f"{path}: the model has key {key!r}, which the checkpoint does not hold")
        if key not in expected:
            raise RpgenError(f"{path}: the checkpoint has key {key!r}, which the model does not")
        if tuple(state_dict[key].shape) != tuple(expected[key].shape):
            raise RpgenError(f"{path}: key {key!r} has shape {list(state_dict[key].shape)}, the model's is "
                             f"{list(expected[key].shape)}")
