"""Evaluate training checkpoints, generated models and baselines; write results.json, report.md, plots.

The orchestration only: the run directory says which checkpoints it trained on
(:class:`rpgen.run_dir.RunDir`), the evaluator is loaded and checked by
:mod:`rpgen.evaluation.evaluator`, the baselines come from :mod:`rpgen.evaluation.baselines`, the
measures from :mod:`rpgen.evaluation.memorization`, the sentences from
:mod:`rpgen.evaluation.verdict`, the files from :mod:`rpgen.evaluation.report` and
:mod:`rpgen.evaluation.plots`. Every model is read once.

Glossary: ``K`` training checkpoints, ``M`` generated models, ``P`` values per model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor

import rpgen.evaluation.memorization as memorization
from rpgen.data.checkpoint_set import CheckpointSet
from rpgen.data.tokenizer import Layout, fit_layout, flatten, unflatten
from rpgen.display import progress_bar
from rpgen.errors import RpgenError
from rpgen.evaluation.baselines import baselines
from rpgen.evaluation.evaluator import (
    Evaluation,
    Evaluator,
    check_per_example,
    higher_is_better,
    load_evaluator,
    run_evaluator,
)
from rpgen.evaluation.plots import plot_evaluation
from rpgen.evaluation.report import format_report
from rpgen.evaluation.result import EvaluationResult
from rpgen.evaluation.verdict import against_noise, summarize, verdict
from rpgen.formats.checkpoints import check_structure, load_state_dict, structure
from rpgen.formats.listing import is_checkpoint, list_checkpoints
from rpgen.run_dir import RunDir
from rpgen.safety.atomic import write_text_atomic


def evaluate_run(
    run_dir: str | Path,
    generated_dir: str | Path,
    evaluator_spec: str,
    *,
    with_baselines: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate the generated models in ``generated_dir`` against the training checkpoints of a run."""
    checkpoints = RunDir(run_dir).training_checkpoints()
    generated_dir = Path(generated_dir)
    if not generated_dir.is_dir():
        raise RpgenError(f"generated folder {generated_dir} does not exist")
    if generated_dir.resolve() == Path(checkpoints.folder).resolve():  # the report would land in the zoo
        raise RpgenError(f"--generated {generated_dir} is the run's checkpoint folder; evaluate the folder "
                         "rpgen generate wrote")
    if not any(is_checkpoint(p) for p in generated_dir.iterdir()):
        raise RpgenError("no generated models (*.safetensors files, peft adapter folders or model folders) in "
                         f"{generated_dir}")
    return evaluate_models(checkpoints, list_checkpoints(generated_dir), evaluator_spec, out_dir=generated_dir,
                           with_baselines=with_baselines, seed=seed, progress=progress)


def evaluate_models(
    checkpoints: CheckpointSet | Sequence[str | Path],
    generated_paths: Sequence[str | Path],
    evaluator_spec: str,
    *,
    out_dir: Path,
    with_baselines: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate training checkpoints (a set, or their paths), generated models and baselines; write the report.

    Writes ``out_dir/results.json`` (:meth:`EvaluationResult.to_dict`), ``report.md`` and its PNG
    plots. Generated models must match the first checkpoint's keys, shapes and dtypes; those with
    NaN/inf weights are evaluated and reported as such (no novelty, nearest checkpoint or PCA
    position). ``seed`` draws the baselines' noise and pairs. See
    :mod:`rpgen.evaluation.memorization` for the measures.
    """
    out_dir = Path(out_dir)
    checkpoint_paths = [Path(p) for p in (checkpoints.paths if isinstance(checkpoints, CheckpointSet) else checkpoints)]
    generated_paths = [Path(p) for p in generated_paths]
    if not checkpoint_paths:
        raise RpgenError("no training checkpoints to evaluate")
    if not generated_paths:
        raise RpgenError(f"no generated models to evaluate (expected *.safetensors files in {out_dir})")
    fn = load_evaluator(evaluator_spec)
    with progress_bar(enabled=progress, show_loss=False) as bar:
        task = bar.add_task("evaluating", total=len(checkpoint_paths) + len(generated_paths))
        models = _evaluate_models(fn, checkpoint_paths, generated_paths, advance=lambda: bar.advance(task))
        baseline_vectors = (baselines(models.checkpoints, seed=seed, matched_distance=models.matched_distance())
                            if with_baselines else {})
        bar.update(task, total=len(checkpoint_paths) + len(generated_paths)
                   + sum(len(v) for v in baseline_vectors.values()))
        baseline_evaluations = _evaluate_baselines(fn, baseline_vectors, models, advance=lambda: bar.advance(task))
    result = _result(evaluator_spec, models, baseline_vectors, baseline_evaluations)
    result = dataclasses.replace(result, verdict=verdict(result), against_noise=against_noise(result))
    out_dir.mkdir(parents=True, exist_ok=True)
    result = dataclasses.replace(result, plots=plot_evaluation(result, out_dir))
    write_text_atomic(out_dir / "results.json", result.to_json())
    write_text_atomic(out_dir / "report.md", format_report(result))
    return result


@dataclass
class _Models:
    """The checkpoints and generated models, evaluated and flattened (each file read once)."""

    paths: dict[str, list[Path]]  # "generated", "checkpoints"
    evaluations: dict[str, list[Evaluation]]
    layout: Layout  # statistics of the checkpoints (token size 1: only the normalisation counts)
    reference: dict[str, Tensor]  # the first checkpoint, which gives baselines their copied tensors
    checkpoints: Tensor  # (K, P)
    generated: Tensor  # (M, P)

    @property
    def finite(self) -> Tensor:
        """(M,) False for a generated model with NaN/inf weights."""
        return self.generated.isfinite().all(dim=1)

    @cached_property
    def nearest(self) -> tuple[Tensor, Tensor]:
        """Distance to and index of each generated model's nearest checkpoint (NaN, -1 where not finite)."""
        return memorization.nearest(self.generated, self.checkpoints)

    def matched_distance(self) -> float | None:
        """The generated models' median distance to their nearest checkpoint (None when none is finite)."""
        distance, finite = self.nearest[0], self.finite
        return float(distance[finite].quantile(0.5)) if bool(finite.any()) else None


def _evaluate_models(fn: Evaluator, checkpoint_paths: list[Path], generated_paths: list[Path], *,
                     advance) -> _Models:
    """Read every checkpoint once (the statistics come from them), then evaluate and flatten the
    generated models first, so that a structure mismatch fails before the long part."""
    state_dicts = [load_state_dict(p) for p in checkpoint_paths]
    reference = structure(state_dicts[0])
    layout = fit_layout(state_dicts, token_size=1)
    evaluations: dict[str, list[Evaluation]] = {"generated": [], "checkpoints": []}
    vectors: dict[str, list[Tensor]] = {"generated": [], "checkpoints": []}
    loaders = {"generated": (load_state_dict(p) for p in generated_paths), "checkpoints": iter(state_dicts)}
    for group, paths in (("generated", generated_paths), ("checkpoints", checkpoint_paths)):
        for path, state_dict in zip(paths, loaders[group]):
            check_structure(reference, state_dict, name=path, reference_name=checkpoint_paths[0])
            evaluations[group].append(run_evaluator(fn, state_dict, name=str(path), path=path))
            vectors[group].append(flatten(state_dict, layout))
            advance()
    return _Models({"generated": generated_paths, "checkpoints": checkpoint_paths}, evaluations, layout,
                   state_dicts[0], torch.stack(vectors["checkpoints"]), torch.stack(vectors["generated"]))


def _evaluate_baselines(fn: Evaluator, vectors: dict[str, Tensor], models: _Models, *,
                        advance) -> dict[str, list[Evaluation]]:
    """The evaluator on every baseline model; a baseline exists only in memory: its path is None."""
    evaluations: dict[str, list[Evaluation]] = {}
    for name, group_vectors in vectors.items():
        evaluations[name] = []
        for i, vector in enumerate(group_vectors):
            state_dict = unflatten(vector, models.layout, models.reference)
            evaluations[name].append(run_evaluator(fn, state_dict, name=f"baseline {name} #{i}"))
            advance()
    return evaluations


def _primary_values(models: _Models, baseline_evaluations: dict[str, list[Evaluation]]
                    ) -> tuple[str, dict[str, list[Evaluation]], bool]:
    """The primary metric (the evaluator's first key on the first checkpoint), every group's
    evaluations, and whether they all hold per-example results; one-line errors otherwise."""

    def where(group: str, i: int) -> str:
        return str(models.paths[group][i]) if group in models.paths else f"baseline {group} #{i}"

    metric = next(iter(models.evaluations["checkpoints"][0].metrics))
    evaluations = {"checkpoints": models.evaluations["checkpoints"], "generated": models.evaluations["generated"],
                   **baseline_evaluations}
    for group, group_evaluations in evaluations.items():
        for i, evaluation in enumerate(group_evaluations):
            if metric not in evaluation.metrics:
                raise RpgenError(f"evaluator returned no {metric!r} (the primary metric) on {where(group, i)}")
    return metric, evaluations, check_per_example(evaluations, where=where)


def _result(spec: str, models: _Models, baseline_vectors: dict[str, Tensor],
            baseline_evaluations: dict[str, list[Evaluation]]) -> EvaluationResult:
    """Every measure of the models and baselines, as the typed result (verdict and plots to come)."""
    metric, evaluations, per_example = _primary_values(models, baseline_evaluations)
    gen_distance, gen_nearest = models.nearest
    ref = memorization.reference(models.checkpoints)
    novelty = {"generated": (gen_distance / ref.scale).tolist(), "checkpoints": (ref.distances / ref.scale).tolist()}
    nearest_index = {"generated": gen_nearest, "checkpoints": ref.indices}
    for name, group_vectors in baseline_vectors.items():
        distance, index = memorization.nearest(group_vectors, models.checkpoints)
        novelty[name] = (distance / ref.scale).tolist()
        nearest_index[name] = index
    iou = None
    if per_example:
        correct = {group: [e.correct for e in group_evaluations] for group, group_evaluations in evaluations.items()}
        iou = {group: [memorization.misclassified_iou(c, correct["checkpoints"][int(j)]) if j >= 0 else float("nan")
                       for c, j in zip(correct[group], nearest_index[group])]
               for group in correct}
    ckpt_xy, gen_xy, explained = memorization.pca_2d(models.checkpoints, models.generated)
    values = {group: [e.metrics[metric] for e in group_evaluations] for group, group_evaluations in evaluations.items()}
    return EvaluationResult(
        metric=metric, higher_is_better=higher_is_better(metric), evaluator=spec,
        checkpoints=values["checkpoints"], generated=values["generated"],
        baselines={name: values[name] for name in baseline_evaluations},
        checkpoint_files=[str(p) for p in models.paths["checkpoints"]],
        generated_files=[str(p) for p in models.paths["generated"]],
        checkpoint_metrics=[e.metrics for e in evaluations["checkpoints"]],
        generated_metrics=[e.metrics for e in evaluations["generated"]],
        novelty=novelty, novelty_unit=ref.scale,
        nearest_checkpoint={"generated": [int(i) if i >= 0 else None for i in gen_nearest.tolist()],
                            "checkpoints": ref.indices.tolist()},
        iou=iou,
        pca={"checkpoints": ckpt_xy.tolist(), "generated": gen_xy.tolist(), "explained": explained},
        diversity=memorization.diversity(models.generated, gen_distance / ref.scale, scale=ref.scale),
        summary={group: summarize(group_values) for group, group_values in values.items()},
        nonfinite_generated=[str(p) for p, ok in zip(models.paths["generated"], models.finite.tolist()) if not ok],
    )
