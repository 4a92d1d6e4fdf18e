"""Evaluation: does the generator make working models, and are they more than copies?

- :mod:`~rpgen.evaluation.evaluator`: load a user evaluator (``file.py:function`` or
  ``module:function``), call it on a model, check what it returns (the evaluator contract).
- :mod:`~rpgen.evaluation.pipeline`: :func:`evaluate_run` / :func:`evaluate_models`, the
  orchestration, returning an :class:`~rpgen.evaluation.result.EvaluationResult`.
- :mod:`~rpgen.evaluation.baselines`: models made without a generator (noise, average, midpoints,
  the least-squares map of a conditional zoo).
- :mod:`~rpgen.evaluation.memorization`: novelty, behavioural IoU, PCA, diversity.
- :mod:`~rpgen.evaluation.verdict`: statistics and the sentences that judge the numbers.
- :mod:`~rpgen.evaluation.report` and :mod:`~rpgen.evaluation.plots`: report.md, the CLI table, PNGs.
"""

from rpgen.evaluation.evaluator import load_evaluator
from rpgen.evaluation.pipeline import evaluate_models, evaluate_run
from rpgen.evaluation.result import EvaluationResult, Summary

__all__ = ["EvaluationResult", "Summary", "evaluate_models", "evaluate_run", "load_evaluator"]
