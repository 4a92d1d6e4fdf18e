"""Which training run each checkpoint comes from: runs.json, rNN_ prefixes, or the distance estimate."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import check_one_line_error, rpgen, set_args, tiny
from rpgen.data.checkpoint_set import CheckpointSet
from rpgen.errors import RpgenError
from rpgen.generation import load_run


def lineage_of(folder):
    """The lineage of a folder, read as training reads it."""
    checkpoints = CheckpointSet.open(folder)
    layout = checkpoints.layout(16)
    return checkpoints.lineage(layout), layout


def test_runs_from_file_prefixes(two_run_zoo):
    lineage, _ = lineage_of(two_run_zoo[0])
    assert lineage.index == (0, 0, 1, 1) and lineage.source.startswith("file names")


def test_runs_estimated_from_distances(two_run_zoo, digits_zoo):
    lineage, _ = lineage_of(two_run_zoo[1])
    assert lineage.index == (0, 0, 1, 1) and lineage.source.startswith("estimated")
    one, _ = lineage_of(digits_zoo)  # five epochs of one run
    assert one.num_runs == 1


def test_runs_json_wins_and_is_checked(two_run_zoo, tmp_path):
    folder = tmp_path / "zoo"
    shutil.copytree(two_run_zoo[1], folder)
    (folder / "runs.json").write_text(json.dumps({"x": ["a.safetensors", "c.safetensors"],
                                                  "y": ["b.safetensors", "d.safetensors"]}))
    lineage, _ = lineage_of(folder)
    assert lineage.index == (0, 1, 0, 1) and lineage.source == "runs.json"
    for content, needle in (({"x": ["a.safetensors", "b.safetensors", "c.safetensors"]},
                             "'d.safetensors' is in no run"),
                            ({"x": ["a.safetensors", "zz.safetensors"]}, "'zz.safetensors'"),
                            ({"x": ["a.safetensors"], "y": ["a.safetensors", "b.safetensors"]}, "listed in runs"),
                            ({"x": "a.safetensors"}, "non-empty list")):
        (folder / "runs.json").write_text(json.dumps(content))
        with pytest.raises(RpgenError, match="runs.json") as e:
            lineage_of(folder)
        assert needle in str(e.value) and "\n" not in str(e.value)


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
