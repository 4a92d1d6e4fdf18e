"""The fit loop: warm-up + cosine, logged losses that average the steps they cover, and the stop at
the first non-finite loss."""

from __future__ import annotations

import json

import pytest

from conftest import TINY, check_one_line_error, rpgen, set_args, tiny
from rpgen.config import Config, apply_overrides
from rpgen.training import train
from rpgen.training.fit import lr_factor


def test_learning_rate_warms_up_then_follows_a_cosine_to_zero():
    assert [lr_factor(s, warmup=4, total=10) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, warmup=4, total=10) == 1.0 and lr_factor(7, warmup=4, total=10) == pytest.approx(0.5)
    assert lr_factor(10, warmup=4, total=10) == pytest.approx(0.0) and lr_factor(50, warmup=4, total=10) >= 0


def test_logged_loss_after_resume_averages_the_steps_it_ran(digits_zoo, tmp_path):
    every_step = apply_overrides(Config(), tiny("train.log_every=1"))
    train(digits_zoo, tmp_path / "full", every_step, progress=False)
    rows = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    losses = {r["step"]: r["loss"] for r in map(json.loads, rows)}
    config = apply_overrides(Config(), TINY)  # logs every 5 steps
    train(digits_zoo, tmp_path / "split", config, progress=False, stop_after=7)
    train(digits_zoo, tmp_path / "split", None, resume=True, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 12]
    assert rows[1]["loss"] == pytest.approx(sum(losses[s] for s in (8, 9, 10)) / 3)  # steps 6-7 ran before the stop
    assert rows[2]["loss"] == pytest.approx((losses[11] + losses[12]) / 2)


@pytest.mark.parametrize("lr", ["1e30"])  # an infinite lr is refused with the config (tests/test_config.py)
def test_training_stops_at_the_first_non_finite_loss(digits_zoo, tmp_path, lr):
    run = tmp_path / "run"
    result = rpgen("train", digits_zoo, "--out", run, "--no-progress", *set_args(tiny(f"train.lr={lr}")))
    check_one_line_error(result, "diverged", "step", "train.lr")
    assert not (run / "generator.safetensors").exists()
