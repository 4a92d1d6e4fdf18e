"""Canonical checkpoints: Git Re-Basin weight matching (see :mod:`rpgen.align.matching`)."""

from rpgen.align.matching import (
    PermutationSpec,
    PermutedAxis,
    align_checkpoints,
    check_matches,
    interpolate,
    load_model_factory,
    load_spec,
    permute,
    save_spec,
    spec_from_model,
    weight_distance,
    weight_matching,
)

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
