"""Statistics and the sentences that judge them: summarize, verdict, comparison_line."""

from __future__ import annotations

import math

import pytest

from rpgen.evaluation.result import EvaluationResult
from rpgen.evaluation.verdict import comparison_line, median, summarize, verdict

CHECKPOINTS = [98.0, 98.5, 99.0, 98.2]


def _result(*, novelty: float, gen: list[float], noise: list[float], nonfinite: int = 0) -> EvaluationResult:
    """A result with the numbers the sentences read; the first ``nonfinite`` generated models are broken."""
    gen_novelty = [math.nan] * nonfinite + [novelty] * (len(gen) - nonfinite)
    files = [f"{i:04d}.safetensors" for i in range(len(gen))]
    return EvaluationResult(
        metric="accuracy", higher_is_better=True, evaluator="e.py:f", checkpoints=CHECKPOINTS, generated=gen,
        baselines={"noise_matched": noise}, checkpoint_files=[f"c{i}" for i in range(len(CHECKPOINTS))],
        generated_files=files, checkpoint_metrics=[], generated_metrics=[],
        novelty={"generated": gen_novelty, "checkpoints": [1.0] * len(CHECKPOINTS),
                 "noise_matched": [novelty] * len(noise)},
        novelty_unit=1.0, nearest_checkpoint={}, iou=None, pca={}, diversity={},
        summary={"checkpoints": summarize(CHECKPOINTS), "generated": summarize(gen),
                 "noise_matched": summarize(noise)},
        nonfinite_generated=files[:nonfinite])


def test_summarize_and_median_skip_nonfinite_values():
    summary = summarize([1.0, math.nan, 3.0, math.inf])
    assert (summary.n, summary.n_nonfinite, summary.mean, summary.min, summary.max, summary.std) == (
        4, 2, 2.0, 1.0, 3.0, 1.0)
    empty = summarize([math.nan])
    assert empty.n_nonfinite == 1 and empty.mean is None and empty.std is None
    assert median([3.0, math.nan, 1.0, 2.0]) == 2.0 and median([1.0, 2.0]) == 1.5 and median([math.nan]) is None


@pytest.mark.parametrize(
    ("novelty", "gen", "noise", "expected"),
    [
        (0.1, [98.4, 98.6, 98.5], [98.4, 98.6, 98.5], ["near-copies", "about as well as noise"]),
        (3.0, [98.4, 98.6, 98.5, 98.3], [95.0, 94.0, 96.0, 95.5], ["are new models", "better than noise"]),
        (3.0, [60.0, 50.0, 55.0], [97.0, 97.5, 96.5], ["new but broken models", "98.00", "worse than noise"]),
    ],
)
def test_verdict(novelty, gen, noise, expected):
    text = verdict(_result(novelty=novelty, gen=gen, noise=noise))
    for part in expected:
        assert part in text
    assert "non-finite" not in text


def test_verdict_says_how_many_generated_models_are_nonfinite():
    text = verdict(_result(novelty=3.0, gen=[10.0, 98.4, 98.6, 98.5], noise=[95.0, 94.0, 96.0], nonfinite=1))
    assert text.startswith("1 of 4 generated models have non-finite weights (NaN/inf)")
    assert "median novelty 3.00" in text  # the finite ones are still judged
    everything = verdict(_result(novelty=3.0, gen=[10.0, 10.0], noise=[95.0], nonfinite=2))
    assert everything.startswith("All 2 generated models have non-finite weights (NaN/inf): they are broken")


def test_comparison_line():
    worse = comparison_line(_result(novelty=3.0, gen=[97.0, 96.0], noise=[95.0]))
    assert "1.92 lower accuracy than the training checkpoints (96.50 vs 98.42, worse)" in worse
    assert "worst generated model scores 96.00 against 98.00" in worse
    same = comparison_line(_result(novelty=3.0, gen=[98.425], noise=[95.0]))
    assert "average the same accuracy" in same
    nothing = comparison_line(_result(novelty=3.0, gen=[math.nan], noise=[95.0]))
    assert nothing == "No finite accuracy values to compare."


def test_the_verdict_names_the_strongest_model_made_without_a_generator():
    result = _result(novelty=3.0, gen=[98.4, 98.6, 98.5, 98.3], noise=[95.0, 94.0, 96.0, 95.5])
    result.baselines.update(average=[98.45], gaussian=[97.0, 96.0])
    result.summary.update(average=summarize([98.45]), gaussian=summarize([97.0, 96.0]))
    text = verdict(result)
    assert ("The strongest model made without a generator, average of all checkpoints, scores 98.45: the generator "
            "does about as well as it (margin +0.00 +- 0.06); within noise of it") in text
    result.summary.update(average=summarize([90.0]))
    assert "gaussian" not in verdict(result) and "Gaussian fitted to each coordinate" in verdict(result)
    assert "does better than it (margin +1.95 +- " in verdict(result)
    result.summary.update(average=summarize([99.5]))
    assert "does worse than it (margin -1.05 +- 0.06); train longer" in verdict(result)
