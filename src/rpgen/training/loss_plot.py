"""The training loss plot, ``RUN_DIR/loss.png``: loss (log scale) and learning rate against step."""

from __future__ import annotations

import json
from pathlib import Path

from rpgen.display import pyplot
from rpgen.safety.atomic import atomic_path


def plot_loss(metrics_jsonl: str | Path, out_png: str | Path) -> None:
    """Training loss (log scale) and learning rate against step, from a run's metrics.jsonl."""
    plt = pyplot()
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
