"""A conditional run that also takes a permutation state: the multimodal digits-tasks zoo (every task
trained from several initialisations of its conv block and head, files ``rMM_CODE_K``) through the
CLI and the API."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import TASKS_ZOO_CODES, rpgen, set_args, tiny
from conftest import check_one_line_error as one_line_error
from rpgen.config import Config, apply_overrides
from rpgen.models.generator import PrototypeNet
from rpgen.generation import load_run
from rpgen.generation.selection import draw_states, requested
from rpgen.zoo import digits_tasks as zoo

TINY = tiny("train.batch_size=4")
CODE = "0110000010"  # held out


@pytest.fixture(scope="module")
def modes_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("modes") / "zoo"
    zoo.collect_digits_tasks(out, num_checkpoints=2, codes=TASKS_ZOO_CODES, modes=2, progress=False)
    return out


@pytest.fixture(scope="module")
def modes_run(modes_zoo, tmp_path_factory):
    run = tmp_path_factory.mktemp("mrun") / "run"
    result = rpgen("train", modes_zoo / "train", "--out", run, "--no-progress", *set_args(TINY))
    assert result.exit_code == 0, result.output
    return run


def test_modes_differ_by_initialisation_only(modes_zoo):
    a = load_file(modes_zoo / "train" / "r00_1000000000_0.safetensors")
    b = load_file(modes_zoo / "train" / "r01_1000000000_0.safetensors")
    assert a.keys() == b.keys() and not torch.equal(a["conv.weight"], b["conv.weight"])
    zoo.TaskBlock().load_state_dict(a, strict=True)  # a multimodal zoo trains the last conv block per task
    evaluate = zoo.make_evaluator("1000000000", zoo_dir=modes_zoo)
    assert evaluate(a)["accuracy"] > 95 and evaluate(b)["accuracy"] > 95  # is digit 0: an easy task
    manifest = zoo.load_manifest(modes_zoo)
    assert manifest["modes"] == 2 and len(manifest["tasks"]["1000000000"]["accuracy"]) == 4  # 2 modes x 2
    conditions = json.loads((modes_zoo / "train" / "conditions.json").read_text())
    assert conditions["r01_1000000000_1.safetensors"] == zoo.code_bits("1000000000")


def test_single_mode_zoo_keeps_its_files(tasks_zoo):
    assert (tasks_zoo / "train" / "1000000000_0.safetensors").is_file()
    assert "modes" not in zoo.load_manifest(tasks_zoo)


def test_a_mode_is_a_state_beside_the_condition(modes_run):
    info = json.loads((modes_run / "run.json").read_text())
    assert info["num_states"] == 2 and info["sizing"]["runs"] == 2
    assert info["sizing"]["runs_from"] == "file names rNN_"
    keys = load_file(modes_run / "generator.safetensors")
    assert any(k.startswith("condition_encoder") for k in keys) and "permutation_state.weight" in keys
    assert load_run(modes_run).states_beside_condition


def test_generate_with_a_condition_and_states(modes_run, tmp_path):
    out = tmp_path / "gen"
    result = rpgen("generate", modes_run, "--num", 2, "--out", out, "--condition", CODE,
                   "--state", 0, "--state", 1, "--no-progress")
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.safetensors"))
    for f, state in zip(files, (0, 1)):
        with safe_open(str(f), framework="pt") as opened:
            meta = opened.metadata()
        assert json.loads(meta["condition"]) == zoo.code_bits(CODE) and meta["permutation_state"] == str(state)
    generation = json.loads((out / "generation.json").read_text())
    assert generation["permutation_states"] == [0, 1] and generation["conditions"] == [zoo.code_bits(CODE)] * 2
    a, b = (load_file(f) for f in files)
    assert not torch.equal(a["conv.weight"], b["conv.weight"])
    run = load_run(modes_run)  # the API makes the same models, and draws states when none are given
    same = run.sample(2, seed=0, conditions=[zoo.code_bits(CODE)], states=[0, 1])
    assert all(torch.equal(same[0][k], a[k]) for k in a)
    drawn = requested(run, num=3, conditions=[zoo.code_bits(CODE)])
    assert all(s is None for _, s in drawn)
    assert {s for _, s in draw_states(run, drawn, rng=torch.Generator().manual_seed(0))} <= {0, 1}


def test_a_conditional_run_samples_colder_by_default(modes_run, tmp_path):
    """sample.temperature "auto" is written as 0.25 for a conditional run; generate uses it unless told."""
    run = load_run(modes_run)
    assert run.config.sample.temperature == 0.25
    assert "sample.temperature = 0.25 for a conditional run" in json.loads((modes_run / "run.json").read_text())[
        "sizing"]["chosen"]
    assert run.sampling(None, None, None)[2] == 0.25 and run.sampling(None, None, 1.0)[2] == 1.0
    default = run.sample(2, seed=3, conditions=[zoo.code_bits(CODE)], states=[0, 0])
    cold = run.sample(2, seed=3, conditions=[zoo.code_bits(CODE)], states=[0, 0], temperature=0.25)
    warm = run.sample(2, seed=3, conditions=[zoo.code_bits(CODE)], states=[0, 0], temperature=1.0)
    assert all(torch.equal(default[i][k], cold[i][k]) for i in range(2) for k in cold[i])
    assert not torch.equal(default[0]["conv.weight"], warm[0]["conv.weight"])
    edited = dataclasses.replace(run, config=run.config.replace("sample", temperature="auto"))  # config.toml edited
    assert edited.sampling(None, None, None)[2] == 0.25


def test_condition_only_ablation(modes_zoo, tmp_path):
    run = tmp_path / "run"
    result = rpgen("train", modes_zoo / "train", "--out", run, "--no-progress",
                   *set_args(tiny("train.batch_size=4", "data.states=none", "train.steps=2")))
    assert result.exit_code == 0, result.output
    assert "permutation_state.weight" not in load_file(run / "generator.safetensors")
    one_line_error(rpgen("generate", run, "--num", 1, "--out", tmp_path / "g", "--state", 0, "--condition", CODE),
                   "--state")


def test_a_state_per_checkpoint_is_refused_for_conditions(modes_zoo, tmp_path):
    run = tmp_path / "run"
    one_line_error(rpgen("train", modes_zoo / "train", "--out", run, *set_args(tiny("data.states=checkpoint"))),
                   "data.states", "conditional")
    assert not run.exists()


def test_a_conditional_zoo_without_declared_runs_is_one_run(tasks_zoo, tmp_path):
    run = tmp_path / "run"
    result = rpgen("train", tasks_zoo / "train", "--out", run, "--no-progress",
                   *set_args(tiny("train.batch_size=4", "train.steps=2")))
    assert result.exit_code == 0, result.output
    info = json.loads((run / "run.json").read_text())
    assert info["sizing"]["runs"] == 1 and info["sizing"]["runs_from"].startswith("not declared")
    assert "permutation_state.weight" not in load_file(run / "generator.safetensors")


def test_prototypes_follow_both_condition_and_state():
    cfg = apply_overrides(Config(), ["model.backbone=gmlp", "model.d_model=16"]).model
    positions = torch.stack([torch.zeros(5, dtype=torch.long), torch.arange(5)], dim=1)  # (tensor, token)
    net = PrototypeNet(cfg, positions=positions, num_states=3, token_size=4, cond_dim=2, with_state=True)
    with torch.no_grad():
        net.permutation_state.weight.normal_()
        base = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0]])  # condition (1, 0), state 0
        other_state = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0]])
        other_condition = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0]])
        p = net.prototypes(torch.cat([base, other_state, other_condition]))  # (3, 5, 16)
    assert p.shape == (3, 5, 16)
    assert not torch.allclose(p[0], p[1]) and not torch.allclose(p[0], p[2])
