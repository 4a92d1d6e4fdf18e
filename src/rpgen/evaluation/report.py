"""Renderers of an :class:`EvaluationResult`: the Markdown report and the CLI's rich table."""

from __future__ import annotations

import math
from pathlib import Path

from rich.table import Table

from rpgen.evaluation.baselines import baseline_label
from rpgen.evaluation.result import EvaluationResult, Summary
from rpgen.evaluation.verdict import comparison_line, median, nonfinite_sentence

_COLUMNS = ("n", "mean", "min", "max", "std")
_ROWS = (("training checkpoints", "checkpoints"), ("generated", "generated"))


def _cell(summary: Summary, column: str) -> str:
    value = getattr(summary, column)
    if value is None:
        return "-"
    return str(value) if column == "n" else f"{value:.2f}"


def _median_cell(values: list[float] | None) -> str:
    value = median(values) if values else None
    return "-" if value is None else f"{value:.2f}"


def _all_rows(result: EvaluationResult) -> list[tuple[str, str]]:
    """(label, group) of every row: checkpoints, generated, then each baseline."""
    return [*_ROWS, *((baseline_label(name), name) for name in result.baselines)]


def format_report(result: EvaluationResult, *, plots_at: str = "") -> str:
    """The Markdown report written to ``report.md``; ``plots_at`` prefixes the PNG links (a folder/)."""
    iou = result.iou or {}
    lines = [
        "# rpgen evaluation",
        "",
        f"**{result.verdict or comparison_line(result)}**",
        "",
        f"Evaluator `{result.evaluator}`, primary metric **{result.metric}** "
        f"({'higher' if result.higher_is_better else 'lower'} is better).",
        "",
        "| models | " + " | ".join(_COLUMNS) + " | novelty (median) | IoU of errors (median) |",
        "|---|" + "---:|" * (len(_COLUMNS) + 2),
    ]
    for label, key in _all_rows(result):
        summary = result.summary[key]
        lines.append(f"| {label} | " + " | ".join(_cell(summary, c) for c in _COLUMNS)
                     + f" | {_median_cell(result.novelty.get(key))} | {_median_cell(iou.get(key))} |")
    lines += ["", comparison_line(result), ""]
    diversity = result.diversity
    lines += [
        "**Novelty** = distance (in normalised weight space) to the nearest training checkpoint, divided "
        f"by the median distance between a checkpoint and its nearest other checkpoint "
        f"({result.novelty_unit:.3g}). 0 is a copy; for the checkpoints themselves the median is 1. "
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
    if result.nonfinite_generated:
        lines += [f"**{nonfinite_sentence(result)}** Files: "
                  + ", ".join(f"`{Path(p).name}`" for p in result.nonfinite_generated) + ".", ""]
    for title, name in (("Metric of every model", "metric_hist.png"), ("Metric against novelty", "novelty.png"),
                        ("Weight space (PCA of checkpoints and generated models)", "pca.png")):
        if name in result.plots:
            lines += [f"![{title}]({plots_at}{name})", ""]
    lines += ["## Generated models", "", "| file | " + result.metric + " | novelty | nearest checkpoint |"
              + (" IoU |" if iou else ""), "|---|---:|---:|---|" + ("---:|" if iou else "")]
    nearest = result.nearest_checkpoint["generated"]
    for i, path in enumerate(result.generated_files):
        novelty = result.novelty["generated"][i]
        row = (f"| {Path(path).name} | {result.generated[i]:.2f} | "
               + (f"{novelty:.2f}" if math.isfinite(novelty) else "-") + " | "
               + (Path(result.checkpoint_files[nearest[i]]).name if nearest[i] is not None
                  else "- (NaN/inf weights)") + " |")
        if iou:
            row += f" {iou['generated'][i]:.2f} |" if math.isfinite(iou["generated"][i]) else " - |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def results_table(result: EvaluationResult) -> Table:
    """The summary as a ``rich`` table (what the CLI prints)."""
    table = Table(title=f"{result.metric} ({'higher' if result.higher_is_better else 'lower'} is better)")
    table.add_column("models")
    for column in (*_COLUMNS, "novelty", "IoU"):
        table.add_column(column, justify="right")
    iou = result.iou or {}
    for label, key in _all_rows(result):
        table.add_row(label, *(_cell(result.summary[key], c) for c in _COLUMNS),
                      _median_cell(result.novelty.get(key)), _median_cell(iou.get(key)))
    return table
