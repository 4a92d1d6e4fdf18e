"""Git Re-Basin weight matching: the permutations that bring one checkpoint closest to another.

Permuting a layer's hidden units (its output rows, the next layer's input columns, the
normalisation vectors between them) leaves what a network computes unchanged, so independent
runs differ by an arbitrary permutation on top of their real differences. Weight matching
(Ainsworth et al. 2022, "Git Re-Basin", Algorithm 2) picks, for every checkpoint, the permutation
that brings its weights closest to one reference checkpoint; a generator then sees one
canonical form instead of many symmetric copies. :func:`permute` applies the permutations,
:func:`interpolate` makes the midpoint of two checkpoints (the classic test of alignment).

Shapes: n = units of a group, m = the other entries of a tensor seen from one of its axes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from rpgen.align.spec import PermutationSpec, PermutedAxis
from rpgen.errors import RpgenError


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
