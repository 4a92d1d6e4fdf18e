"""The evaluation report's PNG plots, drawn from the numbers of an :class:`EvaluationResult`."""

from __future__ import annotations

import math
from pathlib import Path

from rpgen.evaluation.baselines import baseline_label
from rpgen.evaluation.result import EvaluationResult
from rpgen.safety.atomic import atomic_path
from rpgen.display import pyplot

_COLORS = {"checkpoints": "tab:blue", "generated": "tab:red", "average": "black", "interpolation": "tab:green",
           "noise_matched": "tab:purple"}
_NOISE_COLORS = ("#f2c14e", "#f5a623", "#d9730d", "#8c4a0a", "#5a2d00")


def _groups(result: EvaluationResult) -> list[tuple[str, str, list[float], str]]:
    """(key, label, metric values, colour) for checkpoints, generated and each baseline."""
    groups = [("checkpoints", "training checkpoints", result.checkpoints, _COLORS["checkpoints"]),
              ("generated", "generated", result.generated, _COLORS["generated"])]
    noise = iter(_NOISE_COLORS)
    for name, values in result.baselines.items():
        colour = _COLORS.get(name) or (next(noise, "tab:gray") if name.startswith("noise_") else "tab:gray")
        groups.append((name, baseline_label(name), values, colour))
    return groups


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_evaluation(result: EvaluationResult, out_dir: str | Path) -> list[str]:
    """The report's plots; returns the PNG file names written into ``out_dir``.

    metric_hist.png: one histogram row per group (full range left, around the checkpoints right);
    novelty.png: metric against novelty for every model; pca.png: checkpoints and generated models
    on the first two principal axes of their weights. Non-finite values are left out.
    """
    plt = pyplot()
    out_dir = Path(out_dir)
    metric = result.metric
    groups = [g for g in _groups(result) if any(math.isfinite(v) for v in g[2])]
    written = []

    finite = [v for g in groups for v in g[2] if math.isfinite(v)]
    ckpt = [v for v in result.checkpoints if math.isfinite(v)]
    if finite and ckpt:
        spread = max(max(ckpt) - min(ckpt), 1e-6)
        zoom = (min(ckpt) - 2 * spread, max(ckpt) + 2 * spread)
        fig, axes = plt.subplots(len(groups), 2, figsize=(9, 1.1 * len(groups) + 1), dpi=100,
                                 sharex="col", squeeze=False)
        for row, (_, label, values, colour) in zip(axes, groups):
            values = [v for v in values if math.isfinite(v)]
            row[0].hist(values, bins=40, range=(min(finite), max(finite) + 1e-9), color=colour)
            row[1].hist([min(max(v, zoom[0]), zoom[1]) for v in values], bins=40, range=zoom, color=colour)
            row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
            for ax in row:
                ax.set_yticks([])
        axes[-1][0].set_xlabel(f"{metric} (all models)")
        axes[-1][1].set_xlabel(f"{metric} around the checkpoints (clipped)")
        _save(fig, out_dir / "metric_hist.png")
        plt.close(fig)
        written.append("metric_hist.png")

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100)
        for key, label, values, colour in groups:
            novelty = result.novelty.get(key, [])
            points = [(n, v) for n, v in zip(novelty, values) if math.isfinite(v) and math.isfinite(n)]
            for ax in axes:
                ax.scatter([p[0] for p in points], [p[1] for p in points], s=14, color=colour, label=label,
                           alpha=0.8, edgecolors="none")
        for ax in axes:
            ax.axvline(1.0, color="gray", lw=0.8, ls="--")
            ax.set_xscale("symlog", linthresh=0.01)
            ax.set_xlim(left=0)
            ax.set_xlabel("novelty (distance to nearest checkpoint / checkpoints' spacing)")
        axes[0].set_ylabel(metric)
        axes[1].set_ylim(*zoom)
        axes[1].set_title(f"{metric} around the checkpoints", fontsize=9)
        axes[0].legend(fontsize=7, loc="best")
        _save(fig, out_dir / "novelty.png")
        plt.close(fig)
        written.append("novelty.png")

    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
    for key, label in (("checkpoints", "training checkpoints"), ("generated", "generated")):
        xy = [p for p in result.pca[key] if all(math.isfinite(c) for c in p)]
        ax.scatter([p[0] for p in xy], [p[1] for p in xy], s=16, color=_COLORS[key], label=label,
                   alpha=0.8, edgecolors="none")
    explained = result.pca.get("explained", [0.0, 0.0])
    ax.set_xlabel(f"PC 1 ({100 * explained[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * explained[1]:.0f}% of variance)" if len(explained) > 1 else "PC 2")
    ax.legend(fontsize=8)
    _save(fig, out_dir / "pca.png")
    plt.close(fig)
    written.append("pca.png")
    return written
