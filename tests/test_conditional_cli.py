"""Conditional runs through the CLI: train on a folder with conditions.json, generate --condition,
and the bad input around it (one line naming the culprit, exit status 1, nothing half-written)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import check_one_line_error as one_line_error
from conftest import rpgen, set_args, tiny
from rpgen.zoo import digits_tasks as zoo

TINY = tiny("train.batch_size=4")


@pytest.fixture(scope="module")
def small_zoo(tasks_zoo):
    return tasks_zoo


@pytest.fixture(scope="module")
def conditional_run(small_zoo, tmp_path_factory):
    run = tmp_path_factory.mktemp("crun") / "run"
    result = rpgen("train", small_zoo / "train", "--out", run, "--no-progress", *set_args(TINY))
    assert result.exit_code == 0, result.output
    return run


def test_conditional_run_records_its_conditions(conditional_run, small_zoo):
    info = json.loads((conditional_run / "run.json").read_text())
    assert info["condition_dim"] == 10 and info["binary_conditions"] is True
    saved = json.loads((conditional_run / "conditions.json").read_text())
    assert saved == json.loads((small_zoo / "train" / "conditions.json").read_text())
    assert any(k.startswith("condition_encoder") for k in load_file(conditional_run / "generator.safetensors"))


def test_generate_for_seen_and_unseen_codes(conditional_run, small_zoo, tmp_path):
    out = tmp_path / "gen"
    result = rpgen("generate", conditional_run, "--num", 2, "--out", out, "--condition", "1000000000",
                   "--condition", "0110000010", "--no-progress")  # seen, then held out
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.safetensors"))
    assert len(files) == 4
    for f in files:
        zoo.TaskHead().load_state_dict(load_file(f), strict=True)
    with safe_open(str(files[3]), framework="pt") as f:
        assert json.loads(f.metadata()["condition"]) == zoo.code_bits("0110000010")
    generation = json.loads((out / "generation.json").read_text())
    assert generation["conditions"] == [zoo.code_bits(c) for c in ["1000000000"] * 2 + ["0110000010"] * 2]
    evaluate = zoo.make_evaluator("0110000010", zoo_dir=small_zoo)
    assert 0.0 <= evaluate(load_file(files[3]))["accuracy"] <= 100.0


def test_conditional_generation_is_reproducible(conditional_run, tmp_path):
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:  # the comma form of a binary code is accepted too
        result = rpgen("generate", conditional_run, "--num", 1, "--out", tmp_path / name, "--seed", seed,
                       "--condition", "0.0,1,0,0,0,0,0,0,1,0", "--no-progress")
        assert result.exit_code == 0, result.output
    a, b, c = (load_file(tmp_path / n / "0000.safetensors") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["fc1.weight"], c["fc1.weight"])


def test_generate_rejects_bad_conditions(conditional_run, tmp_path):
    out = tmp_path / "g"
    one_line_error(rpgen("generate", conditional_run, "--num", 1, "--out", out, "--condition", "0101"),
                   "0101", "length 4", "length 10")
    one_line_error(rpgen("generate", conditional_run, "--num", 1, "--out", out,
                         "--condition", "0.5,1,0,0,0,0,0,0,1,0"), "not binary")
    one_line_error(rpgen("generate", conditional_run, "--num", 1, "--out", out, "--condition", "01x"), "'01x'")
    one_line_error(rpgen("generate", conditional_run, "--num", 1, "--out", out), "--condition")
    one_line_error(rpgen("generate", conditional_run, "--num", 1, "--out", out, "--state", 0,
                         "--condition", "1000000000"), "--state")
    assert not out.exists()


def test_unconditional_run_refuses_condition(digits_zoo, tmp_path):
    run = tmp_path / "run"
    assert rpgen("train", digits_zoo, "--out", run, "--no-progress", *set_args(TINY)).exit_code == 0
    assert "condition_dim" not in json.loads((run / "run.json").read_text())
    one_line_error(rpgen("generate", run, "--num", 1, "--out", tmp_path / "g", "--condition", "1000000000"),
                   "unconditional", "--condition")


def test_train_rejects_bad_conditions_json(small_zoo, tmp_path):
    folder = tmp_path / "ckpts"
    shutil.copytree(small_zoo / "train", folder)
    conditions = json.loads((folder / "conditions.json").read_text())
    cases = {
        "missing": ({k: v for k, v in conditions.items() if k != "0011000000_1.safetensors"},
                    ["0011000000_1.safetensors", "no condition"]),
        "extra": ({**conditions, "gone.safetensors": [0.0] * 10}, ["gone.safetensors", "not a checkpoint"]),
        "length": ({**conditions, "1000000000_0.safetensors": [1.0, 0.0]}, ["1000000000_0.safetensors", "length 2"]),
    }
    for i, (data, needles) in enumerate(cases.values()):
        (folder / "conditions.json").write_text(json.dumps(data))
        result = rpgen("train", folder, "--out", tmp_path / f"r{i}", *set_args(TINY))
        one_line_error(result, "conditions.json", *needles)
        assert not (tmp_path / f"r{i}").exists()


def test_collect_digits_tasks_cli_errors(tmp_path):
    one_line_error(rpgen("collect", "digits-tasks", "--out", tmp_path / "z", "--num", 0), "at least 1")
