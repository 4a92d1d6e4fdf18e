"""Evaluate training checkpoints and generated models with a user evaluator; write a report.

Evaluator contract: a spec ``path/to/file.py:function`` or ``module:function`` names a callable
taking a state_dict and returning ``dict[str, float]``. The first key is the primary metric;
higher is better unless its name contains ``loss`` or ``error``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import numbers
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.table import Table

from rpgen.checkpoints import check_structure, list_checkpoints, load_state_dict, structure
from rpgen.errors import RpgenError
from rpgen.files import write_text_atomic
from rpgen.progress import progress_bar

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


def run_evaluator(fn: Evaluator, state_dict: dict[str, torch.Tensor], *, name: str) -> dict[str, float]:
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
    for key, value in result.items():
        if not isinstance(key, str):
            raise RpgenError(f"evaluator returned a non-string key {key!r} on {name}")
        number = _as_float(value)
        if number is None:
            raise RpgenError(f"evaluator returned {type(value).__name__} for {key!r} on {name}; expected a number")
        metrics[key] = number
    return metrics


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
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate every training checkpoint and generated model; write ``results.json`` and ``report.md``.

    Generated models must match the first checkpoint's keys, shapes and dtypes.
    """
    out_dir = Path(out_dir)
    if not checkpoint_paths:
        raise RpgenError("no training checkpoints to evaluate")
    if not generated_paths:
        raise RpgenError(f"no generated models to evaluate (expected *.safetensors files in {out_dir})")
    fn = load_evaluator(evaluator_spec)

    reference_path = Path(checkpoint_paths[0])
    with progress_bar(enabled=progress, show_loss=False) as bar:
        task = bar.add_task("evaluating", total=len(checkpoint_paths) + len(generated_paths))
        reference = structure(load_state_dict(reference_path))
        # Generated models first: a structure mismatch fails before the long part.
        generated_metrics = []
        for path in generated_paths:
            state_dict = load_state_dict(path)
            check_structure(reference, state_dict, name=path, reference_name=reference_path)
            generated_metrics.append(run_evaluator(fn, state_dict, name=str(path)))
            bar.advance(task)
        checkpoint_metrics = []
        for path in checkpoint_paths:
            checkpoint_metrics.append(run_evaluator(fn, load_state_dict(path), name=str(path)))
            bar.advance(task)

    metric = next(iter(checkpoint_metrics[0]))
    for path, metrics in zip([*generated_paths, *checkpoint_paths], [*generated_metrics, *checkpoint_metrics]):
        if metric not in metrics:
            raise RpgenError(f"evaluator returned no {metric!r} (the primary metric) on {path}")
    results = {
        "metric": metric,
        "higher_is_better": higher_is_better(metric),
        "evaluator": evaluator_spec,
        "checkpoints": [m[metric] for m in checkpoint_metrics],
        "generated": [m[metric] for m in generated_metrics],
        "checkpoint_files": [str(p) for p in checkpoint_paths],
        "generated_files": [str(p) for p in generated_paths],
        "checkpoint_metrics": checkpoint_metrics,
        "generated_metrics": generated_metrics,
    }
    results["summary"] = {
        "checkpoints": summarize(results["checkpoints"]),
        "generated": summarize(results["generated"]),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "results.json", json.dumps(_json_safe(results), indent=2) + "\n")
    write_text_atomic(out_dir / "report.md", format_report(results))
    return results


def evaluate_run(
    run_dir: str | Path,
    generated_dir: str | Path,
    evaluator_spec: str,
    *,
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
    generated_paths = sorted(generated_dir.glob("*.safetensors"))
    if not generated_paths:
        raise RpgenError(f"no generated models (*.safetensors) in {generated_dir}")
    return evaluate_models(
        checkpoint_paths, generated_paths, evaluator_spec, out_dir=generated_dir, progress=progress
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


_COLUMNS = ("n", "mean", "min", "max", "std")
_ROWS = (("training checkpoints", "checkpoints"), ("generated", "generated"))


def _cell(summary: Mapping[str, Any], column: str) -> str:
    value = summary[column]
    if value is None:
        return "-"
    return str(value) if column == "n" else f"{value:.2f}"


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


def format_report(results: Mapping[str, Any]) -> str:
    """The Markdown report written to ``report.md``."""
    lines = [
        "# rpgen evaluation",
        "",
        f"Evaluator `{results['evaluator']}`, primary metric **{results['metric']}** "
        f"({'higher' if results['higher_is_better'] else 'lower'} is better).",
        "",
        "| models | " + " | ".join(_COLUMNS) + " |",
        "|---|" + "---:|" * len(_COLUMNS),
    ]
    for label, key in _ROWS:
        summary = results["summary"][key]
        lines.append(f"| {label} | " + " | ".join(_cell(summary, c) for c in _COLUMNS) + " |")
    lines += ["", comparison_line(results), ""]
    return "\n".join(lines)


def format_table(results: Mapping[str, Any]) -> str:
    """The summary as a plain-text table for terminals."""
    header = ("models", *_COLUMNS)
    rows = [header] + [(label, *(_cell(results["summary"][key], c) for c in _COLUMNS)) for label, key in _ROWS]
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
    for column in _COLUMNS:
        table.add_column(column, justify="right")
    for label, key in _ROWS:
        table.add_row(label, *(_cell(results["summary"][key], c) for c in _COLUMNS))
    return table
