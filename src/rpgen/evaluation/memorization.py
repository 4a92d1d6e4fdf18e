"""Does a generator copy its training checkpoints? Novelty, behaviour, PCA and diversity.

Pure functions over weight vectors. A model's vector is :func:`rpgen.data.tokenizer.flatten` of its
state dict: every generated value, normalised per tensor with the checkpoint set's statistics,
so one unit is one standard deviation of that tensor across the checkpoints.

Glossary: ``K`` training checkpoints, ``M`` other models (generated or baselines), ``P`` values
per model, ``E`` evaluation examples.

- Baselines (:mod:`rpgen.evaluation.baselines`) are measured the same way as generated models.
- Novelty of a model = distance to its nearest training checkpoint / the median distance from a
  checkpoint to its nearest other checkpoint. 0 is a copy; about 1 is as far from the training
  set as the checkpoints are from each other.
- Behaviour: the IoU of the sets of misclassified examples of a model and its nearest checkpoint.
  1 means the two models get exactly the same examples wrong.

Models (never the checkpoints) may have non-finite (NaN/inf) weights: such a model has no nearest
checkpoint (distance NaN, index -1), no PCA position (NaN) and takes no part in diversity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

NEAR_COPY = 0.5  # novelty below this: closer to one checkpoint than half the checkpoints' own spacing


def nearest(models: Tensor, checkpoints: Tensor, *, exclude_self: bool = False) -> tuple[Tensor, Tensor]:
    """Distance to and index of each model's nearest checkpoint: (M, P), (K, P) -> (M,), (M,).

    With ``exclude_self`` the models are the checkpoints themselves and each skips its own row.
    A model with non-finite weights gets distance NaN and index -1.
    """
    finite = models.isfinite().all(dim=1)  # (M,)
    models = torch.where(finite[:, None], models, 0.0)  # finite rows computed exactly as without the others
    distances = torch.cdist(models.double(), checkpoints.double())  # (M, K)
    if exclude_self:
        distances.fill_diagonal_(float("inf"))
    values, indices = distances.min(dim=1)
    values = values.masked_fill(~finite, float("nan"))
    indices = indices.masked_fill(~finite, -1)
    return values, indices


@dataclass(frozen=True)
class Reference:
    """The checkpoints' own spacing: each checkpoint's nearest other checkpoint."""

    distances: Tensor  # (K,) distance to the nearest other checkpoint
    indices: Tensor  # (K,) its index
    scale: float  # median of ``distances``: the unit of novelty


def reference(checkpoints: Tensor) -> Reference:
    """Nearest-neighbour structure of (K, P) checkpoints (K >= 2)."""
    distances, indices = nearest(checkpoints, checkpoints, exclude_self=True)
    scale = float(distances.median())
    return Reference(distances, indices, scale if scale > 0 else 1.0)


def misclassified_iou(correct_a: Tensor, correct_b: Tensor) -> float:
    """IoU of the misclassified sets of two models, from (E,) bool "correct" vectors.

    Two models that both make no mistakes count as identical (1.0).
    """
    wrong_a, wrong_b = ~correct_a, ~correct_b
    union = int((wrong_a | wrong_b).sum())
    return 1.0 if union == 0 else int((wrong_a & wrong_b).sum()) / union


def pca_2d(checkpoints: Tensor, others: Tensor) -> tuple[Tensor, Tensor, list[float]]:
    """Project (K, P) checkpoints and (M, P) other models on the first two principal axes of both.

    Returns (K, 2), (M, 2) and the fraction of variance each axis explains. Models with non-finite
    weights take no part in the axes and get NaN coordinates.
    """
    finite = others.isfinite().all(dim=1)  # (M,)
    if not bool(finite.all()):
        ckpt_xy, finite_xy, explained = pca_2d(checkpoints, others[finite])
        others_xy = torch.full((others.shape[0], 2), float("nan"))
        others_xy[finite] = finite_xy
        return ckpt_xy, others_xy, explained
    points = torch.cat([checkpoints, others]).double()  # (K + M, P)
    centred = points - points.mean(dim=0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    axes = vh[:2]  # (2, P)
    coords = centred @ axes.T  # (K + M, 2)
    if coords.shape[1] < 2:
        coords = torch.nn.functional.pad(coords, (0, 2 - coords.shape[1]))
    variance = s.pow(2)
    explained = (variance[:2] / variance.sum().clamp_min(1e-30)).tolist()
    k = checkpoints.shape[0]
    return coords[:k].float(), coords[k:].float(), explained


def diversity(models: Tensor, novelty: Tensor, *, scale: float, threshold: float = NEAR_COPY) -> dict:
    """How many of (M, P) models, with (M,) novelty, are distinct from the checkpoints and each other.

    A model is a near-copy of a checkpoint when its novelty is below ``threshold``; two models
    are near-duplicates when their distance is below ``threshold * scale``. ``distinct_models``
    counts greedy clusters: models are taken in order and each starts a new group unless it is a
    near-duplicate of an earlier group's first model. Models with non-finite weights are counted in
    ``num_models`` only (their ``nearest_other_generated`` is NaN).
    """
    finite = models.isfinite().all(dim=1)  # (M,)
    safe = torch.where(finite[:, None], models, 0.0).double()  # (M, P)
    pairwise = torch.cdist(safe, safe)  # (M, M)
    pairwise[:, ~finite] = float("inf")
    leaders: list[int] = []
    for i in range(models.shape[0]):
        if finite[i] and not any(pairwise[i, j] < threshold * scale for j in leaders):
            leaders.append(i)
    if models.shape[0] > 1:
        pairwise.fill_diagonal_(float("inf"))
        to_other = (pairwise.min(dim=1).values / scale).masked_fill(~finite, float("nan")).tolist()
    else:
        to_other = []
    return {
        "num_models": models.shape[0],
        "threshold": threshold,
        "not_near_copies": int((novelty >= threshold).sum()),
        "distinct_models": len(leaders),
        "nearest_other_generated": to_other,
    }
