"""Evaluator for the checkpoints of make_checkpoints.py (spec: examples/own_checkpoints/evaluator.py:evaluate).

An evaluator takes a state_dict and returns a dict of floats; the first key is the primary metric.
This file is loaded by path, so it is self-contained: it defines the model class again.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F


class DigitsMLP(nn.Module):
    """(B, 64) pixels in [0, 1] -> (B, 10) logits; the same class as in make_checkpoints.py."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(64, 32)
        self.norm = nn.LayerNorm(32)
        self.out = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.norm(self.hidden(x))))  # (B, 10)


@lru_cache(maxsize=1)
def _test_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The test part of the fixed stratified 70/30 split: (540, 64) inputs, (540,) labels."""
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.int64)
    _, x_test, _, y_test = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    return x_test, y_test


def evaluate(state_dict: dict[str, torch.Tensor]) -> dict[str, float]:
    """Test accuracy in percent."""
    model = DigitsMLP()
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    x_test, y_test = _test_split()
    with torch.inference_mode():
        predicted = model(x_test).argmax(dim=1)
    return {"accuracy": 100.0 * int((predicted == y_test).sum()) / len(y_test)}
