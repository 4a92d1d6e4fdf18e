"""Novelty, behavioural IoU, PCA and diversity in normalised weight space."""

from __future__ import annotations

import math

import pytest
import torch

from rpgen.evaluation.memorization import (
    diversity,
    misclassified_iou,
    nearest,
    pca_2d,
    reference,
)


def line_of_checkpoints(k: int = 6, p: int = 40) -> torch.Tensor:
    """(k, p) checkpoints spaced 1 apart along one axis (each one's nearest neighbour is at 1)."""
    points = torch.zeros(k, p)
    points[:, 0] = torch.arange(k, dtype=torch.float32)
    return points


def test_nearest_and_reference():
    checkpoints = line_of_checkpoints()
    ref = reference(checkpoints)
    assert ref.scale == pytest.approx(1.0)
    assert ref.indices.tolist() == [1, 0, 1, 2, 3, 4]
    models = checkpoints[[2, 4]].clone()
    models[1, 5] = 0.25  # a small step off checkpoint 4
    distance, index = nearest(models, checkpoints)
    assert index.tolist() == [2, 4]
    assert distance.tolist() == pytest.approx([0.0, 0.25])


def test_misclassified_iou():
    a = torch.tensor([True, False, False, True, True])
    b = torch.tensor([True, False, True, False, True])
    assert misclassified_iou(a, a) == 1.0
    assert misclassified_iou(a, b) == pytest.approx(1 / 3)  # wrong: {1, 2} vs {1, 3}
    assert misclassified_iou(torch.ones(4, dtype=torch.bool), torch.ones(4, dtype=torch.bool)) == 1.0
    assert misclassified_iou(~a, a) == 0.0


def test_pca_2d_finds_the_main_axis():
    checkpoints = line_of_checkpoints()
    others = torch.zeros(2, 40)
    others[:, 0] = torch.tensor([10.0, -4.0])
    ckpt_xy, other_xy, explained = pca_2d(checkpoints, others)
    assert ckpt_xy.shape == (6, 2) and other_xy.shape == (2, 2)
    assert explained[0] == pytest.approx(1.0)
    assert abs(float(other_xy[0, 0] - other_xy[1, 0])) == pytest.approx(14.0, rel=1e-5)


def test_diversity_counts_copies_and_duplicates():
    checkpoints = line_of_checkpoints()
    models = torch.zeros(4, 40)
    models[0, 0] = 2.0  # a copy of checkpoint 2
    models[1, 0], models[1, 1] = 2.0, 3.0  # far from every checkpoint
    models[2] = models[1]
    models[2, 2] = 0.1  # a near-duplicate of model 1
    models[3, 0], models[3, 1] = 2.0, -3.0  # far from the checkpoints and from model 1
    out = diversity(models, nearest(models, checkpoints)[0], scale=1.0)
    assert out["num_models"] == 4 and out["not_near_copies"] == 3 and out["distinct_models"] == 3
    assert out["nearest_other_generated"][1] == pytest.approx(0.1, rel=1e-4)


def test_models_with_nan_or_inf_weights_have_no_nearest_checkpoint_pca_position_or_diversity():
    checkpoints = line_of_checkpoints()
    models = torch.zeros(4, 40)
    models[0, 0] = 2.0  # a copy of checkpoint 2
    models[1, 0], models[1, 1] = 2.0, 3.0  # far from every checkpoint
    models[2, 3] = float("nan")
    models[3, 4] = float("inf")
    distance, index = nearest(models, checkpoints)
    assert index.tolist() == [2, 2, -1, -1]
    assert distance[:2].tolist() == pytest.approx([0.0, 3.0]) and distance[2:].isnan().all()
    # the finite models are measured exactly as without the broken ones
    ckpt_xy, other_xy, explained = pca_2d(checkpoints, models)
    clean_ckpt_xy, clean_xy, clean_explained = pca_2d(checkpoints, models[:2])
    assert torch.equal(ckpt_xy, clean_ckpt_xy) and torch.equal(other_xy[:2], clean_xy)
    assert explained == clean_explained and other_xy[2:].isnan().all()
    out = diversity(models, distance, scale=1.0)
    clean = diversity(models[:2], distance[:2], scale=1.0)
    assert out["num_models"] == 4 and out["not_near_copies"] == clean["not_near_copies"] == 1
    assert out["distinct_models"] == clean["distinct_models"] == 2
    assert out["nearest_other_generated"][:2] == clean["nearest_other_generated"]
    assert all(math.isnan(v) for v in out["nearest_other_generated"][2:])
    assert pca_2d(checkpoints, models[2:])[1].isnan().all()  # every model broken: still no error
