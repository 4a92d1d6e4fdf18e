"""Canonical checkpoints: permute hidden units to match a reference (Git Re-Basin weight matching).

- :mod:`~rpgen.align.spec`: :class:`PermutationSpec`, which axes each permutation moves; a spec
  file (:func:`load_spec` / :func:`save_spec`) or :func:`spec_from_model`, which traces a model
  (:mod:`~rpgen.align.tracing` lists what is supported).
- :mod:`~rpgen.align.matching`: :func:`weight_matching` finds the permutations, :func:`permute`
  applies them, :func:`interpolate` makes midpoints.
- :mod:`~rpgen.align.folder`: :func:`align_checkpoints` does both for a checkpoint folder.
- :mod:`~rpgen.align.factory`: :func:`load_model_factory` and :func:`check_matches` build the
  model to trace from a ``module:factory`` or ``path/file.py:factory`` spec.
"""

from rpgen.align.factory import check_matches, load_model_factory
from rpgen.align.folder import align_checkpoints
from rpgen.align.matching import interpolate, permute, weight_distance, weight_matching
from rpgen.align.spec import PermutationSpec, PermutedAxis, load_spec, save_spec, spec_from_model

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
