"""The loss plot of a run, from its metrics.jsonl."""

import json

from rpgen.training.loss_plot import plot_loss


def test_loss_plot_is_written_and_empty_metrics_write_none(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "loss": 1 / s, "lr": 0.01}) + "\n" for s in range(1, 6)))
    plot_loss(metrics, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    metrics.write_text("")
    plot_loss(metrics, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
