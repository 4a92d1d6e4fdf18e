"""The baselines behind ``model.method``: p-diff (autoencoder + latent DDPM) and the MSE head.

Tiny real runs on the digits zoo through the CLI: same commands, same generated files as RPG.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import rpgen, train_and_generate
from rpgen.config import Config, PDiffConfig, apply_overrides
from rpgen.errors import RpgenError
from rpgen.models.autoencoder import PDiffModel

PDIFF = ["model.method=pdiff", "pdiff.channels=[4, 8]", "pdiff.denoiser_channels=[1, 4, 1]", "pdiff.ae_steps=4",
         "pdiff.ddpm_steps=3", "train.log_every=2", "train.warmup_steps=1", "sample.steps=3"]


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
        model = PDiffModel(PDiffConfig(channels=(4, 8), denoiser_channels=(1, 4, 1)), num_params=num_params)
        ae, denoiser = model.ae, model.denoiser
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
