"""Evaluator for the tiny ViT zoo (spec: examples/tiny_vit/evaluator.py:evaluate): test accuracy
in percent, and which test examples the model gets right."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import torch


@lru_cache(maxsize=1)
def _setup():
    spec = importlib.util.spec_from_file_location("tiny_vit_model", Path(__file__).with_name("model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, x_test, _, y_test = module.split()
    return module, x_test, y_test


def evaluate(state_dict: dict[str, torch.Tensor]) -> dict[str, float | list[bool]]:
    vit, x_test, y_test = _setup()
    model = vit.TinyViT()
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    with torch.inference_mode():
        correct = model(x_test).argmax(dim=1) == y_test
    return {"accuracy": 100.0 * int(correct.sum()) / len(y_test), "per_example": correct.tolist()}
