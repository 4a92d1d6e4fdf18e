"""Evaluate training checkpoints, generated models and baselines with a user evaluator; report.

Evaluator contract: a spec ``path/to/file.py:function`` or ``module:function`` names a callable
taking a state_dict and returning ``dict[str, float]``. The first key is the primary metric;
higher is better unless its name contains ``loss`` or ``error``. Optionally the dict also holds
``"per_example"``: a 1-D sequence (list, tensor or array) of booleans or 0/1, one per evaluation
example in a fixed order, True when the model handles that example correctly; it must have the
same length for every model. With it, the report compares which examples models get wrong.

The report (``results.json``, ``report.md`` and PNG plots) answers "does the generator copy its
training checkpoints?": see :mod:`rpgen.memorization` for the baselines and measures.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.table import Table
from torch import Tensor

from rpgen import memorization
from rpgen.checkpoints import check_structure, is_checkpoint, list_checkpoints, load_state_dict, structure
from rpgen.errors import RpgenError
from rpgen.files import write_text_atomic
from rpgen.memorization import baseline_label, baselines
from rpgen.plots import plot_evaluation
from rpgen.progress import progress_bar
from rpgen.tokenizer import fit_layout, flatten, unflatten

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

Evaluator = Callable[[dict[str, torch.Tensor]], Mapping[str, Any]]


def load_evaluator(spec: str) -> Evaluator:
    """Resolve ``path/to/file.py:function`` or ``module:function`` to the callable it names."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise RpgenError(f"evaluator spec {spec!r} must look like path/to/file.py:function or module:function")
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _import_file(Path(target), spec=spec)
    else:
        module = _import_module(target, spec=spec)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RpgenError(f"evaluator {spec!r}: {target} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RpgenError(f"evaluator {spec!r}: {attr!r} is a {type(obj).__name__}, not a function")
    return obj


def _import_file(path: Path, *, spec: str) -> Any:
    if not path.is_file():
        raise RpgenError(f"evaluator {spec!r}: file {path} not found")
    module_spec = importlib.util.spec_from_file_location(f"rpgen_evaluator_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise RpgenError(f"evaluator {spec!r}: cannot load {path} as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise RpgenError(f"evaluator {spec!r}: importing {path} raised {type(exc).__name__}: {exc}") from None
    return module


def _import_module(name: str, *, spec: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise RpgenError(f"evaluator {spec!r}: module {name!r} is not importable ({exc})") from None
    except Exception as exc:
        raise RpgenError(
            f"evaluator {spec!r}: importing module {name!r} raised {type(exc).__name__}: {exc}"
        ) from None


PER_EXAMPLE = "per_example"


@dataclass
class Evaluation:
    """What an evaluator said about one model."""

    metrics: dict[str, float]
    correct: Tensor | None = None  # (E,) bool, when the evaluator returns ``per_example``


def run_evaluator(fn: Evaluator, state_dict: dict[str, torch.Tensor], *, name: str) -> Evaluation:
    """Call ``fn`` on one model (``name`` is used in errors); return its metrics as floats."""
    try:
        result = fn(state_dict)
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


def evaluate_models(
    checkpoint_paths: list[Path],
    generated_paths: list[Path],
    evaluator_spec: str,
    *,
    out_dir: Path,
    with_baselines: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate training checkpoints, generated models and baselines; write the report.

    Writes ``out_dir/results.json`` (every number), ``report.md`` and its PNG plots.
    Generated models must match the first checkpoint's keys, shapes and dtypes. ``seed`` draws
    the baselines' noise and pairs. See :mod:`rpgen.memorization` for the measures.
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
                evaluations[group].append(run_evaluator(fn, state_dict, name=str(path)))
                vectors[group].append(flatten(state_dict, layout))
                bar.advance(task)
        checkpoints = torch.stack(vectors["checkpoints"])  # (K, P)
        generated = torch.stack(vectors["generated"])  # (M, P)
        gen_distance, gen_nearest = memorization.nearest(generated, checkpoints)
        matched = float(gen_distance.quantile(0.5))
        baseline_vectors = baselines(checkpoints, seed=seed, matched_distance=matched) if with_baselines else {}
        baseline_evaluations: dict[str, list[Evaluation]] = {}
        num_models = len(checkpoint_paths) + len(generated_paths)
        bar.update(task, total=num_models + sum(len(v) for v in baseline_vectors.values()))
        for name, group_vectors in baseline_vectors.items():
            baseline_evaluations[name] = []
            for i, vector in enumerate(group_vectors):
                state_dict = unflatten(vector, layout, reference_sd)
                baseline_evaluations[name].append(run_evaluator(fn, state_dict, name=f"baseline {name} #{i}"))
                bar.advance(task)

    named_paths = {"generated": generated_paths, "checkpoints": checkpoint_paths}
    metric = next(iter(evaluations["checkpoints"][0].metrics))
    all_evaluations = [("checkpoints", evaluations["checkpoints"]), ("generated", evaluations["generated"]),
                       *baseline_evaluations.items()]
    for group, group_evaluations in all_evaluations:
        for i, evaluation in enumerate(group_evaluations):
            if metric not in evaluation.metrics:
                where = named_paths[group][i] if group in named_paths else f"baseline {group} #{i}"
                raise RpgenError(f"evaluator returned no {metric!r} (the primary metric) on {where}")
    per_example = _check_per_example(all_evaluations, named_paths)

    ref = memorization.reference(checkpoints)
    novelty = {"generated": (gen_distance / ref.scale).tolist(), "checkpoints": (ref.distances / ref.scale).tolist()}
    nearest_index = {"generated": gen_nearest, "checkpoints": ref.indices}
    for name, group_vectors in baseline_vectors.items():
        distance, index = memorization.nearest(group_vectors, checkpoints)
        novelty[name] = (distance / ref.scale).tolist()
        nearest_index[name] = index
    results: dict[str, Any] = {
        "metric": metric,
        "higher_is_better": higher_is_better(metric),
        "evaluator": evaluator_spec,
        "checkpoints": [e.metrics[metric] for e in evaluations["checkpoints"]],
        "generated": [e.metrics[metric] for e in evaluations["generated"]],
        "baselines": {name: [e.metrics[metric] for e in group] for name, group in baseline_evaluations.items()},
        "checkpoint_files": [str(p) for p in checkpoint_paths],
        "generated_files": [str(p) for p in generated_paths],
        "checkpoint_metrics": [e.metrics for e in evaluations["checkpoints"]],
        "generated_metrics": [e.metrics for e in evaluations["generated"]],
        "novelty": novelty,
        "novelty_unit": ref.scale,
        "nearest_checkpoint": {"generated": gen_nearest.tolist(), "checkpoints": ref.indices.tolist()},
    }
    if per_example:
        correct = {"checkpoints": [e.correct for e in evaluations["checkpoints"]],
                   "generated": [e.correct for e in evaluations["generated"]],
                   **{name: [e.correct for e in group] for name, group in baseline_evaluations.items()}}
        results["iou"] = {
            group: [memorization.misclassified_iou(c, correct["checkpoints"][int(j)])
                    for c, j in zip(correct[group], nearest_index[group])]
            for group in correct
        }
    ckpt_xy, gen_xy, explained = memorization.pca_2d(checkpoints, generated)
    results["pca"] = {"checkpoints": ckpt_xy.tolist(), "generated": gen_xy.tolist(), "explained": explained}
    results["diversity"] = memorization.diversity(generated, gen_distance / ref.scale, scale=ref.scale)
    results["summary"] = {
        "checkpoints": summarize(results["checkpoints"]),
        "generated": summarize(results["generated"]),
        **{name: summarize(values) for name, values in results["baselines"].items()},
    }
    results["verdict"] = verdict(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    results["plots"] = plot_evaluation(results, out_dir)
    write_text_atomic(out_dir / "results.json", json.dumps(_json_safe(results), indent=2) + "\n")
    write_text_atomic(out_dir / "report.md", format_report(results))
    return results


def _check_per_example(evaluations: list[tuple[str, list[Evaluation]]], named_paths: dict[str, list[Path]]) -> bool:
    """True when every model has per-example results of one length; raise when only some do."""
    def where(group: str, i: int) -> str:
        return str(named_paths[group][i]) if group in named_paths else f"baseline {group} #{i}"

    first: tuple[str, int, int | None] | None = None
    for group, group_evaluations in evaluations:
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


def evaluate_run(
    run_dir: str | Path,
    generated_dir: str | Path,
    evaluator_spec: str,
    *,
    with_baselines: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the generated models in ``generated_dir`` against the training checkpoints of a run."""
    run_dir, generated_dir = Path(run_dir), Path(generated_dir)
    config_path = run_dir / "config.toml"
    if not config_path.is_file():
        raise RpgenError(f"{run_dir} is not an rpgen run directory (no config.toml)")
    try:
        config = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RpgenError(f"{config_path}: not valid TOML ({exc})") from None
    data = config.get("data")
    checkpoint_dir = data.get("checkpoint_dir") if isinstance(data, dict) else None
    if not isinstance(checkpoint_dir, str) or not checkpoint_dir:
        raise RpgenError(f"{config_path}: missing key data.checkpoint_dir")
    checkpoint_paths = list_checkpoints(_resolve(Path(checkpoint_dir), base=run_dir))
    if not generated_dir.is_dir():
        raise RpgenError(f"generated folder {generated_dir} does not exist")
    if not any(is_checkpoint(p) for p in generated_dir.iterdir()):
        raise RpgenError(f"no generated models (*.safetensors files or peft adapter folders) in {generated_dir}")
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


def summarize(values: list[float]) -> dict[str, float | int | None]:
    """n, mean, min, max and (population) std over the finite values; ``n_nonfinite`` counts the rest."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"n": len(values), "n_nonfinite": len(values), "mean": None, "min": None, "max": None, "std": None}
    mean = math.fsum(finite) / len(finite)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / len(finite))
    return {
        "n": len(values),
        "n_nonfinite": len(values) - len(finite),
        "mean": mean,
        "min": min(finite),
        "max": max(finite),
        "std": std,
    }


def _json_safe(value: Any) -> Any:
    """NaN/Inf become null so results.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _median(values: list[float]) -> float | None:
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return None
    mid = len(finite) // 2
    return finite[mid] if len(finite) % 2 else 0.5 * (finite[mid - 1] + finite[mid])


def verdict(results: Mapping[str, Any]) -> str:
    """One sentence: are the generated models copies, and do they beat noise at the same distance?"""
    metric = results["metric"]
    gen, ckpt = results["summary"]["generated"], results["summary"]["checkpoints"]
    novelty = _median(results["novelty"]["generated"])
    if novelty is None or gen["mean"] is None or ckpt["mean"] is None:
        return "No verdict: no finite values to compare."
    high = results["higher_is_better"]
    worst = ckpt["min"] if high else ckpt["max"]
    if novelty < memorization.NEAR_COPY:
        kind = "near-copies of training checkpoints"
    elif (gen["mean"] < worst) == high and gen["mean"] != worst:
        kind = f"new but broken models (on average worse than the worst checkpoint, {worst:.2f})"
    else:
        kind = "new models"
    text = (f"Generated models are {kind}: median novelty {novelty:.2f} (0 = a copy, 1 = as far from the "
            f"training set as the checkpoints are from each other), mean {metric} {gen['mean']:.2f} vs "
            f"{ckpt['mean']:.2f} for the checkpoints")
    iou = results.get("iou", {}).get("generated")
    if iou:
        text += f", median IoU {_median(iou):.2f} of misclassified examples with the nearest checkpoint"
    noise = [(name, _median(results["novelty"][name])) for name in results.get("baselines", {})
             if name.startswith("noise_")]
    noise = [(name, value) for name, value in noise if value is not None and value > 0]
    if noise:
        name, value = min(noise, key=lambda item: (item[0] != "noise_matched",
                                                   abs(math.log(item[1] / max(novelty, 1e-12)))))
        other = results["summary"][name]
        if other["mean"] is not None:
            text += (f". Checkpoints moved about as far by noise ({baseline_label(name)}, novelty {value:.2f}) "
                     f"score {other['mean']:.2f}: the generator does {_compare(gen, other, results['higher_is_better'])}"
                     " noise")
    return text + "."


def _compare(a: Mapping[str, Any], b: Mapping[str, Any], higher_is_better: bool) -> str:
    """"better than", "worse than" or "about as well as": means more than 2 standard errors apart or not."""
    n_a, n_b = a["n"] - a["n_nonfinite"], b["n"] - b["n_nonfinite"]
    standard_error = math.sqrt(a["std"] ** 2 / n_a + b["std"] ** 2 / n_b)
    diff = a["mean"] - b["mean"]
    if abs(diff) <= 2 * standard_error:
        return "about as well as"
    return "better than" if (diff > 0) == higher_is_better else "worse than"


_COLUMNS = ("n", "mean", "min", "max", "std")
_ROWS = (("training checkpoints", "checkpoints"), ("generated", "generated"))


def _cell(summary: Mapping[str, Any], column: str) -> str:
    value = summary[column]
    if value is None:
        return "-"
    return str(value) if column == "n" else f"{value:.2f}"


def _median_cell(values: list[float] | None) -> str:
    value = _median(values) if values else None
    return "-" if value is None else f"{value:.2f}"


def _all_rows(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [*_ROWS, *((baseline_label(name), name) for name in results.get("baselines", {}))]


def comparison_line(results: Mapping[str, Any]) -> str:
    """One plain-language sentence comparing generated models with the training checkpoints."""
    metric, better_high = results["metric"], results["higher_is_better"]
    ckpt, gen = results["summary"]["checkpoints"], results["summary"]["generated"]
    if gen["mean"] is None or ckpt["mean"] is None:
        return f"No finite {metric} values to compare."
    worst = "min" if better_high else "max"
    diff = gen["mean"] - ckpt["mean"]
    direction = "higher" if diff > 0 else "lower"
    verdict = "better" if (diff > 0) == better_high else "worse"
    if diff == 0:
        head = f"Generated models average the same {metric} as the training checkpoints ({gen['mean']:.2f})"
    else:
        head = (
            f"Generated models average {abs(diff):.2f} {direction} {metric} than the training checkpoints "
            f"({gen['mean']:.2f} vs {ckpt['mean']:.2f}, {verdict})"
        )
    return (
        f"{head}; the worst generated model scores {gen[worst]:.2f} against {ckpt[worst]:.2f} "
        f"for the worst checkpoint ({'higher' if better_high else 'lower'} is better)."
    )


def format_report(results: Mapping[str, Any], *, plots_at: str = "") -> str:
    """The Markdown report written to ``report.md``; ``plots_at`` prefixes the PNG links (a folder/)."""
    iou = results.get("iou", {})
    lines = [
        "# rpgen evaluation",
        "",
        f"**{results.get('verdict') or comparison_line(results)}**",
        "",
        f"Evaluator `{results['evaluator']}`, primary metric **{results['metric']}** "
        f"({'higher' if results['higher_is_better'] else 'lower'} is better).",
        "",
        "| models | " + " | ".join(_COLUMNS) + " | novelty (median) | IoU of errors (median) |",
        "|---|" + "---:|" * (len(_COLUMNS) + 2),
    ]
    for label, key in _all_rows(results):
        summary = results["summary"][key]
        lines.append(f"| {label} | " + " | ".join(_cell(summary, c) for c in _COLUMNS)
                     + f" | {_median_cell(results.get('novelty', {}).get(key))} | {_median_cell(iou.get(key))} |")
    lines += ["", comparison_line(results), ""]
    if "novelty" in results:
        diversity = results["diversity"]
        lines += [
            "**Novelty** = distance (in normalised weight space) to the nearest training checkpoint, divided "
            f"by the median distance between a checkpoint and its nearest other checkpoint "
            f"({results['novelty_unit']:.3g}). 0 is a copy; for the checkpoints themselves the median is 1. "
            "**IoU of errors** = overlap of the examples a model gets wrong with those its nearest checkpoint "
            "gets wrong (1 = the same mistakes)." + ("" if iou else " (Not measured: the evaluator returns no "
                                                     "per-example results.)"),
            "",
            f"Diversity: {diversity['not_near_copies']} of {diversity['num_models']} generated models are not "
            f"near-copies (novelty >= {diversity['threshold']:g}); grouping models closer than "
            f"{diversity['threshold']:g} units to each other leaves {diversity['distinct_models']} distinct "
            "generated models.",
            "",
        ]
    for title, name in (("Metric of every model", "metric_hist.png"), ("Metric against novelty", "novelty.png"),
                        ("Weight space (PCA of checkpoints and generated models)", "pca.png")):
        if name in results.get("plots", []):
            lines += [f"![{title}]({plots_at}{name})", ""]
    lines += ["## Generated models", "", "| file | " + results["metric"] + " | novelty | nearest checkpoint |"
              + (" IoU |" if iou else ""), "|---|---:|---:|---|" + ("---:|" if iou else "")]
    for i, path in enumerate(results["generated_files"]):
        value = results["generated"][i]
        nearest = results.get("nearest_checkpoint", {}).get("generated")
        row = (f"| {Path(path).name} | {value:.2f} | "
               + (f"{results['novelty']['generated'][i]:.2f}" if "novelty" in results else "-") + " | "
               + (Path(results["checkpoint_files"][nearest[i]]).name if nearest else "-") + " |")
        if iou:
            row += f" {iou['generated'][i]:.2f} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def format_table(results: Mapping[str, Any]) -> str:
    """The summary as a plain-text table for terminals."""
    header = ("models", *_COLUMNS, "novelty")
    rows = [header] + [(label, *(_cell(results["summary"][key], c) for c in _COLUMNS),
                        _median_cell(results.get("novelty", {}).get(key))) for label, key in _all_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def results_table(results: Mapping[str, Any]) -> Table:
    """The summary as a ``rich`` table (what the CLI prints)."""
    table = Table(title=f"{results['metric']} ({'higher' if results['higher_is_better'] else 'lower'} is better)")
    table.add_column("models")
    for column in (*_COLUMNS, "novelty", "IoU"):
        table.add_column(column, justify="right")
    for label, key in _all_rows(results):
        table.add_row(label, *(_cell(results["summary"][key], c) for c in _COLUMNS),
                      _median_cell(results.get("novelty", {}).get(key)),
                      _median_cell(results.get("iou", {}).get(key)))
    return table
