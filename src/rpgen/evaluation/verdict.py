"""The numbers behind the words: group statistics, the one-sentence verdict, the comparison line.

Two groups "differ" when their means are more than 2 standard errors apart.
"""

from __future__ import annotations

import math

from rpgen.evaluation.baselines import SUBSET, baseline_label
from rpgen.evaluation.memorization import NEAR_COPY
from rpgen.evaluation.result import EvaluationResult, Summary


def summarize(values: list[float]) -> Summary:
    """n, mean, min, max and (population) std over the finite values; ``n_nonfinite`` counts the rest."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return Summary(n=len(values), n_nonfinite=len(values), mean=None, min=None, max=None, std=None)
    mean = math.fsum(finite) / len(finite)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / len(finite))
    return Summary(n=len(values), n_nonfinite=len(values) - len(finite), mean=mean, min=min(finite),
                   max=max(finite), std=std)


def median(values: list[float]) -> float | None:
    """The median of the finite values; None when there is none."""
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return None
    mid = len(finite) // 2
    return finite[mid] if len(finite) % 2 else 0.5 * (finite[mid - 1] + finite[mid])


def nonfinite_sentence(result: EvaluationResult) -> str:
    """How many generated models have NaN/inf weights ("" when none)."""
    broken, total = len(result.nonfinite_generated), len(result.generated_files)
    if not broken:
        return ""
    return (f"{broken} of {total} generated models have non-finite weights (NaN/inf): broken, and left out of "
            "novelty, nearest checkpoint and PCA.")


def verdict(result: EvaluationResult) -> str:
    """One sentence: are the generated models copies, and do they beat noise at the same distance?

    Prefixed by how many generated models have non-finite weights, when some do.
    """
    broken, total = len(result.nonfinite_generated), len(result.generated_files)
    if broken == total:
        return (f"All {total} generated models have non-finite weights (NaN/inf): they are broken; no novelty, "
                "nearest checkpoint or PCA for them.")
    prefix = f"{nonfinite_sentence(result)} " if broken else ""
    gen, ckpt = result.summary["generated"], result.summary["checkpoints"]
    novelty = median(result.novelty["generated"])
    if novelty is None or gen.mean is None or ckpt.mean is None:
        return prefix + "No verdict: no finite values to compare."
    high = result.higher_is_better
    worst = ckpt.min if high else ckpt.max
    if novelty < NEAR_COPY:
        kind = "near-copies of training checkpoints"
    elif (gen.mean < worst) == high and gen.mean != worst:
        kind = f"new but broken models (on average worse than the worst checkpoint, {worst:.2f})"
    else:
        kind = "new models"
    text = (f"Generated models are {kind}: median novelty {novelty:.2f} (0 = a copy, 1 = as far from the "
            f"training set as the checkpoints are from each other), mean {result.metric} {gen.mean:.2f} vs "
            f"{ckpt.mean:.2f} for the checkpoints")
    iou = median(result.iou["generated"]) if result.iou else None
    if iou is not None:
        text += f", median IoU {iou:.2f} of misclassified examples with the nearest checkpoint"
    noise = [(name, median(result.novelty[name])) for name in result.baselines if name.startswith("noise_")]
    noise = [(name, value) for name, value in noise if value is not None and value > 0]
    if noise:
        name, value = min(noise, key=lambda item: (item[0] != "noise_matched",
                                                   abs(math.log(item[1] / max(novelty, 1e-12)))))
        other = result.summary[name]
        if other.mean is not None:
            text += (f". Checkpoints moved about as far by noise ({baseline_label(name)}, novelty {value:.2f}) "
                     f"score {other.mean:.2f}: the generator does {compare(gen, other, higher_is_better=high)}"
                     " noise")
    return prefix + text + "." + strongest_sentence(result)


MADE_WITHOUT_GENERATOR = ("average", f"averaged_{SUBSET}", "gaussian", "interpolation", "noise_matched")
"""The baselines a generator must beat to have learnt more than the checkpoints' mean and spread;
the fixed noise scales are a sweep, not a rival (the verdict compares the matched one)."""


def strongest_sentence(result: EvaluationResult) -> str:
    """" The strongest model made without a generator, X, scores M: the generator does better than
    / about as well as / worse than it (margin +- SE) ..." with what that means; "" without baselines."""
    gen, high = result.summary["generated"], result.higher_is_better
    rivals = [(name, result.summary[name]) for name in MADE_WITHOUT_GENERATOR
              if name in result.summary and result.summary[name].mean is not None]
    if not rivals or gen.mean is None:
        return ""
    name, best = max(rivals, key=lambda item: item[1].mean if high else -item[1].mean)
    se = standard_error(gen, best)
    margin = (gen.mean - best.mean) * (1 if high else -1)
    word = compare(gen, best, higher_is_better=high)
    meaning = {"better than": "the generator has learnt more than the checkpoints' mean and spread",
               "about as well as": ("within noise of it: on a zoo of one training run that is expected (its "
                                    "checkpoints are near-copies); on several runs, train longer or with --evaluator"),
               "worse than": "train longer (or with --evaluator), or centre the tokens per element (data.center)"}
    return (f" The strongest model made without a generator, {baseline_label(name)}, scores {best.mean:.2f}: the "
            f"generator does {word} it (margin {margin:+.2f} +- {se:.2f}); {meaning[word]}.")


def against_noise(result: EvaluationResult) -> dict | None:
    """Generated models against checkpoints moved as far by noise: the point of the accuracy-vs-novelty
    frontier a generator must beat. None without a ``noise_matched`` baseline.

    ``margin`` = generated mean - noise mean (sign: positive is better), ``standard_error`` of that
    difference, ``beats_noise`` when the margin is above 2 standard errors.
    """
    gen, noise = result.summary["generated"], result.summary.get("noise_matched")
    if noise is None or gen.mean is None or noise.mean is None:
        return None
    se = standard_error(gen, noise)
    margin = (gen.mean - noise.mean) * (1 if result.higher_is_better else -1)
    return {"novelty": median(result.novelty["generated"]), "generated_mean": gen.mean,
            "noise_novelty": median(result.novelty["noise_matched"]), "noise_mean": noise.mean,
            "margin": margin, "standard_error": se, "beats_noise": margin > 2 * se}


def standard_error(a: Summary, b: Summary) -> float:
    """Standard error of the difference of two groups' means (over their finite values)."""
    return math.sqrt(a.std ** 2 / (a.n - a.n_nonfinite) + b.std ** 2 / (b.n - b.n_nonfinite))


def compare(a: Summary, b: Summary, *, higher_is_better: bool) -> str:
    """"better than", "worse than" or "about as well as": means more than 2 standard errors apart or not."""
    diff = a.mean - b.mean
    if abs(diff) <= 2 * standard_error(a, b):
        return "about as well as"
    return "better than" if (diff > 0) == higher_is_better else "worse than"


def comparison_line(result: EvaluationResult) -> str:
    """One plain-language sentence comparing generated models with the training checkpoints."""
    metric, better_high = result.metric, result.higher_is_better
    ckpt, gen = result.summary["checkpoints"], result.summary["generated"]
    if gen.mean is None or ckpt.mean is None:
        return f"No finite {metric} values to compare."
    worst = "min" if better_high else "max"
    diff = gen.mean - ckpt.mean
    direction = "higher" if diff > 0 else "lower"
    judgement = "better" if (diff > 0) == better_high else "worse"
    if diff == 0:
        head = f"Generated models average the same {metric} as the training checkpoints ({gen.mean:.2f})"
    else:
        head = (
            f"Generated models average {abs(diff):.2f} {direction} {metric} than the training checkpoints "
            f"({gen.mean:.2f} vs {ckpt.mean:.2f}, {judgement})"
        )
    return (
        f"{head}; the worst generated model scores {getattr(gen, worst):.2f} against {getattr(ckpt, worst):.2f} "
        f"for the worst checkpoint ({'higher' if better_high else 'lower'} is better)."
    )
