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

from conftest import TINY, check_one_line_error, rpgen, set_args
from rpgen.config import Config, apply_overrides
from rpgen.run_dir import RunDir
from rpgen.training import train


def test_stop_and_resume_equals_one_run(digits_zoo, tmp_path):
    config = apply_overrides(Config(), TINY)
    train(digits_zoo, tmp_path / "full", config, progress=False)
    train(digits_zoo, tmp_path / "split", config, progress=False, stop_after=7)
    assert not (tmp_path / "split" / "generator.safetensors").exists()
    result = rpgen("generate", tmp_path / "split", "--num", 1, "--out", tmp_path / "g")
    assert result.exit_code == 1 and "training has not finished" in result.output
    before = RunDir(tmp_path / "split").elapsed_s()
    resumed = rpgen("train", digits_zoo, "--out", tmp_path / "split", "--resume", "--no-progress")
    assert resumed.exit_code == 0 and "s of training in all, with the earlier sessions" in resumed.output
    times = [json.loads(line)["elapsed_s"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert before > 0 and times == sorted(times)  # the resumed session goes on counting
    stopped = json.loads((tmp_path / "split" / "run.json").read_text())["stopped"]
    assert stopped["train_s"] >= before
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


@pytest.mark.parametrize("center", ["element", "base"])
def test_runs_measured_from_a_centre_store_it_and_generate_with_it(digits_zoo, tmp_path, center):
    base = sorted(digits_zoo.glob("*.safetensors"))[0]
    extra = ["--base", base] if center == "base" else ["--set", "data.center=element"]
    run = tmp_path / "run"
    result = rpgen("train", digits_zoo, "--out", run, "--no-progress", *extra, *set_args())
    assert result.exit_code == 0, result.output
    assert json.loads((run / "tokenizer.json").read_text())["center"] == center
    centers = load_file(run / "centers.safetensors")
    first = load_file(base)
    if center == "base":
        assert torch.equal(centers["fc.weight"], first["fc.weight"])
        assert torch.allclose(centers["bn1.running_var"], first["bn1.running_var"].double().log().float())
    result = rpgen("generate", run, "--num", 2, "--out", tmp_path / "gen", "--no-progress")
    assert result.exit_code == 0, result.output
    # the models are the centre plus what the generator adds: near the checkpoints, not near zero
    gen = load_file(tmp_path / "gen" / "0000.safetensors")
    assert (gen["fc.weight"] - first["fc.weight"]).abs().mean() < first["fc.weight"].abs().mean()
    (run / "centers.safetensors").unlink()
    check_one_line_error(rpgen("generate", run, "--num", 1, "--out", tmp_path / "g2", "--no-progress"),
                         "incomplete run directory", "centers.safetensors")


def test_a_base_that_does_not_fit_is_one_line(digits_zoo, tmp_path, make_state_dict):
    wrong = tmp_path / "wrong.safetensors"
    save_file(make_state_dict(0), wrong)
    check_one_line_error(rpgen("train", digits_zoo, "--out", tmp_path / "run", "--base", wrong, "--no-progress",
                               *set_args()), "base model")
    check_one_line_error(rpgen("train", digits_zoo, "--out", tmp_path / "run", "--base", tmp_path / "nope",
                               "--no-progress", *set_args()), "base model", "not found")
    check_one_line_error(rpgen("train", digits_zoo, "--out", tmp_path / "run", "--no-progress",
                               *set_args([*TINY, "data.center=base"])), "data.center = 'base' needs a base model")
