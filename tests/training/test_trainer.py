"""Training (rpgen.training): stop and resume, what --resume may change, divergence, the state on disk."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TINY, check_one_line_error, rpgen, set_args, tiny
from rpgen.config import Config, apply_overrides
from rpgen.training import train


def test_stop_and_resume_equals_one_run(digits_zoo, tmp_path):
    config = apply_overrides(Config(), TINY)
    train(digits_zoo, tmp_path / "full", config, progress=False)
    train(digits_zoo, tmp_path / "split", config, progress=False, stop_after=7)
    assert not (tmp_path / "split" / "generator.safetensors").exists()
    result = rpgen("generate", tmp_path / "split", "--num", 1, "--out", tmp_path / "g")
    assert result.exit_code == 1 and "training has not finished" in result.output
    assert rpgen("train", digits_zoo, "--out", tmp_path / "split", "--resume", "--no-progress").exit_code == 0
    full = load_file(tmp_path / "full" / "generator.safetensors")
    split = load_file(tmp_path / "split" / "generator.safetensors")
    assert all(torch.equal(full[k], split[k]) for k in full)


@pytest.mark.slow
def test_ctrl_c_leaves_a_resumable_run(digits_zoo, tmp_path):
    run = tmp_path / "run"
    overrides = [o for o in TINY if not o.startswith("train.steps")] + ["train.steps=100000"]
    proc = subprocess.Popen([sys.executable, "-m", "rpgen.cli", "train", str(digits_zoo), "--out", str(run),
                             "--no-progress", *set_args(overrides)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (run / "state").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "--resume" in output and "Traceback" not in output
    assert not (run / "generator.safetensors").exists()
    result = rpgen("train", digits_zoo, "--out", run, "--resume", "--set", "train.steps=40", "--no-progress")
    assert result.exit_code == 0, result.output
    assert (run / "generator.safetensors").is_file()


def test_logged_loss_after_resume_averages_the_steps_it_ran(digits_zoo, tmp_path):
    every_step = apply_overrides(Config(), tiny("train.log_every=1"))
    train(digits_zoo, tmp_path / "full", every_step, progress=False)
    losses = {r["step"]: r["loss"] for r in map(json.loads, (tmp_path / "full" / "metrics.jsonl").read_text().splitlines())}
    config = apply_overrides(Config(), TINY)  # logs every 5 steps
    train(digits_zoo, tmp_path / "split", config, progress=False, stop_after=7)
    train(digits_zoo, tmp_path / "split", None, resume=True, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 12]
    assert rows[1]["loss"] == pytest.approx(sum(losses[s] for s in (8, 9, 10)) / 3)  # steps 6-7 ran before the stop
    assert rows[2]["loss"] == pytest.approx((losses[11] + losses[12]) / 2)


def test_resume_takes_train_settings_and_refuses_the_rest(digits_zoo, tmp_path):
    run = tmp_path / "run"
    train(digits_zoo, run, apply_overrides(Config(), TINY), progress=False, stop_after=3)
    check_one_line_error(rpgen("train", digits_zoo, "--out", run, "--resume", "--set", "model.d_model=64"),
                         "model.d_model", "only [train]")
    check_one_line_error(rpgen("train", digits_zoo, "--out", run, "--resume", "--set", "data.token_size=16"),
                         "data.token_size")
    assert not (run / "generator.safetensors").exists()
    result = rpgen("train", digits_zoo, "--out", run, "--resume", "--set", "train.steps=15", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "steps = 15" in (run / "config.toml").read_text()  # the run records what it was trained with
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 15


@pytest.mark.parametrize("lr", ["inf", "1e30"])
def test_training_stops_at_the_first_non_finite_loss(digits_zoo, tmp_path, lr):
    run = tmp_path / "run"
    result = rpgen("train", digits_zoo, "--out", run, "--no-progress", *set_args(tiny(f"train.lr={lr}")))
    check_one_line_error(result, "diverged", "step", "train.lr")
    assert not (run / "generator.safetensors").exists()


def test_a_crash_between_the_state_renames_still_resumes(digits_zoo, tmp_path):
    config = apply_overrides(Config(), TINY)
    train(digits_zoo, tmp_path / "full", config, progress=False)
    run = tmp_path / "split"
    train(digits_zoo, run, config, progress=False, stop_after=10)  # saved at step 5, then at step 10
    (run / "state").rename(run / "state.old")  # as if killed after the first rename of the save
    train(digits_zoo, run, None, resume=True, progress=False)
    full, split = load_file(tmp_path / "full" / "generator.safetensors"), load_file(run / "generator.safetensors")
    assert all(torch.equal(full[k], split[k]) for k in full)


def test_generate_refuses_a_generator_with_non_finite_weights(digits_zoo, tmp_path):
    run = tmp_path / "run"
    train(digits_zoo, run, apply_overrides(Config(), TINY), progress=False)
    weights = load_file(run / "generator.safetensors")
    name = next(k for k in weights if k.startswith("denoiser"))
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(run / "generator.safetensors"))
    result = rpgen("generate", run, "--num", 2, "--out", tmp_path / "gen", "--no-progress")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "gen").exists()
