"""Training under ``accelerate launch`` with 2 CPU processes (gloo) learns as well as 1 process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from rpgen.formats.checkpoints import load_state_dict
from rpgen.generation import generate
from rpgen.zoo.digits import evaluate

SETTINGS = ["train.steps=400", "train.batch_size=4", "train.save_every=200", "train.log_every=20"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_cmd(zoo: Path, out: Path) -> list[str]:
    sets = [x for s in SETTINGS for x in ("--set", s)]
    return ["-m", "rpgen.cli", "train", str(zoo), "--out", str(out), "--config", "quickstart", "--no-progress", *sets]


def generated_accuracy(run: Path, out: Path) -> float:
    paths = generate(run, out, num=8, seed=0, progress=False, device="cpu")
    return statistics.mean(evaluate(load_state_dict(p))["accuracy"] for p in paths)


def final_loss(run: Path) -> float:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return statistics.mean(r["loss"] for r in lines[-5:])


@pytest.mark.slow
def test_two_processes_learn_as_well_as_one(digits_zoo, tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    assert accelerate, "accelerate's launcher is not installed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, *train_cmd(digits_zoo, one)], check=True, env=env, capture_output=True)
    # --multi_gpu selects Accelerate's torchrun launcher; on a machine without GPUs rpgen forms a gloo group.
    result = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no",
                             "--main_process_port", str(free_port()), *train_cmd(digits_zoo, two)],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    # Only the main process writes: one complete run, one metrics line per logged step.
    assert {p.name for p in two.iterdir()} == {p.name for p in one.iterdir()}
    steps = [json.loads(line)["step"] for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(20, 401, 20))
    assert json.loads((two / "run.json").read_text())["num_processes"] == 2
    assert (one / "metrics.jsonl").read_text() != (two / "metrics.jsonl").read_text()  # other samples, same recipe
    loss_one, loss_two = final_loss(one), final_loss(two)
    acc_one = generated_accuracy(one, tmp_path / "gen-one")
    acc_two = generated_accuracy(two, tmp_path / "gen-two")
    print(f"1 process: loss {loss_one:.3e}, accuracy {acc_one:.3f}; 2 processes: loss {loss_two:.3e}, "
          f"accuracy {acc_two:.3f}")
    assert loss_two < 1.5 * loss_one
    assert acc_two > acc_one - 2.0
