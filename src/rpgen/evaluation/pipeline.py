"""Evaluate training checkpoints, generated models and baselines; write results.json, report.md, plots.

The orchestration only: the evaluator is loaded and checked by :mod:`rpgen.evaluation.evaluator`,
the measures come from :mod:`rpgen.evaluation.memorization`, the sentences from
:mod:`rpgen.evaluation.verdict`, the files from :mod:`rpgen.evaluation.report` and
:mod:`rpgen.evaluation.plots`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import Tensor

import rpgen.evaluation.memorization as memorization
from rpgen.formats.checkpoints import check_structure, is_checkpoint, list_checkpoints, load_state_dict, structure
from rpgen.config import load_toml
from rpgen.errors import RpgenError
from rpgen.evaluation.evaluator import Evaluation, check_per_example, higher_is_better, load_evaluator, run_evaluator
from rpgen.evaluation.plots import plot_evaluation
from rpgen.evaluation.report import format_report
from rpgen.evaluation.result import EvaluationResult
from rpgen.evaluation.verdict import against_noise, summarize, verdict
from rpgen.safety.atomic import write_text_atomic
from rpgen.display import progress_bar
from rpgen.data.tokenizer import fit_layout, flatten, unflatten


def evaluate_models(
    checkpoint_paths: list[Path],
    generated_paths: list[Path],
    evaluator_spec: str,
    *,
    out_dir: Path,
    with_baselines: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate training checkpoints, generated models and baselines; write the report.

    Writes ``out_dir/results.json`` (:meth:`EvaluationResult.to_dict`), ``report.md`` and its PNG
    plots. Generated models must match the first checkpoint's keys, shapes and dtypes; those with
    NaN/inf weights are evaluated and reported as such (no novelty, nearest checkpoint or PCA
    position). ``seed`` draws the baselines' noise and pairs. See
    :mod:`rpgen.evaluation.memorization` for the measures.
    """
    out_dir = Path(out_dir)
    if not checkpoint_paths:
        raise RpgenError("no training checkpoints to evaluate")
    if not generated_paths:
        raise RpgenError(f"no generated models to evaluate (expected *.safetensors files in {out_dir})")
    fn = load_evaluator(evaluator_spec)

    reference_path = Path(checkpoint_paths[0])
    reference_sd = load_state_dict(reference_path)
    reference = structure(reference_sd)
    # One streaming pass for the normalisation statistics (token size is irrelevant here).
    layout = fit_layout((load_state_dict(p) for p in checkpoint_paths), token_size=1)
    evaluations: dict[str, list[Evaluation]] = {"generated": [], "checkpoints": []}
    vectors: dict[str, list[Tensor]] = {"generated": [], "checkpoints": []}
    with progress_bar(enabled=progress, show_loss=False) as bar:
        task = bar.add_task("evaluating", total=len(checkpoint_paths) + len(generated_paths))
        # Generated models first: a structure mismatch fails before the long part.
        for group, paths in (("generated", generated_paths), ("checkpoints", checkpoint_paths)):
            for path in paths:
                state_dict = load_state_dict(path)
                check_structure(reference, state_dict, name=path, reference_name=reference_path)
                evaluations[group].append(run_evaluator(fn, state_dict, name=str(path), path=Path(path)))
                vectors[group].append(flatten(state_dict, layout))
                bar.advance(task)
        checkpoints = torch.stack(vectors["checkpoints"])  # (K, P)
        generated = torch.stack(vectors["generated"])  # (M, P)
        finite = generated.isfinite().all(dim=1)  # (M,) False: NaN/inf weights
        gen_distance, gen_nearest = memorization.nearest(generated, checkpoints)  # NaN, -1 where not finite
        matched = float(gen_distance[finite].quantile(0.5)) if bool(finite.any()) else None
        baseline_vectors = (memorization.baselines(checkpoints, seed=seed, matched_distance=matched)
                            if with_baselines else {})
        baseline_evaluations: dict[str, list[Evaluation]] = {}
        num_models = len(checkpoint_paths) + len(generated_paths)
        bar.update(task, total=num_models + sum(len(v) for v in baseline_vectors.values()))
        for name, group_vectors in baseline_vectors.items():
            baseline_evaluations[name] = []
            for i, vector in enumerate(group_vectors):
                state_dict = unflatten(vector, layout, reference_sd)
                # A baseline exists only in memory: its path is None.
                baseline_evaluations[name].append(run_evaluator(fn, state_dict, name=f"baseline {name} #{i}"))
                bar.advance(task)

    named_paths = {"generated": generated_paths, "checkpoints": checkpoint_paths}

    def where(group: str, i: int) -> str:
        return str(named_paths[group][i]) if group in named_paths else f"baseline {group} #{i}"

    metric = next(iter(evaluations["checkpoints"][0].metrics))
    all_evaluations = {"checkpoints": evaluations["checkpoints"], "generated": evaluations["generated"],
                       **baseline_evaluations}
    for group, group_evaluations in all_evaluations.items():
        for i, evaluation in enumerate(group_evaluations):
            if metric not in evaluation.metrics:
                raise RpgenError(f"evaluator returned no {metric!r} (the primary metric) on {where(group, i)}")
    per_example = check_per_example(all_evaluations, where=where)

    ref = memorization.reference(checkpoints)
    novelty = {"generated": (gen_distance / ref.scale).tolist(), "checkpoints": (ref.distances / ref.scale).tolist()}
    nearest_index = {"generated": gen_nearest, "checkpoints": ref.indices}
    for name, group_vectors in baseline_vectors.items():
        distance, index = memorization.nearest(group_vectors, checkpoints)
        novelty[name] = (distance / ref.scale).tolist()
        nearest_index[name] = index
    iou = None
    if per_example:
        correct = {group: [e.correct for e in group_evaluations] for group, group_evaluations in
                   all_evaluations.items()}
        iou = {group: [memorization.misclassified_iou(c, correct["checkpoints"][int(j)]) if j >= 0 else float("nan")
                       for c, j in zip(correct[group], nearest_index[group])]
               for group in correct}
    ckpt_xy, gen_xy, explained = memorization.pca_2d(checkpoints, generated)
    values = {group: [e.metrics[metric] for e in group_evaluations] for group, group_evaluations in
              all_evaluations.items()}
    result = EvaluationResult(
        metric=metric,
        higher_is_better=higher_is_better(metric),
        evaluator=evaluator_spec,
        checkpoints=values["checkpoints"],
        generated=values["generated"],
        baselines={name: values[name] for name in baseline_evaluations},
        checkpoint_files=[str(p) for p in checkpoint_paths],
        generated_files=[str(p) for p in generated_paths],
        checkpoint_metrics=[e.metrics for e in evaluations["checkpoints"]],
        generated_metrics=[e.metrics for e in evaluations["generated"]],
        novelty=novelty,
        novelty_unit=ref.scale,
        nearest_checkpoint={"generated": [int(i) if i >= 0 else None for i in gen_nearest.tolist()],
                            "checkpoints": ref.indices.tolist()},
        iou=iou,
        pca={"checkpoints": ckpt_xy.tolist(), "generated": gen_xy.tolist(), "explained": explained},
        diversity=memorization.diversity(generated, gen_distance / ref.scale, scale=ref.scale),
        summary={group: summarize(group_values) for group, group_values in values.items()},
        nonfinite_generated=[str(p) for p, ok in zip(generated_paths, finite.tolist()) if not ok],
    )
    result = dataclasses.replace(result, verdict=verdict(result), against_noise=against_noise(result))
    out_dir.mkdir(parents=True, exist_ok=True)
    result = dataclasses.replace(result, plots=plot_evaluation(result, out_dir))
    write_text_atomic(out_dir / "results.json", result.to_json())
    write_text_atomic(out_dir / "report.md", format_report(result))
    return result


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
    run_dir, generated_dir = Path(run_dir), Path(generated_dir)
    config_path = run_dir / "config.toml"
    if not config_path.is_file():
        raise RpgenError(f"{run_dir} is not an rpgen run directory (no config.toml)")
    checkpoint_dir = load_toml(config_path).data.checkpoint_dir
    if not checkpoint_dir:
        raise RpgenError(f"{config_path}: missing key data.checkpoint_dir")
    checkpoint_paths = list_checkpoints(_resolve(Path(checkpoint_dir), base=run_dir))
    if not generated_dir.is_dir():
        raise RpgenError(f"generated folder {generated_dir} does not exist")
    if not any(is_checkpoint(p) for p in generated_dir.iterdir()):
        raise RpgenError(f"no generated models (*.safetensors files, peft adapter folders or model folders) in {generated_dir}")
    generated_paths = list_checkpoints(generated_dir)
    return evaluate_models(
        checkpoint_paths, generated_paths, evaluator_spec, out_dir=generated_dir, with_baselines=with_baselines,
        seed=seed, progress=progress,
    )


def _resolve(path: Path, *, base: Path) -> Path:
    """A relative path as written (from the working directory), else relative to ``base`` if only that exists."""
    if path.is_absolute() or path.exists() or not (base / path).exists():
        return path
    return base / path
