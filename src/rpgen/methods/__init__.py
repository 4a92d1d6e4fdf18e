"""The methods a run can use (``model.method``), by name: the one place that maps names to code.

- ``rpg``: the product, recurrent backbone + per-token diffusion (:mod:`rpgen.methods.rpg`);
- ``mse``: the no-diffusion ablation, backbone + linear head (:mod:`rpgen.methods.mse`);
- ``pdiff``: the p-diff baseline, autoencoder + latent diffusion (:mod:`rpgen.methods.pdiff`).

A new method subclasses :class:`~rpgen.methods.base.Method` (or
:class:`~rpgen.methods.tokens.TokenMethod` when it works token by token), is listed in
:data:`METHODS`, and its name is added to ``rpgen.config.Method``.
"""

from __future__ import annotations

from typing import get_args

from rpgen.config import Method as MethodName
from rpgen.errors import RpgenError
from rpgen.methods.base import Method, Stage, TrainingSet
from rpgen.methods.mse import MSE
from rpgen.methods.pdiff import PDiff
from rpgen.methods.rpg import RPG

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (RPG, MSE, PDiff)}
assert set(METHODS) == set(get_args(MethodName)), "rpgen.config.Method and METHODS disagree"


def get_method(name: str) -> Method:
    """The method called ``name`` (``model.method`` of a config)."""
    if name not in METHODS:
        raise RpgenError(f"config model.method = {name!r} is not one of {', '.join(map(repr, METHODS))}")
    return METHODS[name]()


__all__ = ["METHODS", "Method", "Stage", "TrainingSet", "get_method"]
