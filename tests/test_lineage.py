"""Which training run each checkpoint comes from: runs.json, rNN_ prefixes, or the distance estimate."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import check_one_line_error, rpgen, set_args, tiny
from rpgen.formats.checkpoints import open_checkpoints
from rpgen.config import Config
from rpgen.errors import RpgenError
from rpgen.data.lineage import Runs, find_runs
from rpgen.run_dir import load_run
from rpgen.training.resolve import (CONDITIONAL_TEMPERATURE, MAX_STEPS, auto_lr, auto_steps, auto_width, distinct_pairs,
                          models_per_run, resolve_sizing, steps_for_pairs)
from rpgen.data.tokenizer import fit_layout


def runs_of(folder):
    checkpoints = open_checkpoints(folder)
    layout = fit_layout(checkpoints, token_size=16)
    return find_runs(folder, [c.path.name for c in checkpoints], checkpoints, layout), layout


def test_runs_from_file_prefixes(two_run_zoo):
    runs, _ = runs_of(two_run_zoo[0])
    assert runs.index == (0, 0, 1, 1) and runs.source.startswith("file names")


def test_runs_estimated_from_distances(two_run_zoo, digits_zoo):
    runs, _ = runs_of(two_run_zoo[1])
    assert runs.index == (0, 0, 1, 1) and runs.source.startswith("estimated")
    one, _ = runs_of(digits_zoo)  # five epochs of one run
    assert one.num_runs == 1


def test_runs_json_wins_and_is_checked(two_run_zoo, tmp_path):
    folder = tmp_path / "zoo"
    shutil.copytree(two_run_zoo[1], folder)
    (folder / "runs.json").write_text(json.dumps({"x": ["a.safetensors", "c.safetensors"],
                                                  "y": ["b.safetensors", "d.safetensors"]}))
    runs, _ = runs_of(folder)
    assert runs.index == (0, 1, 0, 1) and runs.source == "runs.json"
    for content, needle in (({"x": ["a.safetensors", "b.safetensors", "c.safetensors"]}, "'d.safetensors' is in no run"),
                            ({"x": ["a.safetensors", "zz.safetensors"]}, "'zz.safetensors'"),
                            ({"x": ["a.safetensors"], "y": ["a.safetensors", "b.safetensors"]}, "listed in runs"),
                            ({"x": "a.safetensors"}, "non-empty list")):
        (folder / "runs.json").write_text(json.dumps(content))
        with pytest.raises(RpgenError, match="runs.json") as e:
            runs_of(folder)
        assert needle in str(e.value) and "\n" not in str(e.value)


def test_auto_width_follows_distinct_values():
    assert auto_width(6_386) == 64  # one run of the digits CNN
    assert auto_width(63_860) == 128  # ten runs
    assert auto_width(319_300) == 256  # fifty runs
    assert auto_width(10**9) == 256  # clamped


def test_auto_steps_grow_with_the_runs():
    assert auto_steps(1) == 2000  # the quickstart preset
    assert [auto_steps(r) for r in (2, 10, 20, 50, 100)] == [3000, 3000, 4000, 6000, 9000]
    assert auto_steps(10_000) == 12_000  # clamped


def test_auto_lr_is_high_only_for_one_run_at_the_base_width():
    assert auto_lr(1, 64) == 2e-2  # the quickstart preset
    assert auto_lr(1, 256) == 3e-3  # one run of a large model (DoRA rank 64): 2e-2 spikes there
    assert auto_lr(2, 64) == auto_lr(50, 256) == 3e-3  # several runs: 2e-2 stalls at any width


def test_sizing_fills_only_auto_settings(two_run_zoo):
    runs, layout = runs_of(two_run_zoo[0])
    config, record = resolve_sizing(Config(), layout, runs)
    assert (config.model.d_model, config.train.lr, config.train.steps) == (64, 3e-3, 3000)
    assert config.sample.temperature == 1.0  # unconditional
    assert record["runs"] == 2 and len(record["chosen"]) == 4
    fixed = Config().replace("model", d_model=32).replace("train", lr=1e-3, steps=7).replace("sample", temperature=0.7)
    config, record = resolve_sizing(fixed, layout, runs)
    assert (config.model.d_model, config.train.lr, config.train.steps) == (32, 1e-3, 7) and record["chosen"] == []
    assert config.sample.temperature == 0.7


def test_a_conditional_zoo_is_sized_by_its_models(two_run_zoo):
    """A condition multiplies the models a run stands for, up to condition_dim + 1 of them."""
    bits = torch.tensor([[float(b) for b in format(n, "04b")] for n in range(16)])  # (16, 4): 16 distinct
    assert models_per_run(None) == 1
    assert models_per_run(bits[:3].repeat(2, 1)) == 3  # distinct conditions only
    assert models_per_run(bits) == 5  # a smooth map of 4 numbers: 5 points pin it down
    runs, layout = runs_of(two_run_zoo[0])  # 4 checkpoints of 2 runs
    plain, _ = resolve_sizing(Config(), layout, runs)
    conditions = bits[:4]  # (4, 4), one per checkpoint: 4 distinct
    config, record = resolve_sizing(Config(), layout, runs, conditions)
    assert record["models_per_run"] == 4 and record["distinct_values"] == 2 * 4 * layout.num_params
    assert config.model.d_model == auto_width(8 * layout.num_params) and config.train.steps == auto_steps(8)
    assert config.model.d_model >= plain.model.d_model and "4 conditions" in record["chosen"][0]
    assert config.sample.temperature == CONDITIONAL_TEMPERATURE < plain.sample.temperature == 1.0
    assert "sample.temperature = 0.25 for a conditional run" in record["chosen"]


def test_a_conditional_run_draws_every_condition_and_run_pair(two_run_zoo):
    """Steps let every distinct (condition, run) pair be drawn DRAWS_PER_PAIR times when the capped
    count of models would give fewer."""
    assert steps_for_pairs(992, 8) == 3000  # the single-mode digits-tasks zoo: as auto_steps gives it
    assert steps_for_pairs(2976, 8) == 9000  # three modes of it
    assert steps_for_pairs(2976, 32) == 3000 and steps_for_pairs(10**6, 8) == MAX_STEPS
    runs, layout = runs_of(two_run_zoo[0])  # 4 checkpoints, runs 0 0 1 1
    same = torch.zeros(4, 3)
    assert distinct_pairs(same, runs) == 2  # one condition, two runs
    assert distinct_pairs(torch.eye(4), runs) == 4
    assert distinct_pairs(torch.tensor([[0.0], [1.0], [0.0], [1.0]]), runs) == 4  # the same two conditions per run
    few, record = resolve_sizing(Config(), layout, runs, torch.eye(4))
    assert record["condition_run_pairs"] == 4 and few.train.steps == auto_steps(8)  # 4 pairs: the floor is lower
    codes = torch.tensor([[float(b) for b in format(n, "010b")] for n in range(1, 993)])  # (992, 10)
    one_run = Runs((0,) * 992, "test")
    config, record = resolve_sizing(Config(), layout, one_run, codes)
    assert config.train.steps == 3000 == auto_steps(11) and "11 distinct model(s)" in record["chosen"][2]
    three = Runs(tuple(r for r in range(3) for _ in range(992)), "test")  # 3 runs of the 992 codes
    config, record = resolve_sizing(Config(), layout, three, codes.repeat(3, 1))
    assert record["condition_run_pairs"] == 2976 and auto_steps(33) == 5000 < config.train.steps == 9000
    assert "2,976 distinct (condition, run) pairs, each drawn about 24 times in batches of 8" in record["chosen"][2]
    assert resolve_sizing(Config().replace("train", batch_size=32), layout, three,
                          codes.repeat(3, 1))[0].train.steps == 5000  # 24 draws fit in auto_steps' 5,000


def test_one_state_per_checkpoint_on_request(two_run_zoo, tmp_path):
    result = rpgen("train", two_run_zoo[1], "--out", tmp_path / "run", "--no-progress",
                   *set_args(tiny("data.states=checkpoint", "train.steps=2")))
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["num_states"] == 4 and info["run_of_checkpoint"] == [0, 0, 1, 1]
    assert info["sizing"]["runs_from"].startswith("estimated")


def test_per_run_states_train_and_mix(two_run_zoo, tmp_path):
    run, gen = tmp_path / "run", tmp_path / "gen"
    result = rpgen("train", two_run_zoo[0], "--out", run, "--no-progress",
                   *set_args(tiny("train.steps=4")))  # data.states = auto: one per run, the zoo has two
    assert result.exit_code == 0, result.output
    info = json.loads((run / "run.json").read_text())
    assert info["num_states"] == 2 and info["state_of_checkpoint"] == [0, 0, 1, 1]
    assert info["sizing"]["runs"] == 2 and info["sizing"]["runs_from"].startswith("file names")
    result = rpgen("generate", run, "--num", 3, "--out", gen, "--mix", 0.5, "--no-progress")
    assert result.exit_code == 0, result.output
    states = json.loads((gen / "generation.json").read_text())["permutation_states"]
    assert all(sorted(s.values()) == [0.5, 0.5] and set(s) == {"0", "1"} for s in states)
    in_memory = load_run(run).sample(3, mix=0.5, seed=0)  # the same models as the files
    for i, model in enumerate(in_memory):
        written = load_file(gen / f"{i:04d}.safetensors")
        assert all(torch.equal(model[k], written[k]) for k in written)
    plain = load_run(run).sample(1, states=[0], seed=0)[0]
    assert any(not torch.equal(plain[k], in_memory[0][k]) for k in plain if plain[k].is_floating_point())
    check_one_line_error(rpgen("generate", run, "--num", 1, "--out", tmp_path / "g2", "--mix", 1.5), "--mix 1.5")
    check_one_line_error(rpgen("generate", run, "--num", 1, "--out", tmp_path / "g3", "--mix", 0.5, "--state", 0),
                         "--mix")


def test_the_defaults_on_a_one_run_zoo_are_the_quickstart_preset(digits_zoo):
    """Sizing from the zoo must not make small zoos slower: on one run it picks what the quickstart uses."""
    from rpgen.config import preset

    runs, layout = runs_of(digits_zoo)
    config, _ = resolve_sizing(Config(), layout, runs)
    quick, _ = resolve_sizing(preset("quickstart"), layout, runs)  # as a quickstart run resolves it
    for section in ("data", "model", "diffusion", "train", "sample"):
        assert getattr(config, section) == getattr(quick, section), section
