"""PNG plots (matplotlib, no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

from rpgen.files import atomic_path


def plot_loss(metrics_jsonl: str | Path, out_png: str | Path) -> None:
    """Training loss (log scale) and learning rate against step, from a run's metrics.jsonl."""
    plt = _pyplot()
    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text(encoding="utf-8").splitlines() if line]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, [r["loss"] for r in rows], color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("diffusion loss", color="tab:blue")
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [r["lr"] for r in rows], color="tab:gray", alpha=0.6)
    lr_ax.set_ylabel("learning rate", color="tab:gray")
    ax.set_title("rpgen training")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


_COLORS = {"checkpoints": "tab:blue", "generated": "tab:red", "average": "black", "interpolation": "tab:green",
           "noise_matched": "tab:purple"}
_NOISE_COLORS = ("#f2c14e", "#f5a623", "#d9730d", "#8c4a0a", "#5a2d00")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _groups(results: dict) -> list[tuple[str, str, list[float], str]]:
    """(key, label, metric values, colour) for checkpoints, generated and each baseline."""
    from rpgen.memorization import baseline_label

    groups = [("checkpoints", "training checkpoints", results["checkpoints"], _COLORS["checkpoints"]),
              ("generated", "generated", results["generated"], _COLORS["generated"])]
    noise = iter(_NOISE_COLORS)
    for name, values in results.get("baselines", {}).items():
        colour = _COLORS.get(name) or (next(noise, "tab:gray") if name.startswith("noise_") else "tab:gray")
        groups.append((name, baseline_label(name), values, colour))
    return groups


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_evaluation(results: dict, out_dir: str | Path) -> list[str]:
    """The report's plots, from the numbers in ``results``; returns the PNG file names written.

    metric_hist.png: one histogram row per group (full range left, around the checkpoints right);
    novelty.png: metric against novelty for every model; pca.png: checkpoints and generated models
    on the first two principal axes of their weights.
    """
    import math

    plt = _pyplot()
    out_dir = Path(out_dir)
    metric = results["metric"]
    groups = [g for g in _groups(results) if any(math.isfinite(v) for v in g[2])]
    written = []

    finite = [v for g in groups for v in g[2] if math.isfinite(v)]
    ckpt = [v for v in results["checkpoints"] if math.isfinite(v)]
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

    if "novelty" in results and finite and ckpt:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100)
        for key, label, values, colour in groups:
            novelty = results["novelty"].get(key, [])
            points = [(n, v) for n, v in zip(novelty, values) if math.isfinite(v) and n is not None]
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

    if "pca" in results:
        pca = results["pca"]
        fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
        for key, label in (("checkpoints", "training checkpoints"), ("generated", "generated")):
            xy = pca[key]
            ax.scatter([p[0] for p in xy], [p[1] for p in xy], s=16, color=_COLORS[key], label=label,
                       alpha=0.8, edgecolors="none")
        explained = pca.get("explained", [0.0, 0.0])
        ax.set_xlabel(f"PC 1 ({100 * explained[0]:.0f}% of variance)")
        ax.set_ylabel(f"PC 2 ({100 * explained[1]:.0f}% of variance)" if len(explained) > 1 else "PC 2")
        ax.legend(fontsize=8)
        _save(fig, out_dir / "pca.png")
        plt.close(fig)
        written.append("pca.png")
    return written
