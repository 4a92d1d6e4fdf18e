"""The baselines behind ``model.method``: p-diff (autoencoder + latent DDPM) and the MSE head.

Tiny real runs on the digits zoo through the CLI: same commands, same generated files as RPG.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import rpgen, set_args
from rpgen.config import Config, PDiffConfig, apply_overrides
from rpgen.errors import RpgenError
from rpgen.pdiff import build_models

PDIFF = ["model.method=pdiff", "pdiff.channels=[4, 8]", "pdiff.denoiser_channels=[1, 4, 1]", "pdiff.ae_steps=4",
         "pdiff.ddpm_steps=3", "train.log_every=2", "train.warmup_steps=1", "sample.steps=3"]
MSE = ["model.method=mse", "model.backbone=lstm", "model.d_model=16", "model.num_layers=1", "data.token_size=32",
       "train.steps=4", "train.batch_size=2", "train.warmup_steps=1", "train.log_every=2"]


def train_and_generate(zoo, tmp_path, overrides, *, num=3, seed=0, out="gen"):
    run, gen = tmp_path / "run", tmp_path / out
    if not run.exists():
        result = rpgen("train", zoo, "--out", run, "--no-progress", *set_args(overrides))
        assert result.exit_code == 0, result.output
    result = rpgen("generate", run, "--num", num, "--out", gen, "--seed", seed, "--no-progress")
    assert result.exit_code == 0, result.output
    return run, [load_file(gen / f"{i:04d}.safetensors") for i in range(num)]


def test_method_is_validated():
    assert Config().model.method == "rpg"
    assert apply_overrides(Config(), ["model.method=pdiff"]).model.method == "pdiff"
    with pytest.raises(RpgenError, match="model.method = 'gan' is not one of"):
        apply_overrides(Config(), ["model.method=gan"])
    with pytest.raises(RpgenError, match="pdiff.latent_noise"):
        apply_overrides(Config(), ["pdiff.latent_noise=-1"])
    with pytest.raises(RpgenError, match="pdiff.denoiser_channels"):
        PDiffConfig(denoiser_channels=(1, 4, 2))


def test_autoencoder_shapes_for_any_length():
    for num_params in (1, 7, 100, 1001):
        ae, denoiser = build_models(PDiffConfig(channels=(4, 8), denoiser_channels=(1, 4, 1)), num_params=num_params)
        x = torch.randn(2, num_params)
        z = ae.encode(x)  # (B, Z, M)
        assert z.shape == (2, 4, ae.latent_length) and ae(x).shape == (2, num_params)
        assert denoiser(z, torch.zeros(2, dtype=torch.long)).shape == z.shape


def test_pdiff_trains_and_generates_loadable_models(digits_zoo, tmp_path):
    run, models = train_and_generate(digits_zoo, tmp_path, PDIFF)
    assert (run / "pdiff.safetensors").is_file() and not (run / "generator.safetensors").exists()
    stages = [line for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert '"autoencoder"' in stages[0] and '"ddpm"' in stages[-1]
    reference = load_file(min(digits_zoo.glob("*.safetensors")))
    for sd in models:
        assert {k: (v.shape, v.dtype) for k, v in sd.items()} == {k: (v.shape, v.dtype) for k, v in reference.items()}
        assert all(torch.isfinite(v.float()).all() for v in sd.values())
    assert not torch.equal(models[0]["fc.weight"], models[1]["fc.weight"])
    _, again = train_and_generate(digits_zoo, tmp_path, PDIFF, out="again")  # same seed, same models
    assert all(torch.equal(a[k], b[k]) for a, b in zip(models, again) for k in a)
    result = rpgen("train", digits_zoo, "--out", run, "--resume", "--no-progress")
    assert result.exit_code == 1 and "resume" in result.output


def test_mse_head_generates_one_model_per_state(digits_zoo, tmp_path):
    run, _ = train_and_generate(digits_zoo, tmp_path, MSE)
    config = (run / "config.toml").read_text()
    assert 'method = "mse"' in config
    assert not any("denoiser.layers" in k for k in load_file(run / "generator.safetensors"))
    gen = tmp_path / "states"
    assert rpgen("generate", run, "--num", 2, "--out", gen, "--state", 1, "--state", 1, "--no-progress").exit_code == 0
    a, b = load_file(gen / "0000.safetensors"), load_file(gen / "0001.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # no sampler: a state gives one model
