"""User evaluators: resolve a spec to a callable, call it on one model, check what it returns.

Evaluator contract: a spec ``path/to/file.py:function`` or ``module:function`` names a callable
``evaluate(state_dict)`` or ``evaluate(state_dict, path)`` that returns ``dict[str, float]``.

- ``state_dict``: the model's tensors (name -> tensor), as the checkpoint folder holds them.
- ``path`` (only when the callable accepts a second positional argument, decided with
  :func:`inspect.signature`): the model's file or folder — a checkpoint file, a generated
  ``NNNN.safetensors``, a peft adapter folder — so the evaluator can read ``adapter_config.json``
  or ``config.json`` beside the weights instead of assuming settings. Baselines (checkpoints +
  noise, their average, midpoints) exist only in memory: their ``path`` is ``None``.
- The first key of the returned dict is the primary metric; higher is better unless its name
  contains ``loss`` or ``error``. Optionally the dict also holds ``"per_example"``: a 1-D sequence
  (list, tensor or array) of booleans or 0/1, one per evaluation example in a fixed order, True
  when the model handles that example correctly; it must have the same length for every model.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rpgen.callables import resolve_callable
from rpgen.errors import RpgenError

Evaluator = Callable[..., Mapping[str, Any]]
PER_EXAMPLE = "per_example"


def load_evaluator(spec: str) -> Evaluator:
    """Resolve ``path/to/file.py:function`` or ``module:function`` to the callable it names."""
    return resolve_callable(spec, what="evaluator")


def takes_path(fn: Evaluator) -> bool:
    """True when ``fn`` can be called as ``fn(state_dict, path)`` (else it is ``fn(state_dict)``)."""
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:  # one positional parameter only
        return False
    except ValueError:  # no signature (some builtins): the one-argument form
        return False
    return True


@dataclass
class Evaluation:
    """What an evaluator said about one model."""

    metrics: dict[str, float]
    correct: Tensor | None = None  # (E,) bool, when the evaluator returns ``per_example``


def run_evaluator(fn: Evaluator, state_dict: dict[str, torch.Tensor], *, name: str,
                  path: Path | None = None) -> Evaluation:
    """Call ``fn`` on one model; return its metrics as floats.

    ``name`` is used in errors; ``path`` is the model's file or folder (None for a baseline), passed
    on when ``fn`` takes a second argument (see the module docstring).
    """
    try:
        result = fn(state_dict, path) if takes_path(fn) else fn(state_dict)
    except SystemExit as exc:  # sys.exit() in an evaluator must not end rpgen as if it had succeeded
        raise RpgenError(f"evaluator called sys.exit({exc.code!r}) on {name}; return a dict of metrics") from None
    except Exception as exc:
        raise RpgenError(f"evaluator raised on {name}: {type(exc).__name__}: {exc}") from None
    if not isinstance(result, Mapping) or not result:
        raise RpgenError(
            f"evaluator returned {type(result).__name__} {_preview(result)} on {name}; "
            "expected a non-empty dict of str -> float"
        )
    metrics: dict[str, float] = {}
    correct = None
    for key, value in result.items():
        if not isinstance(key, str):
            raise RpgenError(f"evaluator returned a non-string key {key!r} on {name}")
        if key == PER_EXAMPLE:
            correct = _as_correct(value, name=name)
            continue
        number = _as_float(value)
        if number is None:
            raise RpgenError(f"evaluator returned {type(value).__name__} for {key!r} on {name}; expected a number")
        metrics[key] = number
    if not metrics:
        raise RpgenError(f"evaluator returned no metric on {name}, only {PER_EXAMPLE!r}")
    return Evaluation(metrics, correct)


def _as_correct(value: Any, *, name: str) -> Tensor:
    """``per_example`` as a (E,) bool tensor: a 1-D sequence of booleans (or 0/1), True = correct."""
    where = f"evaluator returned {PER_EXAMPLE!r} on {name}"
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (Sequence, np.ndarray, torch.Tensor)):
        raise RpgenError(f"{where} as {type(value).__name__}; expected a 1-D list of booleans (True = correct)")
    try:
        tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError, RuntimeError):
        raise RpgenError(f"{where} with values that are not booleans: {_preview(value)}") from None
    if tensor.dim() != 1 or tensor.numel() == 0:
        raise RpgenError(f"{where} with shape {list(tensor.shape)}; expected a non-empty 1-D list of booleans")
    if tensor.dtype != torch.bool:
        if tensor.is_complex() or not bool(((tensor == 0) | (tensor == 1)).all()):
            raise RpgenError(f"{where} with values that are not booleans (True = correct) or 0/1: {_preview(value)}")
        tensor = tensor != 0
    return tensor.detach().cpu()


def _as_float(value: Any) -> float | None:
    """A real number as float (NaN allowed); None for anything else (bools included)."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.dtype == torch.bool or value.is_complex():
            return None
        return float(value.item())
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def higher_is_better(metric: str) -> bool:
    """True unless the metric's name says it is a loss or an error."""
    lowered = metric.lower()
    return "loss" not in lowered and "error" not in lowered


def check_per_example(evaluations: Mapping[str, list[Evaluation]], *, where: Callable[[str, int], str]) -> bool:
    """True when every model of every group has per-example results of one length; False when none
    has; raise when only some do or the lengths differ. ``where(group, i)`` names a model in errors."""
    first: tuple[str, int, int | None] | None = None
    for group, group_evaluations in evaluations.items():
        for i, evaluation in enumerate(group_evaluations):
            length = None if evaluation.correct is None else len(evaluation.correct)
            if first is None:
                first = (group, i, length)
            elif length != first[2]:
                had = f"{first[2]} per-example results" if first[2] is not None else f"no {PER_EXAMPLE!r}"
                got = f"{length} per-example results" if length is not None else f"no {PER_EXAMPLE!r}"
                raise RpgenError(f"evaluator returned {got} on {where(group, i)} but {had} on "
                                 f"{where(first[0], first[1])}; it must return the same examples for every model")
    return first is not None and first[2] is not None
