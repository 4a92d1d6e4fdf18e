"""A finished run loaded for sampling (rpgen.generation.loaded): any method, refusals with the way on."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY
from rpgen.config import Config, apply_overrides
from rpgen.errors import RpgenError
from rpgen.generation import load_run
from rpgen.training import train

PDIFF = ["model.method=pdiff", "pdiff.channels=[4, 8]", "pdiff.denoiser_channels=[1, 4, 1]", "pdiff.ae_steps=3",
         "pdiff.ddpm_steps=3", "train.log_every=1", "train.warmup_steps=1", "sample.steps=2"]


@pytest.fixture(scope="module")
def runs(digits_zoo, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    train(digits_zoo, root / "rpg", apply_overrides(Config(), TINY), progress=False)
    train(digits_zoo, root / "unfinished", apply_overrides(Config(), TINY), progress=False, stop_after=6)
    train(digits_zoo, root / "pdiff", apply_overrides(Config(), PDIFF), progress=False)
    return root


def test_a_started_run_records_its_checkpoints_and_layout(runs, digits_zoo):
    info = json.loads((runs / "rpg" / "run.json").read_text())
    assert info["checkpoint_files"] == sorted(p.name for p in digits_zoo.glob("*.safetensors"))
    assert info["num_checkpoints"] == 5 and info["rpgen_format"] == 1
    run = load_run(runs / "rpg")
    assert run.num_states == 5 and run.method.name == "rpg" and not run.model.training
    assert run.layout.num_params == info["generated_params"]


def test_load_run_loads_every_method_and_samples(runs):
    for name in ("rpg", "pdiff"):
        run = load_run(runs / name)
        (model,) = run.sample(1, seed=0)
        assert model.keys() == {t.name for t in run.layout.tensors}
        assert all(torch.isfinite(v.float()).all() for v in model.values())
    with pytest.raises(RpgenError, match="takes no --state"):
        load_run(runs / "pdiff").sample(1, states=[0])


def test_an_unfinished_run_is_refused_with_the_way_on(runs, tmp_path):
    with pytest.raises(RpgenError, match="training has not finished.*--resume"):
        load_run(runs / "unfinished")
    with pytest.raises(RpgenError, match="not an rpgen run directory"):
        load_run(tmp_path)
