"""The training loss plot, ``RUN_DIR/loss.png``: loss (log scale) and learning rate against step."""

from __future__ import annotations

import json
from pathlib import Path

from rpgen.display import pyplot
from rpgen.safety.atomic import atomic_path


def plot_loss(metrics_jsonl: str | Path, out_png: str | Path) -> None:
    """Training loss (log scale) and learning rate against step, from a run's metrics.jsonl; with
    evaluations during training (rpgen.training.stopping), a second panel of the generated models'
    mean and min beside the checkpoints' mean."""
    plt = pyplot()
    lines = Path(metrics_jsonl).read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line]
    rows = [r for r in records if "loss" in r]
    evals = [r["eval"] for r in records if "eval" in r]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(2 if evals else 1, 1, figsize=(6, 6 if evals else 3.5), dpi=100, squeeze=False)
    ax = axes[0, 0]
    ax.plot(steps, [r["loss"] for r in rows], color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("diffusion loss", color="tab:blue")
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [r["lr"] for r in rows], color="tab:gray", alpha=0.6)
    lr_ax.set_ylabel("learning rate", color="tab:gray")
    ax.set_title("rpgen training")
    if evals:
        ev = axes[1, 0]
        at = [e["step"] for e in evals]
        ev.plot(at, [e["checkpoints_mean"] for e in evals], color="tab:gray", ls="--", label="checkpoints (mean)")
        ev.plot(at, [e["generated_min"] for e in evals], color="tab:orange", marker=".", alpha=0.6,
                label="generated (min)")
        ev.plot(at, [e["generated_mean"] for e in evals], color="tab:red", marker="o", label="generated (mean)")
        ev.set_xlabel("step")
        ev.set_ylabel(evals[-1]["metric"])
        ev.set_xlim(ax.get_xlim())
        ev.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
