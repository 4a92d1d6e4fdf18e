"""The model to trace, built from a ``module:factory`` or ``path/file.py:factory`` spec and checked
against a checkpoint (``rpgen train --align weight-matching --model SPEC``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from rpgen.callables import resolve_callable
from rpgen.errors import RpgenError, first_line


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
