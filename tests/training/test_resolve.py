"""The one resolution pass: the "auto" settings sized from the zoo, filled from the machine, and
the record run.json keeps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rpgen.config import Config
from rpgen.data.checkpoint_set import CheckpointSet
from rpgen.data.lineage import Lineage
from rpgen.errors import RpgenError
from rpgen.methods import get_method
from rpgen.methods.diffusion import CONDITIONAL_TEMPERATURE
from rpgen.training.resolve import (
    FILLED_ON_START,
    MAX_STEPS,
    RULES,
    Facts,
    auto_lr,
    auto_steps,
    auto_width,
    distinct_pairs,
    models_per_run,
    resolve,
    steps_for_pairs,
)


def lineage_of(folder):
    checkpoints = CheckpointSet.open(folder)
    layout = checkpoints.layout(16)
    return checkpoints.lineage(layout), layout


def resolved(config, layout, lineage, conditions=None, *, device="cpu", resume=False):
    """The resolution pass on a zoo of ``layout`` and ``lineage``, as ``rpgen train`` runs it."""
    facts = Facts(folder=Path("zoo"), num_params=layout.num_params, lineage=lineage, conditions=conditions,
                  method=get_method(config.model.method), device=torch.device(device), resume=resume)
    return resolve(config, facts)


def test_auto_width_follows_distinct_values():
    assert auto_width(6_386) == 64  # one run of the digits CNN
    assert auto_width(63_860) == 128  # ten training runs
    assert auto_width(319_300) == 256  # fifty training runs
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
    lineage, layout = lineage_of(two_run_zoo[0])
    config, record = resolved(Config(), layout, lineage)
    assert (config.model.d_model, config.train.lr, config.train.steps) == (64, 3e-3, 3000)
    assert config.sample.temperature == 1.0  # unconditional
    assert record["runs"] == 2 and len(record["chosen"]) == 4
    fixed = Config().replace("model", d_model=32).replace("train", lr=1e-3, steps=7).replace("sample", temperature=0.7)
    config, record = resolved(fixed, layout, lineage)
    assert (config.model.d_model, config.train.lr, config.train.steps) == (32, 1e-3, 7) and record["chosen"] == []
    assert config.sample.temperature == 0.7


def test_a_conditional_zoo_is_sized_by_its_models(two_run_zoo):
    """A condition multiplies the models a run stands for, up to condition_dim + 1 of them."""
    bits = torch.tensor([[float(b) for b in format(n, "04b")] for n in range(16)])  # (16, 4): 16 distinct
    assert models_per_run(None) == 1
    assert models_per_run(bits[:3].repeat(2, 1)) == 3  # distinct conditions only
    assert models_per_run(bits) == 5  # a smooth map of 4 numbers: 5 points pin it down
    lineage, layout = lineage_of(two_run_zoo[0])  # 4 checkpoints of 2 training runs
    plain, _ = resolved(Config(), layout, lineage)
    conditions = bits[:4]  # (4, 4), one per checkpoint: 4 distinct
    config, record = resolved(Config(), layout, lineage, conditions)
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
    lineage, layout = lineage_of(two_run_zoo[0])  # 4 checkpoints, training runs 0 0 1 1
    same = torch.zeros(4, 3)
    assert distinct_pairs(same, lineage) == 2  # one condition, two training runs
    assert distinct_pairs(torch.eye(4), lineage) == 4
    assert distinct_pairs(torch.tensor([[0.0], [1.0], [0.0], [1.0]]), lineage) == 4  # the same two conditions per run
    few, record = resolved(Config(), layout, lineage, torch.eye(4))
    assert record["condition_run_pairs"] == 4 and few.train.steps == auto_steps(8)  # 4 pairs: the floor is lower
    codes = torch.tensor([[float(b) for b in format(n, "010b")] for n in range(1, 993)])  # (992, 10)
    one_run = Lineage((0,) * 992, "test")
    config, record = resolved(Config(), layout, one_run, codes)
    assert config.train.steps == 3000 == auto_steps(11) and "11 distinct model(s)" in record["chosen"][2]
    three = Lineage(tuple(r for r in range(3) for _ in range(992)), "test")  # 3 training runs of the 992 codes
    config, record = resolved(Config(), layout, three, codes.repeat(3, 1))
    assert record["condition_run_pairs"] == 2976 and auto_steps(33) == 5000 < config.train.steps == 9000
    assert "2,976 distinct (condition, run) pairs, each drawn about 24 times in batches of 8" in record["chosen"][2]
    assert resolved(Config().replace("train", batch_size=32), layout, three,
                          codes.repeat(3, 1))[0].train.steps == 5000  # 24 draws fit in auto_steps' 5,000


def test_the_defaults_on_a_one_run_zoo_are_the_quickstart_preset(digits_zoo):
    """Sizing from the zoo must not make small zoos slower: on one run it picks what the quickstart uses."""
    from rpgen.config import preset

    lineage, layout = lineage_of(digits_zoo)
    config, _ = resolved(Config(), layout, lineage)
    quick, _ = resolved(preset("quickstart"), layout, lineage)  # as a quickstart run resolves it
    # but for the backbone and the schedule, measured on the quickstart zoo alone (time_to_quality.md)
    assert (quick.model.backbone, quick.train.steps) == ("mamba2", 1000)
    quick = quick.replace("model", backbone=config.model.backbone).replace("train", steps=config.train.steps)
    for section in ("data", "model", "diffusion", "train", "sample"):
        assert getattr(config, section) == getattr(quick, section), section


def test_filled_on_start_is_every_setting_the_pass_fills():
    assert FILLED_ON_START == {(r.section, r.key) for r in RULES}
    assert {("data", "checkpoint_dir"), ("data", "states"), ("model", "mamba_impl"), ("model", "d_state"),
            ("model", "d_model"), ("sample", "temperature")} <= FILLED_ON_START
    for section, key in FILLED_ON_START:  # every rule names a real setting
        assert hasattr(getattr(Config(), section), key), (section, key)


def test_states_devices_and_precision_are_filled_too(two_run_zoo, digits_zoo):
    lineage, layout = lineage_of(two_run_zoo[0])
    config, _ = resolved(Config(), layout, lineage)
    assert config.data.states == "run" and config.data.checkpoint_dir == str(Path("zoo").resolve())
    assert (config.model.mamba_impl, config.model.d_state, config.train.mixed_precision) == ("torch", 16, "no")
    one, one_layout = lineage_of(digits_zoo)
    assert resolved(Config(), one_layout, one)[0].data.states == "checkpoint"
    conditional, _ = resolved(Config(), one_layout, one, torch.eye(5))
    assert conditional.data.states == "none"  # the condition alone
    with pytest.raises(RpgenError, match="data.states = 'checkpoint' does not fit a conditional run"):
        resolved(Config().replace("data", states="checkpoint"), one_layout, one, torch.eye(5))
    with pytest.raises(RpgenError, match="mamba_impl = 'cuda' needs a CUDA device"):
        resolved(Config().replace("model", mamba_impl="cuda"), one_layout, one)
    pdiff = Config().replace("model", method="pdiff").replace("train", mixed_precision="bf16")
    assert resolved(pdiff, one_layout, one)[0].train.mixed_precision == "no"  # p-diff: full precision only
