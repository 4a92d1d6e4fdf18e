"""The built-in digits zoo: real training, real files, reproducible."""

from __future__ import annotations

import pytest
import torch

from rpgen.data.checkpoint_set import CheckpointSet
from rpgen.formats.checkpoints import load_state_dict
from rpgen.errors import RpgenError
from rpgen.zoo.digits import NAME, DigitsCNN, collect_digits, evaluate, load_split


def test_model_size_and_shapes():
    model = DigitsCNN()
    assert 5_000 <= sum(p.numel() for p in model.parameters()) <= 7_000
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)


def test_split_is_fixed_and_fresh():
    x_train, y_train, x_test, y_test = load_split()
    assert x_train.shape == (1257, 1, 8, 8) and x_test.shape == (540, 1, 8, 8)
    assert y_train.shape == (1257,) and y_test.dtype == torch.int64
    assert 0.0 <= float(x_train.min()) and float(x_train.max()) <= 1.0
    assert torch.bincount(y_test).min() >= 50  # stratified: every class is in the test set
    x_train[:] = -1  # callers get their own tensors; the cached split is unharmed
    again = load_split()
    assert torch.equal(again[2], x_test) and float(again[0].min()) >= 0.0


def test_zoo_files_load_strictly_and_are_good_distinct_models(digits_zoo):
    paths = CheckpointSet.open(digits_zoo).paths
    state_dicts = [load_state_dict(p) for p in paths]
    assert [p.name for p in paths] == [f"{i:04d}.safetensors" for i in range(5)]
    for sd in state_dicts:
        DigitsCNN().load_state_dict(sd, strict=True)
    accuracies = [evaluate(sd)["accuracy"] for sd in state_dicts]
    assert all(90.0 < a <= 100.0 for a in accuracies), accuracies
    # consecutive epochs: close to each other, but not copies
    first, last = state_dicts[0]["conv3.weight"], state_dicts[-1]["conv3.weight"]
    assert not torch.equal(first, last)
    assert float((first - last).norm() / first.norm()) < 0.5


def test_evaluate_untrained_model_is_near_chance():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        accuracy = evaluate(DigitsCNN().state_dict())["accuracy"]
    assert accuracy < 40.0


def test_same_seed_same_tensors_other_seed_differs(digits_zoo, tmp_path):
    paths = collect_digits(tmp_path / "again", num_checkpoints=3, seed=0, progress=False)
    assert [p.name for p in paths] == ["0000.safetensors", "0001.safetensors", "0002.safetensors"]
    for path in paths:  # same seed: the first epochs of the 5-checkpoint zoo, bit for bit
        a, b = load_state_dict(path), load_state_dict(digits_zoo / path.name)
        assert all(torch.equal(a[k], b[k]) for k in a)

    other = collect_digits(tmp_path / "again", num_checkpoints=2, seed=1, overwrite=True, progress=True)
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == [".rpgen", "0000.safetensors", "0001.safetensors"]
    a, b = load_state_dict(other[0]), load_state_dict(digits_zoo / "0000.safetensors")
    assert not torch.equal(a["conv1.weight"], b["conv1.weight"])


def test_refuses_existing_folder_and_tiny_zoo(tmp_path):
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "keep.txt").write_text("mine")
    with pytest.raises(RpgenError, match="already exists"):
        collect_digits(tmp_path / "zoo", num_checkpoints=2, progress=False)
    assert (tmp_path / "zoo" / "keep.txt").read_text() == "mine"
    with pytest.raises(RpgenError, match="at least 2"):
        collect_digits(tmp_path / "new", num_checkpoints=1, progress=False)
    assert not (tmp_path / "new").exists()
    assert NAME == "digits"


def test_several_runs_make_a_diverse_zoo(digits_zoo, tmp_path):
    paths = collect_digits(tmp_path / "diverse", num_checkpoints=4, seed=0, runs=2, progress=False)
    assert [p.name for p in paths] == ["r00_0000.safetensors", "r00_0001.safetensors",
                                       "r01_0000.safetensors", "r01_0001.safetensors"]
    same = load_state_dict(paths[0]), load_state_dict(digits_zoo / "0000.safetensors")
    assert all(torch.equal(same[0][k], same[1][k]) for k in same[0])  # run 0 = seed 0's run
    from safetensors import safe_open

    with safe_open(str(paths[2]), framework="pt") as f:
        assert f.metadata()["seed"] == "1"
    # checkpoints of different runs are much further apart than consecutive epochs of one run
    a, b, c = (load_state_dict(p)["conv3.weight"] for p in paths[:3])
    assert float((a - c).norm()) > 3 * float((a - b).norm())
    with pytest.raises(RpgenError, match=r"runs must be >= 1 and divide num_checkpoints \(5\), got 2"):
        collect_digits(tmp_path / "bad", num_checkpoints=5, runs=2, progress=False)
